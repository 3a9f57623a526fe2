"""The same ensemble on the embedded server with the graphs on the GPU, and the numbers
of the GPU issue: raw model throughput (frames/s, faces/s at batch 1, 8, 32), served
throughput through the SDK and perf_analyzer, their ratio to the raw detector, and
FP16-vs-FP32 output parity on real images.

The graphs run on whichever GPU runtime the machine has: ONNX Runtime's CUDA provider
(onnxruntime-gpu, on the FP16 graph from ``omniface.engines.convert_to_fp16``) and/or
``omniface.serving.torch_graph`` on torch CUDA (FP32, FP16, FP16 replayed as CUDA graphs).
Both execute the committed ONNX graphs. Postprocess aligns the crops on the GPU (torch).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from omniface import contract, repository
from omniface.engines import convert_to_fp16

from conftest import REHEARSAL, synchronize
from gpu_helpers import compare, real_images, throughput

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2] / "model_repository"
GRAPHS = (contract.DETECTOR, contract.ATTRIBUTES)
BATCHES = (1, 8, 32)


def graph_path(name: str) -> Path:
    return REPO / name / "1" / "model.onnx"


def gpu_variant(graph_parameters: dict[str, str], device: str = "cuda") -> dict[str, contract.ModelSpec]:
    """The CPU repository's models with the graphs and postprocess on ``device``."""
    models = dict(contract.MODELS)
    for name in (*GRAPHS, contract.POSTPROCESS):
        spec = models[name]
        extra = {"device": device, **(graph_parameters if name in GRAPHS else {})}
        models[name] = dataclasses.replace(spec, parameters={**spec.parameters, **extra})
    return models


@pytest.fixture(scope="module")
def ort_available():
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def serving_runtime(gpu, ort_available) -> dict[str, str]:
    """Model parameters of the served graphs: ORT CUDA when installed, else torch FP16."""
    if REHEARSAL:
        return {"runtime": "torch", "precision": "fp32"}
    if ort_available:
        return {"runtime": "onnxruntime"}
    import torch

    if not torch.cuda.is_available():
        pytest.skip("neither onnxruntime-gpu nor torch with CUDA is installed: no GPU runtime for the graphs")
    return {"runtime": "torch", "precision": "fp16", "cuda_graphs": "true"}


@pytest.fixture(scope="module")
def fp16_graphs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("fp16")
    return {name: convert_to_fp16(graph_path(name), out / f"{name}.onnx", contract.MODELS[name]) for name in GRAPHS}


@pytest.fixture(scope="module")
def torch_graphs(device):
    """(precision, cuda_graphs) -> {graph name: TorchGraph on the device}."""
    from omniface.serving.torch_graph import TorchGraph

    return {(precision, graphs): {name: TorchGraph(graph_path(name), device=device, precision=precision,
                                                  cuda_graphs=graphs) for name in GRAPHS}
            for precision, graphs in (("fp32", False), ("fp16", False), ("fp16", True))}


def _reference_cpu(name: str, images: np.ndarray) -> dict[str, np.ndarray]:
    from omniface.runtime import make_session

    session = make_session(graph_path(name))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: images})))


def test_torch_cuda_matches_cpu_and_fp16_parity(torch_graphs, results) -> None:
    """On real images: torch CUDA FP32 against ONNX Runtime CPU FP32 (the device alone),
    then FP16 (eager and CUDA-graph replay) against FP32 on the GPU."""
    report = {}
    for name, count in ((contract.DETECTOR, 16), (contract.ATTRIBUTES, 128)):
        images = real_images(name, 4 if REHEARSAL and name == contract.DETECTOR else count)
        feed = {torch_graphs[("fp32", False)][name].input_names[0]: images}
        cpu = _reference_cpu(name, images)
        fp32 = torch_graphs[("fp32", False)][name](feed)
        report[f"{name}/cuda_fp32_vs_cpu_fp32"] = compare(name, cpu, fp32)
        for graphs in (False, True):
            fp16 = torch_graphs[("fp16", graphs)][name](feed)
            report[f"{name}/fp16{'_cuda_graphs' if graphs else ''}_vs_fp32"] = compare(name, fp32, fp16)
        errors = torch_graphs[("fp16", True)][name].capture_errors
        if errors:
            report[f"{name}/cuda_graph_capture_errors"] = {str(k): v for k, v in errors.items()}
    results["parity_torch_cuda"] = report
    for key, value in report.items():
        print(f"{key}: {value}")
    assert report[f"{contract.ATTRIBUTES}/cuda_fp32_vs_cpu_fp32"]["age_mae_years"] < 0.01
    assert report[f"{contract.ATTRIBUTES}/fp16_vs_fp32"]["age_mae_years"] < 0.5
    assert report[f"{contract.ATTRIBUTES}/fp16_vs_fp32"]["expression_argmax_agreement"] > 0.95
    assert report[f"{contract.DETECTOR}/fp16_vs_fp32"]["scores_max_abs"] < 0.02


def test_ort_cuda_fp16_vs_fp32_parity(ort_cuda, fp16_graphs, results) -> None:
    from omniface.serving.gpu import ort_cuda_session

    for name, count in ((contract.DETECTOR, 16), (contract.ATTRIBUTES, 128)):
        images = real_images(name, count)
        fp32 = ort_cuda_session(graph_path(name))
        fp16 = ort_cuda_session(fp16_graphs[name])
        names = [o.name for o in fp32.get_outputs()]
        feed = {fp32.get_inputs()[0].name: images}
        report = compare(name, dict(zip(names, fp32.run(names, feed))), dict(zip(names, fp16.run(names, feed))))
        results.setdefault("parity_ort_cuda", {})[name] = report
        print(f"{name} FP16 vs FP32 (ORT CUDA): {report}")
        if name == contract.ATTRIBUTES:
            assert report["age_mae_years"] < 0.5


def _rates(run_for_batch, unit: str, label: str) -> dict[str, dict[str, float]]:
    table = {}
    for batch in (1, 2) if REHEARSAL else BATCHES:
        rate = throughput(run_for_batch(batch), batch, seconds=0.2 if REHEARSAL else 1.5, warmup=1 if REHEARSAL else 5)
        table[f"batch{batch}"] = {unit: rate}
        print(f"{label} batch {batch}: {rate:,.0f} {unit}")
    return table


def _batch_of(name: str, batch: int) -> np.ndarray:
    sample = real_images(name, 8)
    return np.ascontiguousarray(np.resize(sample, (batch, *sample.shape[1:])))


def test_raw_model_throughput_torch_cuda(torch_graphs, results) -> None:
    """Host numpy in, host numpy out (what a python-backend step pays), per graph."""
    import torch

    table = {}
    for (precision, graphs), by_name in torch_graphs.items():
        if REHEARSAL and precision == "fp16":
            continue  # FP16 convolutions on a CPU take seconds: the parity test covers them
        label = f"torch_cuda_{precision}{'_cuda_graphs' if graphs else ''}"
        for name in GRAPHS:
            graph = by_name[name]
            unit = "frames/s" if name == contract.DETECTOR else "faces/s"

            def run_for_batch(batch, graph=graph, name=name):
                feed = {graph.input_names[0]: _batch_of(name, batch)}
                return lambda: (graph(feed), synchronize(torch))

            table[f"{label}/{name}"] = _rates(run_for_batch, unit, f"{label} {name}")
    results["raw_model_throughput_torch_cuda"] = table


def test_raw_model_throughput_ort_cuda(ort_cuda, fp16_graphs, results) -> None:
    from omniface.serving.gpu import ort_cuda_session

    table = {}
    for name in GRAPHS:
        session = ort_cuda_session(fp16_graphs[name])
        unit = "frames/s" if name == contract.DETECTOR else "faces/s"

        def run_for_batch(batch, session=session, name=name):
            feed = {session.get_inputs()[0].name: _batch_of(name, batch)}
            return lambda: session.run(None, feed)

        table[f"ort_cuda_fp16/{name}"] = _rates(run_for_batch, unit, f"ORT CUDA FP16 {name}")
    results["raw_model_throughput_ort_cuda"] = table


@pytest.fixture(scope="module")
def gpu_server(serving_runtime, device, tmp_path_factory, request):
    pytest.importorskip("pytriton", reason="the embedded server needs nvidia-pytriton (build/pack_gpu_check.py packs it)")
    from omniface.binaries import missing_shared_libraries
    from omniface.server import EmbeddedServer, find_triton, free_port

    install = find_triton()
    missing = missing_shared_libraries(install.stub(), [install.libs_dir])
    if missing:
        pytest.skip(f"the python backend stub cannot load {missing} (this Python has no shared libpython): "
                    "the embedded server cannot run the python steps here")
    work = tmp_path_factory.mktemp("gpu-serving")
    repo = work / "repo"
    # The CPU target's configs and graphs, with the graph steps and postprocess on the device.
    repository.render_variant(repo, REPO, models=gpu_variant(serving_runtime, device))
    if serving_runtime["runtime"] == "onnxruntime":
        for name, graph in request.getfixturevalue("fp16_graphs").items():
            shutil.copy2(graph, repo / name / "1" / repository.ONNX_FILENAME)
    server = EmbeddedServer(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                            metrics_port=free_port(), log_path=work / "tritonserver.log", startup_timeout=300)
    try:
        with server:
            yield server
    finally:
        log = work / "tritonserver.log"
        if log.is_file():
            results_path = os.environ.get("OMNIFACE_GPU_RESULTS")
            if results_path:  # keep the server log beside the results (the GPU machine's $OUT)
                shutil.copy2(log, Path(results_path).with_name("tritonserver-gpu.log"))



def test_served_results_and_throughput(gpu_server, serving_runtime, results) -> None:
    """Served through the SDK with the GPU steps: the same faces as the CPU pipeline
    (FP32, same frame), then frames/s and faces/s at concurrency 8 and 32, and the ratio
    to the raw detector throughput at batch 8."""
    from omniface import Client
    from omniface.serving.pipeline import LocalPipeline

    frames = _frames(6 if REHEARSAL else 48)
    local = LocalPipeline(REPO)
    with Client(gpu_server.grpc_url) as client:
        for frame in frames[:4]:
            served = client.analyze(frame)
            ref = local.run({contract.IMAGE_RAW: frame})
            # FP16 may flip a face that sits right at the score threshold; the rest must agree.
            assert abs(len(served.faces) - int(ref[contract.FACE_COUNT][0])) <= 1
            for face, box in zip(served.faces[:3], ref[contract.FACE_BOXES][:3]):
                assert np.allclose([face.box.x1, face.box.y1, face.box.x2, face.box.y2], box, atol=4.0)
        entries = {}
        for concurrency in (2,) if REHEARSAL else (8, 32):
            client.analyze_batch(frames[:concurrency], concurrency=concurrency)  # warm-up
            start = time.perf_counter()
            served = client.analyze_batch(frames * 2, concurrency=concurrency)
            elapsed = time.perf_counter() - start
            entries[f"concurrency{concurrency}"] = {
                "frames_per_s": 2 * len(frames) / elapsed,
                "faces_per_s": sum(len(r.faces) for r in served) / elapsed,
                "frames": 2 * len(frames)}
    raw = _raw_detector_batch8(results, serving_runtime)
    for entry in entries.values():
        if raw:
            entry["served_over_raw_detector_batch8"] = entry["frames_per_s"] / raw
    results["served_sdk_gpu_embedded"] = {"runtime": serving_runtime, **entries}
    print(f"served (SDK): {results['served_sdk_gpu_embedded']}")


def test_served_throughput_perf_analyzer(gpu_server, serving_runtime, results, tmp_path) -> None:
    """perf_analyzer (tritonclient 2.51) on the GPU server, raw frames, concurrency 8 and 32."""
    from omniface.bench import inputs as bench_inputs
    from omniface.bench.perf import Measurement, find_perf_analyzer, points
    from omniface.bench.sweep import run_sweep
    from omniface.errors import MissingDependency

    try:
        perf = find_perf_analyzer()
    except MissingDependency as exc:
        pytest.skip(str(exc))
    images = [bench_inputs.from_pixels(f"wider{i}", frame) for i, frame in enumerate(_frames(8))]
    data = bench_inputs.write_input_data(tmp_path / "raw.json", images, "raw")
    measurement = (Measurement(interval_ms=1000, stability_percent=50, max_trials=3) if REHEARSAL
                   else Measurement(interval_ms=3000, stability_percent=20, max_trials=5))
    sweep = run_sweep(perf, gpu_server.grpc_url, data, points([2] if REHEARSAL else [8, 32]), tmp_path / "perf",
                      "gpu-raw", input_kind="raw", images=[i.name for i in images], progress=False, timeout=240,
                      measurement=measurement)
    raw = _raw_detector_batch8(results, serving_runtime)
    table = {}
    for result in sweep.results:
        assert result.ok, result.error
        row = result.row
        entry = {"frames_per_s": row.throughput, "p50_ms": row.p50_us / 1000, "p99_ms": row.p99_us / 1000,
                 "steps_server_us": {name: step.server_us for name, step in result.steps.items()}}
        if raw:
            entry["served_over_raw_detector_batch8"] = row.throughput / raw
        table[result.point.label] = entry
    results["served_perf_analyzer_gpu_embedded"] = {"runtime": serving_runtime, **table}
    print(f"perf_analyzer: {table}")


def _raw_detector_batch8(results: dict, runtime: dict[str, str]) -> float | None:
    """Raw detector frames/s at batch 8 (2 in a rehearsal) on the served runtime."""
    batch = f"batch{2 if REHEARSAL else 8}"
    if runtime["runtime"] == "onnxruntime":
        entry = results.get("raw_model_throughput_ort_cuda", {}).get(f"ort_cuda_fp16/{contract.DETECTOR}", {})
    else:
        key = f"torch_cuda_{runtime['precision']}{'_cuda_graphs' if runtime.get('cuda_graphs') == 'true' else ''}"
        entry = results.get("raw_model_throughput_torch_cuda", {}).get(f"{key}/{contract.DETECTOR}", {})
    return entry.get(batch, {}).get("frames/s")


def _frames(count: int) -> list[np.ndarray]:
    """Real WIDER FACE frames at their own size (astronaut without the data)."""
    from omniface import quantize

    files = quantize.image_files(contract.DETECTOR, "val", count)
    if not files:
        from skimage import data

        return [np.ascontiguousarray(data.astronaut())] * count
    from omniface.processing.image import decode_image

    return [decode_image(p.read_bytes()) for p in files]
