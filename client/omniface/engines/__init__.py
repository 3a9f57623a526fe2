"""TensorRT engines for the GPU repository: profiles from the contract, FP16/FP32/INT8
(Q/DQ) engine builds, and the metadata file next to each engine.

Everything here imports without TensorRT; ``omniface.engines.build`` imports
``tensorrt`` only when it builds, and says where to run when it is missing (NVIDIA's
``tensorrt`` container of the NGC release that serves the engines; docs/deploy-gpu.md).

    omniface build-engines --out-dir /models            # in nvcr.io/nvidia/tensorrt:24.10-py3
    python build/build_engines.py --precision int8 --qdq-dir runs/quantized --out-dir /models
"""

from omniface.engines.metadata import EngineMetadata, GpuInfo, gpu_info, read_metadata, sha256_file, stale_reasons
from omniface.engines.precision import DEFAULT_PRECISION, PRECISIONS, QDQ_FILENAME, convert_to_fp16
from omniface.engines.profiles import ENGINE_MODELS, EngineProfile, InputProfile, engine_profile, engine_profiles

__all__ = [
    "DEFAULT_PRECISION", "ENGINE_MODELS", "PRECISIONS", "QDQ_FILENAME", "EngineMetadata", "EngineProfile",
    "GpuInfo", "InputProfile", "convert_to_fp16", "engine_profile", "engine_profiles", "gpu_info",
    "read_metadata", "sha256_file", "stale_reasons",
]
