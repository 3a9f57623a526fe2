"""ONNX export: contract names/dtypes/shapes, dynamic batch, ORT-vs-torch parity on a
real image, and the committed graphs."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from omniface import contract  # noqa: E402
from omniface.errors import ContractMismatch  # noqa: E402
from omniface.export import check_against_contract, export_all, export_graph, parity, parity_report  # noqa: E402
from omniface.nn import OmniFaceNet  # noqa: E402
from omniface.runtime import make_session  # noqa: E402

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[2]
ALL_TASKS = tuple(t.name for t in contract.TASKS)


def _astronaut():
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    img = data.astronaut()  # 512x512 RGB uint8, shipped with scikit-image
    frame = np.asarray(Image.fromarray(img).resize((contract.DETECTOR_INPUT_WIDTH, contract.DETECTOR_INPUT_HEIGHT)))
    face = np.asarray(Image.fromarray(img[20:240, 140:340]).resize((contract.CROP_SIZE, contract.CROP_SIZE)))
    crops = np.stack([face, face[:, ::-1], np.asarray(Image.fromarray(img).resize((contract.CROP_SIZE,) * 2))])
    return frame[None], crops


def _make_informative(model, frames, crops, seed=0):
    """Random init with identity BN statistics gives nearly input-independent outputs,
    which would make parity vacuous. Give BN random affine parameters and statistics
    measured on the test images, and larger predictor weights, so outputs vary."""
    from omniface.export.onnx import _normalise

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration passes
        model.train()
        model.detect(_normalise(torch.from_numpy(np.concatenate([frames, frames[:, :, ::-1]]))))
        model.attributes(_normalise(torch.from_numpy(crops.copy())))
        model.eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                # Dead channels measure ~0 variance on two images; 1/sqrt(var) would then
                # amplify float32 rounding far beyond what trained weights do.
                m.running_var.clamp_(min=0.05)
        for conv in (model.head.score, model.head.box, model.head.landmark):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
        model.head.score.bias.zero_()  # probabilities around 0.5, where sigmoid is steepest
        for m in model.heads.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)
    return model


@pytest.fixture(scope="module")
def astronaut():
    return _astronaut()


@pytest.fixture(scope="module")
def net(astronaut):
    torch.manual_seed(0)
    return _make_informative(OmniFaceNet(), *astronaut)


@pytest.fixture(scope="module")
def exported(net, tmp_path_factory):
    return export_all(net, tmp_path_factory.mktemp("repo"))


def test_layout_of_the_written_repository(exported, tmp_path_factory):
    assert set(exported) == {contract.DETECTOR, contract.ATTRIBUTES}
    for name, path in exported.items():
        assert path.parts[-3:] == (name, "1", "model.onnx")
        assert path.stat().st_size < 10e6


@pytest.mark.parametrize("name", [contract.DETECTOR, contract.ATTRIBUTES])
def test_graphs_match_contract(exported, name):
    check_against_contract(exported[name], contract.MODELS[name])
    import onnx

    model = onnx.load(str(exported[name]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta[contract.CONTRACT_VERSION_PARAMETER] == contract.CONTRACT_VERSION
    assert {o.domain: o.version for o in model.opset_import}[""] == 17


def test_check_against_contract_reports_mismatches(exported):
    with pytest.raises(ContractMismatch, match="input names"):
        check_against_contract(exported[contract.DETECTOR], contract.MODELS[contract.ATTRIBUTES])
    # An attributes graph with fewer heads than the contract asks for.
    spec = contract.build_models(ALL_TASKS)[contract.ATTRIBUTES]
    with pytest.raises(ContractMismatch, match="output names") as info:
        check_against_contract(exported[contract.ATTRIBUTES], spec)
    assert "build/export_onnx.py" in str(info.value)
    with pytest.raises(ContractMismatch, match="no such ONNX file"):
        check_against_contract(exported[contract.DETECTOR].with_name("missing.onnx"), contract.MODELS[contract.DETECTOR])


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch(exported, batch):
    rng = np.random.default_rng(batch)
    for name, path in exported.items():
        spec = contract.MODELS[name]
        session = make_session(path)
        (inp,) = spec.inputs
        frame = iter((contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH))
        x = rng.integers(0, 256, (batch, *(next(frame) if d == -1 else d for d in inp.dims)), dtype=np.uint8)
        outs = session.run([o.name for o in spec.outputs], {inp.name: x})
        for o, value in zip(spec.outputs, outs):
            locations = contract.detector_locations()  # the only variable output dim
            assert value.shape == (batch, *(locations if d == -1 else d for d in o.dims)), o.name
            assert value.dtype == np.float32


def test_detector_parity_on_astronaut(net, exported, astronaut):
    frame, _ = astronaut
    scores, boxes, _ = make_session(exported[contract.DETECTOR]).run(None, {contract.DETECTOR_IMAGE: frame})
    assert scores.std() > 1e-2 and boxes.std() > 0.1  # outputs depend on the pixels: parity is not vacuous
    report = parity_report(net, exported[contract.DETECTOR], frame)
    assert report[contract.DETECTOR_SCORES] < 1e-4
    assert report[contract.DETECTOR_BOXES] < 1e-3
    assert report[contract.DETECTOR_LANDMARKS] < 1e-3
    assert parity(net, exported[contract.DETECTOR], frame) == max(report.values())


def test_attributes_parity_on_astronaut(net, exported, astronaut):
    _, crops = astronaut
    session = make_session(exported[contract.ATTRIBUTES])
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {contract.CROPS: crops})))
    assert np.ptp(out[contract.AGE]) > 0.01 and np.ptp(out[contract.HEAD_POSE], axis=0).min() > 0.01  # not vacuous
    report = parity_report(net, exported[contract.ATTRIBUTES], crops)
    assert set(report) == {t.name for t in contract.attribute_outputs()}
    for name in (contract.GENDER, contract.EXPRESSION, contract.SMILE):
        assert report[name] < 1e-4, name
    for name in (contract.AGE, contract.AGE_STD, contract.HEAD_POSE):  # years / degrees
        assert report[name] < 1e-3, name


def test_attribute_outputs_are_well_formed(exported, astronaut):
    _, crops = astronaut
    session = make_session(exported[contract.ATTRIBUTES])
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {contract.CROPS: crops})))
    assert ((out[contract.AGE] >= contract.AGE_MIN) & (out[contract.AGE] <= contract.AGE_MAX)).all()
    assert (out[contract.AGE_STD] >= 0).all()
    np.testing.assert_allclose(out[contract.EXPRESSION].sum(axis=1), 1.0, rtol=1e-5)
    for name in (contract.GENDER, contract.SMILE):
        assert ((out[name] >= 0) & (out[name] <= 1)).all()


def test_optional_tasks_export(tmp_path):
    torch.manual_seed(1)
    model = OmniFaceNet(tasks=ALL_TASKS, width=0.25).eval()
    path = export_graph(model, contract.ATTRIBUTES, tmp_path / "attributes.onnx")
    spec = contract.build_models(ALL_TASKS)[contract.ATTRIBUTES]
    check_against_contract(path, spec)
    crops = np.random.default_rng(0).integers(0, 256, (2, contract.CROP_SIZE, contract.CROP_SIZE, 3), dtype=np.uint8)
    report = parity_report(model, path, crops)
    assert set(report) >= {contract.GLASSES, contract.ACTION_UNIT_PROBS}
    assert report[contract.GLASSES] < 1e-4 and report[contract.ACTION_UNIT_PROBS] < 1e-4


def test_make_session_settings(exported):
    session = make_session(exported[contract.DETECTOR], threads=2)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ValueError):
        make_session(exported[contract.DETECTOR], threads=0)


@pytest.mark.parametrize("name", [contract.DETECTOR, contract.ATTRIBUTES])
def test_committed_graphs_match_contract(name):
    path = REPO / "model_repository" / name / "1" / "model.onnx"
    if not path.exists():
        pytest.skip(f"{path} not exported yet (python build/export_onnx.py --random-init)")
    check_against_contract(path, contract.MODELS[name])
    assert path.stat().st_size < 10e6
