"""ONNX -> TensorRT engine, with the ``tensorrt`` Python API (10.x; nothing TensorRT 11
removed: strongly typed networks, no implicit-INT8 calibrators, no weak-typing flags).

``build_engine`` parses one graph into a strongly typed network, adds the contract's
optimization profile, reuses and updates a timing cache, reports progress, serializes
the plan, checks the engine's I/O against the contract and writes the metadata file.
``build_repository`` does it for every engine model and renders the GPU repository's
configs around them, skipping engines that are up to date.

``tensorrt`` is imported only inside these functions: without it (or without a GPU)
they raise ``MissingDependency`` / ``EngineBuildError`` saying where to run them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omniface import __version__, contract, repository
from omniface.engines import metadata as meta
from omniface.engines.precision import DEFAULT_PRECISION, PRECISIONS, convert_to_fp16, source_onnx
from omniface.engines.profiles import ENGINE_MODELS, EngineProfile, engine_profiles
from omniface.engines.progress import BuildProgress
from omniface.errors import ContractMismatch, MissingDependency, OmnifaceError

TENSORRT_MIN_MAJOR = 10
NGC_RELEASE = "24.10"
"""The NGC release whose tritonserver (2.51) matches the client and perf_analyzer pinned
by the project; its TensorRT builds the engines that server loads."""

NEEDS_TENSORRT = (
    "building TensorRT engines needs the `tensorrt` Python package (10.x) and an NVIDIA GPU, "
    f"and the plans only load in a server with the same TensorRT: build them inside "
    f"nvcr.io/nvidia/tensorrt:{NGC_RELEASE}-py3 (the TensorRT of nvcr.io/nvidia/tritonserver:{NGC_RELEASE}-py3) "
    "on the GPU model that will serve them; see docs/deploy-gpu.md"
)

TIMING_CACHE_NAME = ".omniface-timing.cache"
"""Default timing cache file, in the output repository's root (Triton ignores files there)."""


class EngineBuildError(OmnifaceError):
    """TensorRT could not parse, build or verify an engine; the message says why."""


def tensorrt_problem() -> str | None:
    """Why engines cannot be built here (no tensorrt, too old, no GPU); None when they can."""
    try:
        import tensorrt as trt
    except ImportError:
        return NEEDS_TENSORRT
    major = _major(getattr(trt, "__version__", "0"))
    if major < TENSORRT_MIN_MAJOR:
        return f"TensorRT {trt.__version__} is too old: omniface builds with the TensorRT 10 API. {NEEDS_TENSORRT}"
    if meta.gpu_info() is None:
        return f"no NVIDIA GPU is visible (nvidia-smi finds none): {NEEDS_TENSORRT}"
    return None


def _major(version: str) -> int:
    head = str(version).split(".")[0]
    return int(head) if head.isdigit() else 0


def load_tensorrt():
    """``import tensorrt`` (10.x or later) or raise, saying where engines are built."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependency(NEEDS_TENSORRT) from exc
    if _major(trt.__version__) < TENSORRT_MIN_MAJOR:
        raise EngineBuildError(f"TensorRT {trt.__version__} is too old. {NEEDS_TENSORRT}")
    return trt


def require_gpu() -> meta.GpuInfo:
    gpu = meta.gpu_info()
    if gpu is None:
        raise EngineBuildError(f"no NVIDIA GPU is visible: {NEEDS_TENSORRT}")
    return gpu


def _progress_monitor(trt, display: BuildProgress):
    """A ``trt.IProgressMonitor`` forwarding to ``display`` (the class is made lazily,
    since it must subclass TensorRT's binding)."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            display.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return display.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            display.phase_finish(phase_name)

    return _Monitor()


_TRT_DTYPES = {"UINT8": "uint8", "FP32": "float32", "FP16": "float16", "INT32": "int32", "INT64": "int64"}


def check_engine(trt, engine, spec: contract.ModelSpec, profile: EngineProfile) -> list[str]:
    """Differences between a deserialized engine's I/O (names, modes, dtypes, profile
    shapes) and the contract; empty when they agree."""
    problems = []
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if inputs != [t.name for t in spec.inputs]:
        problems.append(f"inputs {inputs}, the contract says {[t.name for t in spec.inputs]}")
    if sorted(outputs) != sorted(t.name for t in spec.outputs):
        problems.append(f"outputs {outputs}, the contract says {[t.name for t in spec.outputs]}")
    for tensor in (*spec.inputs, *spec.outputs):
        if tensor.name not in names:
            continue
        dtype = engine.get_tensor_dtype(tensor.name)
        want = getattr(trt, _TRT_DTYPES[tensor.dtype])
        if dtype != want:
            problems.append(f"{tensor.name!r} is {dtype}, the contract says {tensor.dtype}")
        shape = tuple(engine.get_tensor_shape(tensor.name))
        if tuple(shape[1:]) != tuple(tensor.dims) and -1 not in tensor.dims:
            problems.append(f"{tensor.name!r} has shape {shape}, the contract says [-1, {', '.join(map(str, tensor.dims))}]")
    for item in profile.inputs:
        if item.name in names:
            got = tuple(tuple(s) for s in engine.get_tensor_profile_shape(item.name, 0))
            if got != (item.min, item.opt, item.max):
                problems.append(f"profile of {item.name!r} is {got}, expected {(item.min, item.opt, item.max)}")
    return problems


def _write_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def build_engine(
    onnx_path: str | os.PathLike,
    plan_path: str | os.PathLike,
    spec: contract.ModelSpec,
    profile: EngineProfile,
    *,
    precision: str = DEFAULT_PRECISION,
    source: str | os.PathLike | None = None,
    timing_cache: str | os.PathLike | None = None,
    workspace_bytes: int = 4 << 30,
    optimization_level: int = 3,
    progress: bool = True,
    log_severity: str = "WARNING",
) -> meta.EngineMetadata:
    """Build one engine from ``onnx_path`` (already in the wanted precision) into
    ``plan_path``; write ``<plan>.json``; return its metadata. ``source`` is the
    ONNX recorded as the engine's source (default ``onnx_path``; for fp16, the exported
    graph before conversion), by name and SHA-256."""
    trt = load_tensorrt()
    gpu = require_gpu()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    started = time.perf_counter()
    logger = trt.Logger(getattr(trt.Logger, log_severity))
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errors}")
    network_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if network_inputs != [t.name for t in spec.inputs]:
        raise ContractMismatch(f"{onnx_path}: network inputs {network_inputs}, the contract says {[t.name for t in spec.inputs]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    config.builder_optimization_level = int(optimization_level)
    shapes = builder.create_optimization_profile()
    for item in profile.inputs:
        shapes.set_shape(item.name, item.min, item.opt, item.max)
    if config.add_optimization_profile(shapes) < 0:
        raise EngineBuildError(f"TensorRT rejected the optimization profile {profile.to_dict()}")

    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        # A cache from another TensorRT version or GPU: start a fresh one.
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    display = BuildProgress(f"{spec.name} ({precision})") if progress else None
    if display is not None:
        config.progress_monitor = _progress_monitor(trt, display)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {spec.name} from {onnx_path} (see the TensorRT log above)")
    _write_atomic(plan_path, serialized)
    if cache_path is not None:
        _write_atomic(cache_path, config.get_timing_cache().serialize())

    engine = trt.Runtime(logger).deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise EngineBuildError(f"the engine just built at {plan_path} does not deserialize")
    problems = check_engine(trt, engine, spec, profile)
    if problems:
        raise ContractMismatch(f"{plan_path} does not match contract model {spec.name!r}: " + "; ".join(problems))

    metadata = meta.EngineMetadata(
        model=spec.name,
        precision=precision,
        strongly_typed=True,
        tensorrt_version=trt.__version__,
        gpu=gpu.to_dict(),
        onnx_file=Path(source or onnx_path).name,
        onnx_sha256=meta.sha256_file(source or onnx_path),
        plan_sha256=meta.sha256_file(plan_path),
        profile=profile,
        contract_version=contract.CONTRACT_VERSION,
        omniface_version=__version__,
        built_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        build_seconds=time.perf_counter() - started,
        workspace_bytes=int(workspace_bytes),
        builder_optimization_level=int(optimization_level),
        timing_cache=os.fspath(cache_path) if cache_path else "",
        extra={"built_from": onnx_path.name},
    )
    meta.write_metadata(plan_path, metadata)
    return metadata


def gpu_models(models: Mapping[str, contract.ModelSpec] | None = None, gpu_postprocess: bool = True,
               ) -> dict[str, contract.ModelSpec]:
    """The models of the GPU repository: the contract's, with postprocess kept on the
    host (parameter ``device: cpu``) when ``gpu_postprocess`` is False, for a container
    without torch."""
    models = dict(contract.MODELS if models is None else models)
    if not gpu_postprocess:
        post = models[contract.POSTPROCESS]
        models[contract.POSTPROCESS] = dataclasses.replace(post, parameters={**post.parameters, "device": "cpu"})
    return models


@dataclass(frozen=True)
class PlannedEngine:
    """One engine ``build_repository`` would build, and why (empty ``reasons``: up to date)."""

    model: str
    source: Path
    plan: Path
    profile: EngineProfile
    reasons: tuple[str, ...]


def plan_builds(
    source_repo: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    precision: str = DEFAULT_PRECISION,
    models: Mapping[str, contract.ModelSpec] | None = None,
    names: Sequence[str] = ENGINE_MODELS,
    qdq_dir: str | os.PathLike | None = None,
    tensorrt_version: str | None = None,
    gpu: meta.GpuInfo | None = None,
    force: bool = False,
) -> list[PlannedEngine]:
    """What ``build_repository`` would do, without TensorRT: the source graph, the plan
    path, the profile and the reasons to (re)build each engine."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    models = contract.MODELS if models is None else models
    profiles = engine_profiles(models)
    planned = []
    for name in names:
        if name not in profiles:
            raise ValueError(f"{name!r} is not an engine model; engine models are {list(ENGINE_MODELS)}")
        source = source_onnx(Path(source_repo) / name / "1", precision, qdq_dir, name)
        plan = Path(out_dir) / name / "1" / repository.PLAN_FILENAME
        if force:
            reasons = ["--force"]
        elif tensorrt_version is None:
            reasons = ["TensorRT version unknown here"] if plan.is_file() else ["no engine yet"]
        else:
            reasons = meta.stale_reasons(
                plan, onnx_sha256=meta.sha256_file(source), precision=precision, profile=profiles[name],
                tensorrt_version=tensorrt_version, gpu=gpu, contract_version=contract.CONTRACT_VERSION,
            )
        planned.append(PlannedEngine(name, source, plan, profiles[name], tuple(reasons)))
    return planned


def build_repository(
    source_repo: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    precision: str = DEFAULT_PRECISION,
    models: Mapping[str, contract.ModelSpec] | None = None,
    names: Sequence[str] = ENGINE_MODELS,
    qdq_dir: str | os.PathLike | None = None,
    timing_cache: str | os.PathLike | None = None,
    workspace_bytes: int = 4 << 30,
    optimization_level: int = 3,
    force: bool = False,
    progress: bool = True,
    gpu_postprocess: bool = True,
    echo: Callable[[str], None] = print,
) -> list[meta.EngineMetadata]:
    """Render the GPU repository into ``out_dir`` and build its engines from the ONNX
    graphs of ``source_repo``; returns the metadata of the engines built this time."""
    models = gpu_models(models, gpu_postprocess=gpu_postprocess)
    # Missing graphs (a Q/DQ graph for int8, say) are reported before TensorRT is looked for.
    plan_builds(source_repo, out_dir, precision=precision, models=models, names=names, qdq_dir=qdq_dir)
    trt = load_tensorrt()
    gpu = require_gpu()
    out_dir = Path(out_dir)
    repository.render_repository(out_dir, models=models, target="gpu")
    cache = Path(timing_cache) if timing_cache else out_dir / TIMING_CACHE_NAME
    echo(f"TensorRT {trt.__version__} on {gpu.name} (sm {gpu.compute_capability}); precision {precision}; "
         f"timing cache {cache}")
    built = []
    for item in plan_builds(source_repo, out_dir, precision=precision, models=models, names=names, qdq_dir=qdq_dir,
                            tensorrt_version=trt.__version__, gpu=gpu, force=force):
        if not item.reasons:
            echo(f"{item.model}: up to date ({item.plan})")
            continue
        echo(f"{item.model}: building from {item.source} ({'; '.join(item.reasons)}), "
             f"batch {item.profile.inputs[0].min[0]}..{item.profile.max_batch} (opt {item.profile.opt_batch})")
        with tempfile.TemporaryDirectory(prefix="omniface-trt-") as tmp:
            onnx_for_build = item.source
            if precision == "fp16":
                onnx_for_build = convert_to_fp16(item.source, Path(tmp) / "model.fp16.onnx", models[item.model])
            metadata = build_engine(
                onnx_for_build, item.plan, models[item.model], item.profile, precision=precision,
                source=item.source, timing_cache=cache, workspace_bytes=workspace_bytes,
                optimization_level=optimization_level, progress=progress,
            )
        echo(f"{item.model}: wrote {item.plan} ({item.plan.stat().st_size / 1e6:.1f} MB) in "
             f"{metadata.build_seconds:.0f} s; metadata {meta.metadata_path(item.plan).name}")
        built.append(metadata)
    return built


