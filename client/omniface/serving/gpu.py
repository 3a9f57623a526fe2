"""GPU helpers for the python-backend steps: DLPack in and out, face alignment with torch,
and ONNX Runtime on CUDA.

On the gpu target, postprocess runs with ``device: cuda``: the detector engine's outputs
reach it as GPU tensors (``FORCE_CPU_ONLY_INPUT_TENSORS`` off, DLPack), the crops are
warped on the GPU and handed to the attributes engine as a GPU tensor, with no host
round trip. Warping is where this pays: Pillow takes ~0.7 ms per face on one core, so a
64-face frame spends ~45 ms in alignment on the CPU; on the GPU it is one batched
``grid_sample``.

``align_faces_torch`` reproduces ``omniface.processing.align.align_faces`` (same
similarity fit, same pixel-centre convention, the same integer box-reduction before
strong downscales, Pillow's truncation to uint8); the two agree within one grey level,
nearly always exactly, which the tests check on CPU. Everything imports torch lazily: the CPU target never needs it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from omniface import contract
from omniface.errors import MissingDependency
from omniface.processing import align

_ANTIALIAS_BELOW = 0.5  # as omniface.processing.align


def require_torch(device: str = "cpu"):
    """``import torch``; with a CUDA ``device``, also check that torch sees a GPU."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependency(
            "the GPU steps need torch with CUDA in the server's Python: pip install torch "
            "(or render the repository with postprocess on the host: build-engines --cpu-postprocess)"
        ) from exc
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise MissingDependency(f"device {device!r} requested but torch {torch.__version__} sees no CUDA GPU")
    return torch


def device_name(device: str, device_id: int = 0) -> str:
    """``cuda`` -> ``cuda:<device_id>`` (the GPU Triton gave the instance); others as given."""
    return f"cuda:{int(device_id)}" if device == "cuda" else device


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a framework tensor (not a numpy array)."""
    return not isinstance(value, np.ndarray) and hasattr(value, "__dlpack__")


def to_numpy(value: Any) -> np.ndarray:
    """numpy array of a numpy array or a (GPU) torch tensor."""
    if isinstance(value, np.ndarray):
        return value
    return value.detach().cpu().numpy()


def from_dlpack(capsule_or_tensor: Any):
    """A torch tensor sharing the memory of a DLPack capsule (pb_utils' ``to_dlpack()``)."""
    torch = require_torch()
    return torch.utils.dlpack.from_dlpack(capsule_or_tensor)


def to_dlpack(tensor: Any):
    """A DLPack capsule of a torch tensor (for ``pb_utils.Tensor.from_dlpack``)."""
    torch = require_torch()
    return torch.utils.dlpack.to_dlpack(tensor.contiguous())


def pad_rows(tensor, rows: int):
    """Torch ``_pad_rows``: zero rows appended up to ``rows``."""
    if tensor.shape[0] >= rows:
        return tensor.contiguous()
    torch = require_torch()
    pad = torch.zeros((rows - tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor, pad]).contiguous()


def _factor(matrix: np.ndarray, width: int, height: int) -> int:
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    if 0 < scale < _ANTIALIAS_BELOW:
        return min(int(1.0 / scale), max(width, height, 2))
    return 1


def align_faces_torch(image, landmarks: np.ndarray, size: int = contract.CROP_SIZE, device: str | None = None):
    """``align.align_faces`` on torch: ``image`` uint8 HxWx3 (numpy or torch, any
    device), ``landmarks`` [N, 5, 2] in image px -> uint8 [N, size, size, 3] torch
    tensor on ``device`` (default: the image's)."""
    torch = require_torch()
    functional = torch.nn.functional
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if device is not None:
        image = image.to(device, non_blocking=True)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (contract.NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must be [N, {contract.NUM_LANDMARKS}, 2], got shape {landmarks.shape}")
    count = len(landmarks)
    crops = torch.zeros((count, size, size, 3), dtype=torch.uint8, device=image.device)
    if count == 0:
        return crops
    height, width = int(image.shape[0]), int(image.shape[1])
    template = align.ALIGNMENT_TEMPLATE * (size / contract.CROP_SIZE)
    groups: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, points in enumerate(landmarks):
        if not np.isfinite(points).all():
            continue
        matrix = align.similarity_transform(points, template)
        if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:, :2])) < 1e-12:
            continue
        groups.setdefault(_factor(matrix, width, height), []).append((i, matrix))
    if not groups:
        return crops
    source = image.permute(2, 0, 1).unsqueeze(0).to(torch.float32)  # 1x3xHxW
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), axis=-1).reshape(-1, 2)
    centres_h = np.concatenate([centres, np.ones((len(centres), 1))], axis=1)  # [S*S, 3]
    for factor, items in groups.items():
        level = source if factor == 1 else functional.avg_pool2d(source, factor, factor, ceil_mode=True)
        lh, lw = int(level.shape[2]), int(level.shape[3])
        lift = np.array([[factor, 0, 0], [0, factor, 0], [0, 0, 1]], dtype=np.float64)
        grids = []
        for _, matrix in items:
            full = np.vstack([matrix, [0.0, 0.0, 1.0]]) @ lift  # level px -> crop px
            inverse = np.linalg.inv(full)[:2]
            points = centres_h @ inverse.T  # crop pixel centres -> level coords (centre at +0.5)
            grids.append(np.stack([points[:, 0] / lw * 2 - 1, points[:, 1] / lh * 2 - 1], axis=-1))
        grid = torch.from_numpy(np.stack(grids).reshape(len(items), size, size, 2).astype(np.float32)).to(image.device)
        warped = functional.grid_sample(level.expand(len(items), -1, -1, -1), grid, mode="bilinear",
                                        padding_mode="zeros", align_corners=False)
        out = warped.floor_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        index = torch.as_tensor([i for i, _ in items], device=image.device)
        crops[index] = out
    return crops


def ort_cuda_session(path, device_id: int = 0, threads: int = 1):
    """An ONNX Runtime session on the CUDA provider (onnxruntime-gpu), CPU as fallback
    for ops CUDA lacks; raises ``MissingDependency`` when the provider is absent."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise MissingDependency(
            f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {ort.get_available_providers()}); "
            "pip install onnxruntime-gpu in the server's Python"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads)
    providers = [("CUDAExecutionProvider", {"device_id": int(device_id)}), "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)
