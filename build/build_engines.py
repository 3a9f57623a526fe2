"""Build the TensorRT engines of the GPU model repository from the exported ONNX graphs.

    python build/build_engines.py --out-dir /models                      # fp16 (default)
    python build/build_engines.py --precision int8 --qdq-dir runs/quantized --out-dir /models
    python build/build_engines.py --dry-run                               # profiles; no GPU needed

Run it inside nvcr.io/nvidia/tensorrt:24.10-py3 on the GPU model that will serve the
engines (they are tied to the TensorRT version and the GPU): see docs/deploy-gpu.md.
Same as ``omniface build-engines``.
"""

from __future__ import annotations

import sys

from omniface.engines.command import main

if __name__ == "__main__":
    sys.exit(main())
