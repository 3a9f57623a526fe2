"""``omniface.serving.torch_graph`` runs the committed ONNX graphs on torch: on CPU here,
against ONNX Runtime on real held-out images, so that a GPU machine with torch CUDA (and
no onnxruntime-gpu or TensorRT) only changes the device. tests/gpu runs it on CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402

from omniface import contract, quantize  # noqa: E402
from omniface.runtime import make_session  # noqa: E402
from omniface.serving.steps import OnnxGraphStep, make_step  # noqa: E402
from omniface.serving.torch_graph import SUPPORTED_OPS, TorchGraph  # noqa: E402

pytestmark = pytest.mark.model
REPO = Path(__file__).resolve().parents[2] / "model_repository"
GRAPHS = (contract.DETECTOR, contract.ATTRIBUTES)


def graph_path(name: str) -> Path:
    return REPO / name / "1" / "model.onnx"


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    return {contract.DETECTOR: quantize.image_set(contract.DETECTOR, "val", 4).images,
            contract.ATTRIBUTES: quantize.image_set(contract.ATTRIBUTES, "val", 32).images}


@pytest.fixture(scope="module")
def reference(images) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for name in GRAPHS:
        session = make_session(graph_path(name))
        names = [o.name for o in session.get_outputs()]
        out[name] = dict(zip(names, session.run(names, {session.get_inputs()[0].name: images[name]})))
    return out


@pytest.mark.parametrize("name", GRAPHS)
def test_fp32_matches_onnx_runtime(name, images, reference) -> None:
    graph = TorchGraph(graph_path(name), precision="fp32")
    assert graph.input_names == [t.name for t in contract.MODELS[name].inputs]
    got = graph({graph.input_names[0]: images[name]})
    assert set(got) == set(reference[name])
    for output, expected in reference[name].items():
        assert got[output].dtype == np.float32 and got[output].shape == expected.shape
        # ORT fuses and reorders ops: float32 rounding differs by ~1e-4 of the value
        np.testing.assert_allclose(got[output], expected, rtol=1e-3, atol=1e-3, err_msg=output)


def test_fp16_stays_close_to_fp32(images, reference) -> None:
    """What FP16 costs on these graphs, on real images: bounded drift, same decisions."""
    attributes = TorchGraph(graph_path(contract.ATTRIBUTES), precision="fp16")
    got = attributes({"crops": images[contract.ATTRIBUTES]})
    ref = reference[contract.ATTRIBUTES]
    assert np.abs(got[contract.AGE] - ref[contract.AGE]).mean() < 0.3  # years
    assert np.mean(got[contract.EXPRESSION].argmax(1) == ref[contract.EXPRESSION].argmax(1)) >= 0.95
    assert np.abs(got[contract.GENDER] - ref[contract.GENDER]).max() < 0.02
    assert np.abs(got[contract.HEAD_POSE] - ref[contract.HEAD_POSE]).max() < 0.5  # degrees

    detector = TorchGraph(graph_path(contract.DETECTOR), precision="fp16")
    got = detector({"image": images[contract.DETECTOR][:2]})
    ref = reference[contract.DETECTOR]
    assert np.abs(got["scores"] - ref["scores"][:2]).max() < 0.01
    confident = ref["scores"][:2] > 0.5
    assert np.abs(got["boxes"] - ref["boxes"][:2])[confident].max() < 0.5  # letterbox px


def test_graph_step_runs_on_torch_through_make_step(images, reference) -> None:
    step = make_step(contract.ATTRIBUTES, {"runtime": "torch", "precision": "fp32"}, REPO / contract.ATTRIBUTES / "1")
    assert isinstance(step, OnnxGraphStep) and step.runtime == "torch"
    out = step({contract.CROPS: images[contract.ATTRIBUTES]})
    assert list(out) == [t.name for t in contract.MODELS[contract.ATTRIBUTES].outputs]
    np.testing.assert_allclose(out[contract.AGE], reference[contract.ATTRIBUTES][contract.AGE], atol=1e-3)


def test_step_refuses_unknown_runtime_and_fp16_on_onnx_runtime() -> None:
    spec = contract.MODELS[contract.ATTRIBUTES]
    with pytest.raises(ValueError, match="runtime"):
        OnnxGraphStep(spec, graph_path(contract.ATTRIBUTES), runtime="tvm")
    with pytest.raises(ValueError, match="FP16 graph"):
        OnnxGraphStep(spec, graph_path(contract.ATTRIBUTES), precision="fp16")


def test_cuda_graphs_flag_is_ignored_on_cpu(images, reference) -> None:
    graph = TorchGraph(graph_path(contract.ATTRIBUTES), cuda_graphs=True)
    assert graph.cuda_graphs is False
    got = graph({"crops": images[contract.ATTRIBUTES][:4]})
    np.testing.assert_allclose(got[contract.SMILE], reference[contract.ATTRIBUTES][contract.SMILE][:4], atol=1e-5)


def _single_op_model(tmp_path: Path, node, inputs, outputs, initializers=()) -> Path:
    model = helper.make_model(helper.make_graph([node], "op", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "op.onnx"
    onnx.save(model, path)
    return path


def test_unsupported_operator_is_refused_at_load(tmp_path) -> None:
    assert "Einsum" not in SUPPORTED_OPS
    node = helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->i")
    path = _single_op_model(tmp_path, node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(NotImplementedError, match="Einsum"):
        TorchGraph(path)


@pytest.mark.parametrize("starts,ends,axes,steps", [([1], [2**63 - 1], [1], [1]), ([-3, 0], [-1, 2], [1, 0], [1, 1]),
                                                    ([0], [5], [1], [2])])
def test_slice_matches_onnx_runtime(tmp_path, starts, ends, axes, steps) -> None:
    """Slice's clamping of out-of-range and negative bounds (CORAL's rank slices use them)."""
    def ints(name, values):
        return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)

    node = helper.make_node("Slice", ["x", "s", "e", "a", "p"], ["y"])
    path = _single_op_model(tmp_path, node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 6])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                            [ints("s", starts), ints("e", ends), ints("a", axes), ints("p", steps)])
    x = np.arange(18, dtype=np.float32).reshape(3, 6)
    expected = make_session(path).run(None, {"x": x})[0]
    np.testing.assert_array_equal(TorchGraph(path)({"x": x})["y"], expected)
