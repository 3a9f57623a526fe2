"""The same ensemble on the embedded server with the graphs on the GPU (ONNX Runtime's
CUDA provider, FP16 graphs) and postprocess aligning on the GPU (torch): served results
match the CPU pipeline, and the numbers of the issue are measured: raw model throughput
(frames/s, faces/s at batch 1, 8, 32), served throughput through the SDK, their ratio,
and FP16-vs-FP32 output parity on real images."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from omniface import contract, repository
from omniface.engines import convert_to_fp16
from omniface.serving.gpu import ort_cuda_session

from gpu_helpers import compare, real_images, throughput

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2] / "model_repository"


def gpu_variant(device: str = "cuda") -> dict[str, contract.ModelSpec]:
    models = dict(contract.MODELS)
    for name in (contract.DETECTOR, contract.ATTRIBUTES, contract.POSTPROCESS):
        spec = models[name]
        models[name] = dataclasses.replace(spec, parameters={**spec.parameters, "device": device})
    return models


@pytest.fixture(scope="module")
def fp16_graphs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("fp16")
    return {name: convert_to_fp16(REPO / name / "1" / "model.onnx", out / f"{name}.onnx", contract.MODELS[name])
            for name in (contract.DETECTOR, contract.ATTRIBUTES)}


@pytest.fixture(scope="module")
def gpu_server(ort_cuda, torch_cuda, fp16_graphs, tmp_path_factory):
    pytest.importorskip("pytriton", reason="the embedded server needs the 'serve' extra")
    from omniface.server import EmbeddedServer, free_port

    work = tmp_path_factory.mktemp("gpu-serving")
    repo = work / "repo"
    repository.render_repository(repo, models=gpu_variant())  # the CPU target, steps on device cuda
    for name, graph in fp16_graphs.items():
        shutil.copy2(graph, repo / name / "1" / repository.ONNX_FILENAME)
    server = EmbeddedServer(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                            metrics_port=free_port(), log_path=work / "tritonserver.log")
    with server:
        yield server


def test_fp16_vs_fp32_parity_on_real_images(ort_cuda, fp16_graphs, results) -> None:
    for name, count in ((contract.DETECTOR, 16), (contract.ATTRIBUTES, 128)):
        images = real_images(name, count)
        fp32 = ort_cuda_session(REPO / name / "1" / "model.onnx")
        fp16 = ort_cuda_session(fp16_graphs[name])
        names = [o.name for o in fp32.get_outputs()]
        feed = {fp32.get_inputs()[0].name: images}
        report = compare(name, dict(zip(names, fp32.run(names, feed))), dict(zip(names, fp16.run(names, feed))))
        results.setdefault("fp16_vs_fp32_cuda", {})[name] = report
        print(f"{name} FP16 vs FP32 (ORT CUDA): {report}")
        if name == contract.ATTRIBUTES:
            assert report["age_mae_years"] < 0.5


def test_raw_model_throughput(ort_cuda, fp16_graphs, results) -> None:
    table = {}
    for name in (contract.DETECTOR, contract.ATTRIBUTES):
        session = ort_cuda_session(fp16_graphs[name])
        input_name = session.get_inputs()[0].name
        sample = real_images(name, 8)
        for batch in (1, 8, 32):
            feed = {input_name: np.ascontiguousarray(np.resize(sample, (batch, *sample.shape[1:])))}
            rate = throughput(lambda: session.run(None, feed), batch)
            unit = "frames/s" if name == contract.DETECTOR else "faces/s"
            table[f"{name}/batch{batch}"] = {unit: rate}
            print(f"ORT CUDA FP16 {name} batch {batch}: {rate:,.0f} {unit}")
    results["raw_model_throughput_ort_cuda_fp16"] = table


def test_served_results_and_throughput(gpu_server, results) -> None:
    """Served through the SDK with the GPU steps: the same faces as the CPU pipeline
    (FP32, same frame), then frames/s and faces/s at concurrency 8 and the ratio to the
    raw detector throughput at batch 8."""
    import time

    from omniface import Client
    from omniface.serving.pipeline import LocalPipeline

    frames = _frames(48)
    local = LocalPipeline(REPO)
    with Client(gpu_server.grpc_url) as client:
        for frame in frames[:4]:
            served = client.analyze(frame)
            ref = local.run({contract.IMAGE_RAW: frame})
            # FP16 may flip a face that sits right at the score threshold; the rest must agree.
            assert abs(len(served.faces) - int(ref[contract.FACE_COUNT][0])) <= 1
            for face, box in zip(served.faces[:3], ref[contract.FACE_BOXES][:3]):
                assert np.allclose([face.box.x1, face.box.y1, face.box.x2, face.box.y2], box, atol=4.0)
        client.analyze_batch(frames[:8], concurrency=8)  # warm-up
        start = time.perf_counter()
        served = client.analyze_batch(frames, concurrency=8)
        elapsed = time.perf_counter() - start
    fps = len(frames) / elapsed
    faces = sum(len(r.faces) for r in served) / elapsed
    entry = {"frames_per_s": fps, "faces_per_s": faces, "concurrency": 8, "frames": len(frames)}
    raw = results.get("raw_model_throughput_ort_cuda_fp16", {}).get(f"{contract.DETECTOR}/batch8")
    if raw:
        entry["served_over_raw_detector_batch8"] = fps / raw["frames/s"]
    results["served_sdk_gpu_embedded"] = entry
    print(f"served (SDK, concurrency 8): {fps:.1f} frames/s, {faces:.1f} faces/s; {entry}")


def _frames(count: int) -> list[np.ndarray]:
    """Real WIDER FACE frames at their own size (astronaut without the data)."""
    from omniface import quantize

    root = quantize.data_root() / "widerface" / "train" / "images"
    files = quantize._pick(sorted(root.glob("*/*.jpg")), "val", count) if root.is_dir() else []
    if not files:
        from skimage import data

        return [np.ascontiguousarray(data.astronaut())] * count
    from omniface.processing.image import decode_image

    return [decode_image(p.read_bytes()) for p in files]
