"""GPU-only tests: each is marked ``gpu`` and skipped, with the reason, where there is no
NVIDIA GPU (or no TensorRT / CUDA-enabled torch / onnxruntime-gpu for the tests that need
them). On a GPU machine:

    python -m pytest tests/gpu -v -s      # -s prints the measured numbers

Numbers are also written to $OMNIFACE_GPU_RESULTS (default: runs/gpu-results.json) for
docs/performance.md.

``OMNIFACE_GPU_REHEARSAL=1`` runs the torch and serving tests on the CPU instead (device
``cpu``, FP32 serving, results in runs/gpu-rehearsal.json): GPU machines are lent for
minutes, so the script that uses them is rehearsed here first (build/run_gpu_check.sh
--rehearse). Rehearsal numbers are CPU numbers and are never reported as GPU ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REHEARSAL = os.environ.get("OMNIFACE_GPU_REHEARSAL") == "1"


@pytest.fixture(scope="session")
def gpu():
    from omniface.engines import gpu_info
    from omniface.engines.metadata import GpuInfo

    if REHEARSAL:
        return GpuInfo(name="rehearsal on the CPU (no GPU)", compute_capability="none")
    info = gpu_info()
    if info is None:
        pytest.skip("no NVIDIA GPU visible (nvidia-smi finds none, torch sees no CUDA): GPU tests run on a GPU machine")
    return info


@pytest.fixture(scope="session")
def torch_cuda(gpu):
    torch = pytest.importorskip("torch", reason="these GPU tests need torch with CUDA")
    if not torch.cuda.is_available() and not REHEARSAL:
        pytest.skip(f"torch {torch.__version__} has no CUDA (a CPU build): install a CUDA build of torch")
    return torch


@pytest.fixture(scope="session")
def device(torch_cuda) -> str:
    """Where the torch tests run: ``cuda``, or ``cpu`` in a rehearsal."""
    return "cpu" if REHEARSAL else "cuda"


def synchronize(torch) -> None:
    """Wait for queued GPU work (a no-op in a rehearsal)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@pytest.fixture(scope="session")
def tensorrt(gpu):
    from omniface.engines.build import tensorrt_problem

    problem = tensorrt_problem()
    if problem is not None:
        pytest.skip(problem)
    import tensorrt as trt

    return trt


@pytest.fixture(scope="session")
def ort_cuda(gpu):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider: pip install onnxruntime-gpu")
    return ort


@pytest.fixture(scope="session")
def results(gpu):
    """A dict the tests fill with measurements; written as JSON at the end."""
    data = {"gpu": gpu.to_dict(), "rehearsal": REHEARSAL}
    yield data
    default = ROOT / "runs" / ("gpu-rehearsal.json" if REHEARSAL else "gpu-results.json")
    path = Path(os.environ.get("OMNIFACE_GPU_RESULTS", default))
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**previous, **data}, indent=2, sort_keys=True) + "\n")
    print(f"\nGPU results written to {path}")
