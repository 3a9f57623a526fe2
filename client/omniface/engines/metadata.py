"""The metadata file written next to each engine, and what makes an engine stale.

A TensorRT plan runs only with the TensorRT version that built it, and is tuned for
one GPU model; it also silently keeps serving an old network when the ONNX changes.
So every ``model.plan`` gets a ``model.plan.json`` saying what built it and from what:

    {"model": "detector", "precision": "fp16", "strongly_typed": true,
     "tensorrt_version": "10.5.0", "gpu": {"name": "...", "compute_capability": "9.0", ...},
     "onnx": {"file": "model.onnx", "sha256": "..."}, "plan_sha256": "...",
     "profile": {"model": "detector", "inputs": [{"name": "image", "min": [...], ...}]},
     "contract_version": "1.0.0", "omniface_version": "0.1.0", "built_at": "...Z", ...}

``stale_reasons`` compares it with what a rebuild would use; an engine is rebuilt only
when that list is non-empty (or on ``--force``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omniface.engines.profiles import EngineProfile

METADATA_SUFFIX = ".json"
METADATA_FORMAT = 1


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata_path(plan_path: str | os.PathLike) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + METADATA_SUFFIX)


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built on (or runs on)."""

    name: str
    compute_capability: str
    driver_version: str = ""
    memory_mib: int = 0
    index: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _visible_index() -> int:
    """The physical index of CUDA device 0 when CUDA_VISIBLE_DEVICES names a number."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total
    --format=csv,noheader,nounits`` output."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        memory = int(float(parts[4])) if parts[4].replace(".", "", 1).isdigit() else 0
        gpus.append(GpuInfo(name=parts[1], compute_capability=parts[2], driver_version=parts[3],
                            memory_mib=memory, index=int(parts[0])))
    return gpus


def gpu_info() -> GpuInfo | None:
    """The GPU that CUDA device 0 is, from ``nvidia-smi`` (or torch when it has CUDA);
    None without a visible NVIDIA GPU."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index,name,compute_cap,driver_version,memory.total",
                 "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=20, check=False,
            )
        except (OSError, subprocess.SubprocessError):
            out = None
        if out is not None and out.returncode == 0:
            gpus = parse_nvidia_smi(out.stdout)
            wanted = _visible_index()
            for gpu in gpus:
                if gpu.index == wanted:
                    return gpu
            if gpus:
                return gpus[0]
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return GpuInfo(name=props.name, compute_capability=f"{props.major}.{props.minor}",
                   memory_mib=int(props.total_memory // (1 << 20)))


@dataclass(frozen=True)
class EngineMetadata:
    """What one engine was built with and from."""

    model: str
    precision: str
    strongly_typed: bool
    tensorrt_version: str
    gpu: Mapping[str, object]
    onnx_file: str
    onnx_sha256: str
    plan_sha256: str
    profile: EngineProfile
    contract_version: str
    omniface_version: str
    built_at: str
    build_seconds: float = 0.0
    workspace_bytes: int = 0
    builder_optimization_level: int = 3
    timing_cache: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": METADATA_FORMAT,
            "model": self.model,
            "precision": self.precision,
            "strongly_typed": self.strongly_typed,
            "tensorrt_version": self.tensorrt_version,
            "gpu": dict(self.gpu),
            "onnx": {"file": self.onnx_file, "sha256": self.onnx_sha256},
            "plan_sha256": self.plan_sha256,
            "profile": self.profile.to_dict(),
            "contract_version": self.contract_version,
            "omniface_version": self.omniface_version,
            "built_at": self.built_at,
            "build_seconds": round(float(self.build_seconds), 3),
            "workspace_bytes": int(self.workspace_bytes),
            "builder_optimization_level": int(self.builder_optimization_level),
            "timing_cache": self.timing_cache,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> EngineMetadata:
        if data.get("format") != METADATA_FORMAT:
            raise ValueError(f"engine metadata format {data.get('format')!r}, expected {METADATA_FORMAT}")
        return cls(
            model=data["model"], precision=data["precision"], strongly_typed=bool(data["strongly_typed"]),
            tensorrt_version=data["tensorrt_version"], gpu=dict(data["gpu"]),
            onnx_file=data["onnx"]["file"], onnx_sha256=data["onnx"]["sha256"], plan_sha256=data["plan_sha256"],
            profile=EngineProfile.from_dict(data["profile"]), contract_version=data["contract_version"],
            omniface_version=data["omniface_version"], built_at=data["built_at"],
            build_seconds=float(data.get("build_seconds", 0.0)), workspace_bytes=int(data.get("workspace_bytes", 0)),
            builder_optimization_level=int(data.get("builder_optimization_level", 3)),
            timing_cache=str(data.get("timing_cache", "")), extra=dict(data.get("extra", {})),
        )


def write_metadata(plan_path: str | os.PathLike, metadata: EngineMetadata) -> Path:
    """Write ``<plan>.json`` (sorted keys, trailing newline); returns its path."""
    path = metadata_path(plan_path)
    path.write_text(json.dumps(metadata.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_metadata(plan_path: str | os.PathLike) -> EngineMetadata | None:
    """The metadata next to ``plan_path``; None when missing or unreadable."""
    path = metadata_path(plan_path)
    try:
        return EngineMetadata.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stale_reasons(
    plan_path: str | os.PathLike,
    *,
    onnx_sha256: str,
    precision: str,
    profile: EngineProfile,
    tensorrt_version: str,
    gpu: GpuInfo | None,
    contract_version: str,
) -> list[str]:
    """Why the engine at ``plan_path`` must be (re)built; empty when it is up to date."""
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        return ["no engine yet"]
    meta = read_metadata(plan_path)
    if meta is None:
        return [f"no readable {metadata_path(plan_path).name} next to it"]
    reasons = []
    if meta.plan_sha256 != sha256_file(plan_path):
        reasons.append("the plan file changed since it was built")
    if meta.onnx_sha256 != onnx_sha256:
        reasons.append("the ONNX graph changed")
    if meta.precision != precision:
        reasons.append(f"precision {meta.precision} -> {precision}")
    if meta.profile != profile:
        reasons.append("the optimization profile changed")
    if meta.tensorrt_version != tensorrt_version:
        reasons.append(f"TensorRT {meta.tensorrt_version} -> {tensorrt_version} (plans are version-locked)")
    if gpu is not None and (meta.gpu.get("name"), meta.gpu.get("compute_capability")) != (gpu.name, gpu.compute_capability):
        reasons.append(f"GPU {meta.gpu.get('name')} (sm {meta.gpu.get('compute_capability')}) -> "
                       f"{gpu.name} (sm {gpu.compute_capability})")
    if meta.contract_version != contract_version:
        reasons.append(f"contract {meta.contract_version} -> {contract_version}")
    return reasons
