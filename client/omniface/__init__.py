"""omniface: multi-task face analysis served on NVIDIA Triton.

The base install is the SDK: ``Client`` / ``AsyncClient`` send frames to a Triton server
running the omniface model repository and return typed, per-face results. Heavy parts
(torch, onnxruntime, the embedded server) live in extras and are imported lazily.
"""

__version__ = "0.1.0"
