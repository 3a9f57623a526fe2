"""Q/DQ quantization and the FP16 graph, on CPU: the graphs keep the contract's
interface, carry the Q/DQ (or float16) nodes TensorRT needs, and their outputs stay
close to FP32. Quick: a few astronaut images, MinMax calibration.

The committed graphs are random-init until the trained model lands, so the drift bounds
here are loose sanity bounds; `python build/quantize.py --evaluate` measures the real
drift on held-out faces and re-runs on the trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("skimage")

from omniface import contract, quantize  # noqa: E402
from omniface.engines import convert_to_fp16  # noqa: E402
from omniface.export import check_against_contract  # noqa: E402  (needs torch: a model test)
from omniface.runtime import make_session  # noqa: E402

pytestmark = pytest.mark.model
REPO = Path(__file__).resolve().parents[2] / "model_repository"


def outputs(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    session = make_session(path, threads=2)
    (inp,) = session.get_inputs()
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {inp.name: np.ascontiguousarray(images)})))


@pytest.fixture(scope="module")
def qdq_graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("qdq")
    graphs = {}
    for name, count in ((contract.ATTRIBUTES, 16), (contract.DETECTOR, 3)):
        calib = quantize.astronaut_images(name, count, seed=0)
        graphs[name] = quantize.quantize_graph(REPO / name / "1" / "model.onnx", out / name / "model.qdq.onnx",
                                               contract.MODELS[name], calib, method="minmax", batch=4,
                                               source="astronaut test images")
    return graphs


@pytest.mark.parametrize("name", [contract.ATTRIBUTES, contract.DETECTOR])
def test_qdq_graph_has_quantize_dequantize_pairs_and_the_contract_interface(qdq_graphs, name: str) -> None:
    path = qdq_graphs[name]
    counts = quantize.count_qdq(path)
    assert counts["QuantizeLinear"] > 10 and counts["DequantizeLinear"] >= counts["QuantizeLinear"]
    check_against_contract(path, contract.MODELS[name])  # names, order, dtypes, dims, dynamic batch, opset

    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["omniface_precision"] == "int8-qdq-tensorrt"
    assert props[contract.CONTRACT_VERSION_PARAMETER] == contract.CONTRACT_VERSION
    # TensorRT conventions: INT8 (signed) with zero points of 0.
    for init in model.graph.initializer:
        if init.name.endswith("_zero_point"):
            assert init.data_type == onnx.TensorProto.INT8
            assert not np.any(onnx.numpy_helper.to_array(init))
    assert {o.domain or "" for o in model.opset_import} <= {"", "ai.onnx"}


def test_qdq_attributes_drift_is_bounded(qdq_graphs) -> None:
    held_out = quantize.astronaut_images(contract.ATTRIBUTES, 8, seed=1)
    ref = outputs(REPO / contract.ATTRIBUTES / "1" / "model.onnx", held_out)
    got = outputs(qdq_graphs[contract.ATTRIBUTES], held_out)
    assert set(ref) == set(got)
    # Bounds for the trained model with min-max calibration on 16 stand-in images: INT8
    # moves an age by ~2 years on average here (0.4-1.1 with the real calibration of
    # build/quantize.py; MODEL_CARD.md) and probabilities by a few hundredths (0.2 at worst).
    age = np.abs(got[contract.AGE] - ref[contract.AGE])
    assert age.mean() < 3.0 and age.max() < 8.0, age  # years (a broken graph is off by tens)
    for name in (contract.GENDER, contract.SMILE, contract.EXPRESSION):
        diff = np.abs(got[name] - ref[name])
        assert diff.mean() < 0.1 and diff.max() < 0.35, (name, diff.max())  # a broken graph: ~0.5
    assert np.abs(got[contract.HEAD_POSE] - ref[contract.HEAD_POSE]).max() < 5.0  # degrees


def test_qdq_detector_drift_is_bounded(qdq_graphs) -> None:
    frames = quantize.astronaut_images(contract.DETECTOR, 2, seed=1)
    ref = outputs(REPO / contract.DETECTOR / "1" / "model.onnx", frames)
    got = outputs(qdq_graphs[contract.DETECTOR], frames)
    assert np.abs(got[contract.DETECTOR_SCORES] - ref[contract.DETECTOR_SCORES]).max() < 0.1
    boxes = np.abs(got[contract.DETECTOR_BOXES] - ref[contract.DETECTOR_BOXES])  # stride units
    confident = ref[contract.DETECTOR_SCORES] > 0.3  # where the detector sees a face
    assert boxes.mean() < 0.15 and boxes[confident].max() < 1.0, (boxes.mean(), boxes[confident].max())


def test_evaluate_reports_latency_drift_and_task_agreement(qdq_graphs) -> None:
    images = quantize.ImageSet(quantize.astronaut_images(contract.ATTRIBUTES, 8, seed=2), "astronaut")
    result = quantize.evaluate(REPO / contract.ATTRIBUTES / "1" / "model.onnx", qdq_graphs[contract.ATTRIBUTES],
                               contract.ATTRIBUTES, images, threads=1, batches=(1, 4), runs=2)
    assert set(result.latency_ms) == {"1", "4"} and result.latency_ms["4"]["qdq"] > 0
    assert set(result.drift) == {t.name for t in contract.MODELS[contract.ATTRIBUTES].outputs}
    assert 0 <= result.task_metrics["expression_argmax_agreement"] <= 1
    assert result.task_metrics["age_mae_years"] >= 0
    assert result.to_dict()["count"] == 8


def test_cpu_flavour_is_uint8_and_keeps_the_interface(tmp_path: Path) -> None:
    path = quantize.quantize_graph(REPO / contract.ATTRIBUTES / "1" / "model.onnx", tmp_path / "cpu.onnx",
                                   contract.MODELS[contract.ATTRIBUTES],
                                   quantize.astronaut_images(contract.ATTRIBUTES, 8), method="minmax", flavor="cpu")
    check_against_contract(path, contract.MODELS[contract.ATTRIBUTES])
    import onnx

    zero_points = [i for i in onnx.load(str(path)).graph.initializer if i.name.endswith("_zero_point")]
    assert any(z.data_type == onnx.TensorProto.UINT8 for z in zero_points)


def test_fp16_graph_keeps_the_interface_and_stays_close(tmp_path: Path) -> None:
    import onnx

    for name, images in ((contract.ATTRIBUTES, quantize.astronaut_images(contract.ATTRIBUTES, 4)),
                         (contract.DETECTOR, quantize.astronaut_images(contract.DETECTOR, 1))):
        source = REPO / name / "1" / "model.onnx"
        half = convert_to_fp16(source, tmp_path / name / "model.fp16.onnx", contract.MODELS[name])
        check_against_contract(half, contract.MODELS[name])  # UINT8 in, FP32 out, as the contract says
        model = onnx.load(str(half))
        assert sum(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer) > 10
        ref, got = outputs(source, images), outputs(half, images)
        for key in ref:
            assert got[key].dtype == np.float32
            scale = max(1.0, float(np.abs(ref[key]).max()))
            assert np.abs(got[key] - ref[key]).max() < 0.02 * scale, key


def test_image_sets_use_real_faces_when_present() -> None:
    root = quantize.data_root()
    if not (root / "utkface" / "crop_part1").is_dir() or not (root / "widerface" / "train" / "images").is_dir():
        pytest.skip(f"no UTKFace / WIDER FACE under {root} (set OMNIFACE_DATA)")
    crops = quantize.image_set(contract.ATTRIBUTES, "val", 4, allow_fallback=False)
    assert crops.real and crops.images.shape == (4, contract.CROP_SIZE, contract.CROP_SIZE, 3)
    frames = quantize.image_set(contract.DETECTOR, "train", 2, allow_fallback=False)
    assert frames.images.shape == (2, contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH, 3)
    # calibration (train) and evaluation (val) never share an image
    train = {p.name for p in quantize._pick(sorted((root / "utkface" / "crop_part1").iterdir()), "train", 10_000)}
    val = {p.name for p in quantize._pick(sorted((root / "utkface" / "crop_part1").iterdir()), "val", 10_000)}
    assert train and val and not train & val


def test_image_set_falls_back_to_the_astronaut(tmp_path: Path) -> None:
    fallback = quantize.image_set(contract.ATTRIBUTES, "train", 3, root=tmp_path)
    assert not fallback.real and fallback.images.shape == (3, contract.CROP_SIZE, contract.CROP_SIZE, 3)
    with pytest.raises(FileNotFoundError, match="OMNIFACE_DATA"):
        quantize.image_set(contract.DETECTOR, "train", 3, root=tmp_path, allow_fallback=False)
