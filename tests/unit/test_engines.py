"""The engine step without TensorRT: metadata, hashing, staleness, the progress display,
the clear error without TensorRT, and the TensorRT 10 call sequence against a stand-in
``tensorrt`` module (no BuilderFlag, strongly typed, the contract's profile, a timing
cache, a verified engine, a metadata file)."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import types
from pathlib import Path

import pytest

from omniface import cli, contract, repository
from omniface.engines import build, metadata as meta
from omniface.engines.command import main as build_engines_main
from omniface.engines.profiles import engine_profiles
from omniface.engines.progress import BuildProgress
from omniface.errors import MissingDependency

ROOT = Path(__file__).resolve().parents[2]
GPU = meta.GpuInfo(name="NVIDIA H100 80GB HBM3", compute_capability="9.0", driver_version="560.35.03",
                   memory_mib=81559, index=0)


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails like a missing package


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"omniface" * 100_000)
    assert meta.sha256_file(path, chunk_size=4096) == hashlib.sha256(b"omniface" * 100_000).hexdigest()


def _metadata(plan: Path, onnx_hash: str = "ab" * 32) -> meta.EngineMetadata:
    return meta.EngineMetadata(
        model=contract.DETECTOR, precision="fp16", strongly_typed=True, tensorrt_version="10.5.0",
        gpu=GPU.to_dict(), onnx_file="model.onnx", onnx_sha256=onnx_hash, plan_sha256=meta.sha256_file(plan),
        profile=engine_profiles()[contract.DETECTOR], contract_version=contract.CONTRACT_VERSION,
        omniface_version="0.1.0", built_at="2024-10-30T12:00:00Z", build_seconds=61.5, workspace_bytes=4 << 30,
    )


def test_metadata_file_round_trips_and_says_what_built_the_engine(tmp_path: Path) -> None:
    plan = tmp_path / "detector" / "1" / "model.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"plan")
    written = meta.write_metadata(plan, _metadata(plan))
    assert written == plan.with_name("model.plan.json")
    data = json.loads(written.read_text())
    assert data["tensorrt_version"] == "10.5.0"
    assert data["gpu"]["name"] == GPU.name and data["gpu"]["compute_capability"] == "9.0"
    assert data["onnx"] == {"file": "model.onnx", "sha256": "ab" * 32}
    (shape,) = data["profile"]["inputs"]
    assert shape["name"] == contract.DETECTOR_IMAGE and shape["min"][0] == 1
    assert shape["max"] == [contract.DETECTOR_MAX_BATCH, contract.DETECTOR_MAX_SIDE, contract.DETECTOR_MAX_SIDE, 3]
    assert meta.read_metadata(plan) == _metadata(plan)


def test_stale_reasons_name_every_change(tmp_path: Path) -> None:
    plan = tmp_path / "model.plan"
    profile = engine_profiles()[contract.DETECTOR]
    kwargs = dict(onnx_sha256="ab" * 32, precision="fp16", profile=profile, tensorrt_version="10.5.0", gpu=GPU,
                  contract_version=contract.CONTRACT_VERSION)
    assert meta.stale_reasons(plan, **kwargs) == ["no engine yet"]
    plan.write_bytes(b"plan")
    assert "no readable" in meta.stale_reasons(plan, **kwargs)[0]
    meta.write_metadata(plan, _metadata(plan))
    assert meta.stale_reasons(plan, **kwargs) == []
    other_gpu = meta.GpuInfo(name="Tesla T4", compute_capability="7.5")
    reasons = meta.stale_reasons(plan, **{**kwargs, "onnx_sha256": "cd" * 32, "tensorrt_version": "10.6.0",
                                          "gpu": other_gpu, "precision": "int8"})
    text = " | ".join(reasons)
    for fragment in ("ONNX graph changed", "10.5.0 -> 10.6.0", "Tesla T4", "fp16 -> int8"):
        assert fragment in text
    plan.write_bytes(b"tampered")
    assert "plan file changed" in " ".join(meta.stale_reasons(plan, **kwargs))


def test_parse_nvidia_smi() -> None:
    text = "0, NVIDIA H200, 9.0, 560.35.03, 143771\n1, Tesla T4, 7.5, 560.35.03, 15360\n"
    gpus = meta.parse_nvidia_smi(text)
    assert [g.name for g in gpus] == ["NVIDIA H200", "Tesla T4"]
    assert gpus[1].compute_capability == "7.5" and gpus[0].memory_mib == 143771 and gpus[1].index == 1
    assert meta.parse_nvidia_smi("No devices were found\n") == []


def test_progress_display_renders_phases_and_can_cancel() -> None:
    stream = io.StringIO()
    progress = BuildProgress("detector (fp16)", stream=stream)
    progress.phase_start("Building engine", None, 3)
    progress.phase_start("Tactic selection", "Building engine", 10)
    assert progress.step_complete("Tactic selection", 4)
    assert progress.status() == "detector (fp16): Building engine 0/3 > Tactic selection 5/10"
    progress.phase_finish("Tactic selection")
    progress.cancel()
    assert progress.step_complete("Building engine", 0) is False  # TensorRT then abandons the build
    progress.phase_finish("Building engine")
    assert stream.getvalue().splitlines()[0] == "detector (fp16): Building engine 0/3"
    assert progress.lines[-1] == "detector (fp16): done"


def test_without_tensorrt_the_engine_step_says_where_to_run(no_tensorrt: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert "tensorrt" in build.tensorrt_problem() and "24.10" in build.tensorrt_problem()
    with pytest.raises(MissingDependency, match="nvcr.io/nvidia/tensorrt:24.10-py3"):
        build.load_tensorrt()
    assert cli.main(["build-engines", "--out-dir", "/nonexistent/never-written"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("omniface: error: building TensorRT engines needs the `tensorrt` Python package")
    assert len(err.strip().splitlines()) == 1 and "docs/deploy-gpu.md" in err
    assert not Path("/nonexistent/never-written").exists()


def test_dry_run_prints_profiles_without_tensorrt(no_tensorrt: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert build_engines_main(["--dry-run", "--out-dir", str(tmp_path / "gpu")]) == 0
    out = capsys.readouterr().out
    assert "detector:" in out and "min [1, 32, 32, 3] opt [8, 480, 640, 3] max [8, 1920, 1920, 3]" in out
    assert "crops min [1, 112, 112, 3] opt [64, 112, 112, 3] max [128, 112, 112, 3]" in out
    assert "can build here: no:" in out


def test_int8_without_a_qdq_graph_names_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build_engines_main(["--precision", "int8", "--qdq-dir", str(tmp_path / "q"), "--out-dir", str(tmp_path / "o")]) == 1
    assert "build/quantize.py --models detector" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# A stand-in for the tensorrt module: the TensorRT 10 Python API surface build.py uses.
# --------------------------------------------------------------------------------------


def fake_tensorrt(calls: list) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.5.0"
    for dtype in ("uint8", "float32", "float16", "int32", "int64"):
        setattr(trt, dtype, f"DataType.{dtype}")

    class Logger:
        WARNING, INFO, ERROR = "W", "I", "E"

        def __init__(self, severity):
            self.severity = severity

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 2

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    class IProgressMonitor:
        def __init__(self):
            calls.append(("monitor-init",))

    class Tensor:
        def __init__(self, name):
            self.name = name

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs = flags, []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return Tensor(self.inputs[i])

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            calls.append(("parse", Path(path).name))
            spec = contract.MODELS[contract.DETECTOR if "detector" in path else contract.ATTRIBUTES]
            self.network.inputs = [t.name for t in spec.inputs]
            self.network.spec = spec
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+tuned"

    class Config:
        progress_monitor = None
        builder_optimization_level = 3

        def __init__(self):
            self.profiles, self.cache = [], None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("pool", pool, size))

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    engines = {}

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if config.progress_monitor is not None:
                config.progress_monitor.phase_start("Building engine", None, 2)
                config.progress_monitor.step_complete("Building engine", 0)
                config.progress_monitor.phase_finish("Building engine")
            blob = f"plan:{network.spec.name}:{len(engines)}".encode()
            engines[blob] = (network.spec, config.profiles[0].shapes)
            return blob

    class Engine:
        def __init__(self, spec, shapes):
            self.spec, self.shapes = spec, shapes
            self.names = [t.name for t in spec.inputs] + [t.name for t in spec.outputs]

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name in self.shapes else TensorIOMode.OUTPUT

        def _tensor(self, name):
            return next(t for t in (*self.spec.inputs, *self.spec.outputs) if t.name == name)

        def get_tensor_dtype(self, name):
            return {"UINT8": trt.uint8, "FP32": trt.float32}[self._tensor(name).dtype]

        def get_tensor_shape(self, name):
            return (-1, *self._tensor(name).dims)

        def get_tensor_profile_shape(self, name, index):
            return self.shapes[name]

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return Engine(*engines[bytes(blob)])

    for item in (Logger, NetworkDefinitionCreationFlag, MemoryPoolType, TensorIOMode, IProgressMonitor,
                 OnnxParser, Builder, Runtime):
        setattr(trt, item.__name__, item)
    return trt  # note: no BuilderFlag at all, as a TensorRT 11 would have none of the weak-typing flags


def test_build_repository_with_the_tensorrt_10_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls))
    monkeypatch.setattr(meta, "gpu_info", lambda: GPU)
    out = tmp_path / "gpu"
    built = build.build_repository(ROOT / "model_repository", out, precision="fp32", progress=True,
                                   echo=lambda line: None)
    assert [m.model for m in built] == [contract.DETECTOR, contract.ATTRIBUTES]
    assert ("network", 1 << 2) in calls  # strongly typed
    assert ("pool", "workspace", 4 << 30) in calls
    assert calls.count(("monitor-init",)) == 2
    assert "detector (fp32): Building engine" in capsys.readouterr().err
    for item in built:
        plan = out / item.model / "1" / repository.PLAN_FILENAME
        assert plan.is_file()
        data = json.loads((plan.parent / "model.plan.json").read_text())
        assert data["tensorrt_version"] == "10.5.0" and data["gpu"]["compute_capability"] == "9.0"
        assert data["onnx"]["sha256"] == meta.sha256_file(ROOT / "model_repository" / item.model / "1" / "model.onnx")
        assert data["precision"] == "fp32" and data["strongly_typed"] is True
        assert data["profile"] == engine_profiles()[item.model].to_dict()
    assert (out / build.TIMING_CACHE_NAME).read_bytes().endswith(b"+tuned")
    assert (out / contract.FACE_ANALYSIS / "config.pbtxt").is_file()  # the GPU repository around the engines
    assert 'platform: "tensorrt_plan"' in (out / contract.DETECTOR / "config.pbtxt").read_text()
    # Up to date now: nothing is rebuilt until something changes.
    assert build.build_repository(ROOT / "model_repository", out, precision="fp32", echo=lambda line: None) == []
    again = build.build_repository(ROOT / "model_repository", out, precision="fp32", force=True,
                                   names=[contract.ATTRIBUTES], echo=lambda line: None)
    assert [m.model for m in again] == [contract.ATTRIBUTES]
