"""TensorRT engines on a real GPU: build them (fp16, fp32, int8 from Q/DQ), check the
metadata, run them with torch CUDA buffers against ONNX Runtime FP32 on real images, and
measure raw engine throughput at batch 1, 8 and 32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omniface import contract, quantize, repository
from omniface.engines import build
from omniface.runtime import make_session

from gpu_helpers import compare, real_images, throughput

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2] / "model_repository"


class EngineRunner:
    """Runs a deserialized engine on torch CUDA tensors (TensorRT 10 tensor API)."""

    def __init__(self, trt, torch, plan: Path) -> None:
        self.trt, self.torch = trt, torch
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.uint8: torch.uint8}

    def __call__(self, feeds: dict) -> dict:
        torch = self.torch
        stream = torch.cuda.current_stream()
        keep = []
        for name in self.inputs:
            value = feeds[name]
            tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value)).cuda()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        out = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out[name] = torch.empty(shape, dtype=self.dtypes[self.engine.get_tensor_dtype(name)], device="cuda")
            self.context.set_tensor_address(name, out[name].data_ptr())
        assert self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out


def ort_outputs(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    session = make_session(path, threads=4)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: images})))


@pytest.fixture(scope="module")
def engines(tensorrt, torch_cuda, tmp_path_factory) -> dict[str, Path]:
    """fp16 and fp32 GPU repositories (and an int8 one from freshly made Q/DQ graphs)."""
    work = tmp_path_factory.mktemp("engines")
    out = {}
    for precision in ("fp16", "fp32"):
        build.build_repository(REPO, work / precision, precision=precision, progress=False)
        out[precision] = work / precision
    qdq = work / "qdq"
    for name in build.ENGINE_MODELS:
        calib = quantize.image_set(name, "train", 16 if name == contract.DETECTOR else 64)
        quantize.quantize_graph(REPO / name / "1" / "model.onnx", qdq / name / "1" / "model.qdq.onnx",
                                contract.MODELS[name], calib.images, source=calib.source)
    build.build_repository(REPO, work / "int8", precision="int8", qdq_dir=qdq, progress=False)
    out["int8"] = work / "int8"
    return out


def test_metadata_names_tensorrt_gpu_onnx_and_profiles(engines, tensorrt, gpu) -> None:
    for precision, repo in engines.items():
        for name in build.ENGINE_MODELS:
            plan = repo / name / "1" / repository.PLAN_FILENAME
            data = json.loads(plan.with_name("model.plan.json").read_text())
            assert data["tensorrt_version"] == tensorrt.__version__ and data["precision"] == precision
            assert data["gpu"]["name"] == gpu.name and data["gpu"]["compute_capability"] == gpu.compute_capability
            assert data["profile"] == build.engine_profiles()[name].to_dict()
        # a second run finds everything up to date
        assert build.build_repository(REPO, repo, precision=precision, progress=False,
                                      qdq_dir=repo.parent / "qdq") == []


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engines_match_onnx_runtime_fp32_on_real_images(engines, tensorrt, torch_cuda, results, precision) -> None:
    for name, count in ((contract.DETECTOR, 8), (contract.ATTRIBUTES, 64)):
        images = real_images(name, count)
        runner = EngineRunner(tensorrt, torch_cuda, engines[precision] / name / "1" / repository.PLAN_FILENAME)
        got = {k: v.float().cpu().numpy() for k, v in runner({runner.inputs[0]: images}).items()}
        ref = ort_outputs(REPO / name / "1" / "model.onnx", images)
        report = compare(name, ref, got)
        results.setdefault("parity_vs_ort_fp32", {})[f"{name}/{precision}"] = report
        print(f"{name} TensorRT {precision} vs ORT FP32: {report}")
        if name == contract.DETECTOR:
            assert report["scores_max_abs"] < (0.05 if precision == "fp16" else 0.2)
        else:
            assert report["age_mae_years"] < (0.5 if precision == "fp16" else 3.0)


def test_raw_engine_throughput(engines, tensorrt, torch_cuda, results) -> None:
    table = {}
    for precision in ("fp32", "fp16", "int8"):
        for name in build.ENGINE_MODELS:
            runner = EngineRunner(tensorrt, torch_cuda, engines[precision] / name / "1" / repository.PLAN_FILENAME)
            top = build.engine_profiles()[name].max_batch
            for batch in (1, 8, 32):
                if batch > top:
                    continue
                images = np.resize(real_images(name, min(batch, 8)), (batch, *real_images(name, 1).shape[1:]))
                feed = {runner.inputs[0]: torch_cuda.from_numpy(np.ascontiguousarray(images)).cuda()}
                rate = throughput(lambda: runner(feed), batch)
                unit = "frames/s" if name == contract.DETECTOR else "faces/s"
                table[f"{name}/{precision}/batch{batch}"] = {unit: rate}
                print(f"TensorRT {precision} {name} batch {batch}: {rate:,.0f} {unit}")
    results["tensorrt_raw_throughput"] = table
