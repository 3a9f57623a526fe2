"""OmniFaceNet: output shapes and layout, CORAL decoding and rank consistency,
optional heads, checkpoints."""

import math

import numpy as np

import pytest

torch = pytest.importorskip("torch")

from omniface import contract  # noqa: E402
from omniface.nn import OmniFaceNet, coral_age, count_macs, level_shapes, load_model, save_checkpoint  # noqa: E402
from omniface.nn.model import CoralHead  # noqa: E402

pytestmark = pytest.mark.model

ALL_TASKS = tuple(t.name for t in contract.TASKS)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return OmniFaceNet().eval()


@pytest.mark.parametrize("size", [(480, 640), (320, 320), (256, 384), (64, 96)])
def test_detect_shapes(net, size):
    h, w = size
    with torch.no_grad():
        out = net.detect(torch.randn(2, 3, h, w))
    locations = contract.detector_locations(h, w)
    assert set(out) == {"score_logits", "boxes", "landmarks"}
    assert out["score_logits"].shape == (2, locations)
    assert out["boxes"].shape == (2, locations, 4)
    assert out["landmarks"].shape == (2, locations, 2 * contract.NUM_LANDMARKS)
    assert (out["boxes"] >= 0).all()
    assert all(torch.isfinite(v).all() for v in out.values())


def test_default_size_matches_contract(net):
    with torch.no_grad():
        out = net.detect(torch.randn(1, 3, contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH))
    spec = contract.MODELS[contract.DETECTOR]
    locations = contract.detector_locations()  # the contract's -1: the count follows the input size

    def dims(name: str) -> tuple[int, ...]:
        return tuple(locations if d == -1 else d for d in spec.output(name).dims)

    assert tuple(out["score_logits"].shape[1:]) == dims(contract.DETECTOR_SCORES)
    assert tuple(out["boxes"].shape[1:]) == dims(contract.DETECTOR_BOXES)
    assert tuple(out["landmarks"].shape[1:]) == dims(contract.DETECTOR_LANDMARKS)


def test_location_layout_is_stride_major_then_row_major(net):
    """Index = level offset + y * fw + x, levels in DETECTOR_STRIDES order."""
    h, w = 128, 192
    maps = []
    hook = net.head.register_forward_hook(lambda m, args, out: maps.append(out))
    try:
        with torch.no_grad():
            out = net.detect(torch.randn(2, 3, h, w))
    finally:
        hook.remove()
    shapes = level_shapes(h, w)
    assert [tuple(s.shape[-2:]) for s, _, _ in maps] == shapes
    offset = 0
    for (fh, fw), (s, b, lm) in zip(shapes, maps):
        for y, x in [(0, 0), (0, fw - 1), (fh - 1, 0), (fh // 2, fw // 3), (fh - 1, fw - 1)]:
            i = offset + y * fw + x
            torch.testing.assert_close(out["score_logits"][:, i], s[:, 0, y, x])
            torch.testing.assert_close(out["boxes"][:, i], b[:, :, y, x])
            torch.testing.assert_close(out["landmarks"][:, i], lm[:, :, y, x])
        offset += fh * fw
    assert offset == contract.detector_locations(h, w) == out["score_logits"].shape[1]


def test_detect_rejects_sizes_not_divisible_by_32(net):
    with pytest.raises(ValueError, match="divisible by 32"):
        net.detect(torch.randn(1, 3, 100, 128))


def test_attribute_shapes_default_tasks(net):
    with torch.no_grad():
        out = net.attributes(torch.randn(3, 3, contract.CROP_SIZE, contract.CROP_SIZE))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "age_logits": (3, contract.AGE_RANKS),
        "gender_logit": (3,),
        "expression_logits": (3, len(contract.EXPRESSIONS)),
        "smile_logit": (3,),
        "head_pose": (3, 3),
    }


def test_optional_heads_only_when_requested():
    assert "glasses" not in OmniFaceNet().heads and "action_units" not in OmniFaceNet().heads
    crops = torch.randn(2, 3, contract.CROP_SIZE, contract.CROP_SIZE)
    full = OmniFaceNet(tasks=ALL_TASKS).eval()
    with torch.no_grad():
        out = full.attributes(crops)
    assert out["glasses_logit"].shape == (2,)
    assert out["au_logits"].shape == (2, len(contract.ACTION_UNITS))
    only = OmniFaceNet(tasks=("smile", "glasses")).eval()
    with torch.no_grad():
        out = only.attributes(crops)
    assert set(out) == {"smile_logit", "glasses_logit"}
    # Task order follows the contract, whatever order the caller gave.
    assert OmniFaceNet(tasks=("head_pose", "age")).tasks == ("age", "head_pose")


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown tasks"):
        OmniFaceNet(tasks=("age", "beauty"))


def test_forward_is_the_union(net):
    frames = torch.randn(1, 3, 64, 64)
    crops = torch.randn(2, 3, contract.CROP_SIZE, contract.CROP_SIZE)
    with torch.no_grad():
        out = net(frames=frames, crops=crops)
        assert set(out) == set(net.detect(frames)) | set(net.attributes(crops))
        assert set(net(crops=crops)) == set(net.attributes(crops))
    with pytest.raises(ValueError):
        net()


def test_training_step_reaches_every_parameter():
    torch.manual_seed(0)
    model = OmniFaceNet(tasks=ALL_TASKS, width=0.5).train()
    out = model(frames=torch.randn(2, 3, 64, 96), crops=torch.randn(4, 3, contract.CROP_SIZE, contract.CROP_SIZE))
    sum(v.float().pow(2).mean() for v in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def _randomise(model, gen):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 2.0)


def test_coral_biases_non_increasing_by_construction():
    gen = torch.Generator().manual_seed(1)
    head = CoralHead(16, 8)
    for _ in range(20):
        _randomise(head, gen)
        b = head.biases()
        assert b.shape == (contract.AGE_RANKS,)
        assert (b[1:] <= b[:-1]).all()


def test_coral_rank_consistency_random_inputs_and_weights():
    """p_k = sigmoid(logit_k) never increases with k, whatever the weights and input."""
    gen = torch.Generator().manual_seed(2)
    model = OmniFaceNet(tasks=("age",), width=0.25).eval()
    for trial in range(4):
        _randomise(model.heads, gen)
        crops = torch.randn(8, 3, contract.CROP_SIZE, contract.CROP_SIZE, generator=gen) * (1 + trial)
        with torch.no_grad():
            p = torch.sigmoid(model.attributes(crops)["age_logits"])
        assert (p[:, 1:] <= p[:, :-1]).all()
        age, std = coral_age(model.attributes(crops)["age_logits"])
        assert ((age >= contract.AGE_MIN) & (age <= contract.AGE_MAX)).all()
        assert ((std >= 0) & (std <= (contract.AGE_MAX - contract.AGE_MIN) / 2 + 1e-3)).all()


def test_coral_age_hand_computed():
    # p = (0.9, 0.5, 0.1): age = 1 + 1.5; P(j) = (0.1, 0.4, 0.4, 0.1) -> var 0.65.
    logits = torch.logit(torch.tensor([[0.9, 0.5, 0.1]], dtype=torch.float64))
    age, std = coral_age(logits)
    assert age.shape == (1,) and std.shape == (1,)
    assert age.item() == pytest.approx(contract.AGE_MIN + 1.5)
    assert std.item() == pytest.approx(math.sqrt(0.65))

    # All p = 0.5 over the real K: half the mass at AGE_MIN, half at AGE_MAX.
    age, std = coral_age(torch.zeros(2, contract.AGE_RANKS))
    assert age.tolist() == pytest.approx([contract.AGE_MIN + contract.AGE_RANKS / 2] * 2)
    assert std.tolist() == pytest.approx([contract.AGE_RANKS / 2] * 2, rel=1e-5)

    # Confident: p_k = 1 for the first 29 ranks, 0 after -> age 30, std ~ 0.
    logits = torch.full((1, contract.AGE_RANKS), -40.0)
    logits[0, :29] = 40.0
    age, std = coral_age(logits)
    assert age.item() == pytest.approx(30.0)
    assert std.item() < 1e-3

    # Inconsistent ranks (p increasing) are clamped and renormalised: P = (0.5, 0, 0.5).
    age, std = coral_age(torch.logit(torch.tensor([[0.2, 0.8]], dtype=torch.float64)))
    assert age.item() == pytest.approx(contract.AGE_MIN + 1.0)
    assert std.item() == pytest.approx(1.0)


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(3)
    model = OmniFaceNet(tasks=("age", "glasses"), width=0.5)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, path, epoch=7)
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) == {"model", "config", "epoch"}
    assert ckpt["config"]["tasks"] == ["age", "glasses"] and ckpt["config"]["width"] == 0.5
    loaded = load_model(path)
    assert not loaded.training and loaded.tasks == ("age", "glasses") and loaded.width == 0.5
    crops = torch.randn(2, 3, contract.CROP_SIZE, contract.CROP_SIZE)
    model.eval()
    with torch.no_grad():
        a, b = model.attributes(crops), loaded.attributes(crops)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_load_model_refuses_other_files(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"weights": {}}, path)
    with pytest.raises(ValueError, match="not an OmniFaceNet checkpoint"):
        load_model(path)


def test_compute_budget(net):
    """The detector stays in the ~0.5 GMAC class at VGA (SCRFD-0.5GF-like); crops are cheap."""
    det = count_macs(net, net.detect, torch.randn(1, 3, contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH))
    attr = count_macs(net, net.attributes, torch.randn(1, 3, contract.CROP_SIZE, contract.CROP_SIZE))
    assert 0.2e9 < det < 0.7e9
    assert attr < 0.05e9


def test_split_batchnorm_keeps_frame_and_crop_statistics_apart(tmp_path) -> None:
    """model.split_bn: detect() and embed() update and use their own trunk BatchNorm
    statistics; each exported graph folds its own domain's; checkpoints round-trip."""
    from omniface.export.onnx import export_graph
    from omniface.nn.blocks import DomainBatchNorm2d
    from omniface.nn.model import build_model
    from omniface.runtime import make_session

    torch.manual_seed(0)
    net = OmniFaceNet(split_bn=True)
    assert net._domain_norms and all(isinstance(m, DomainBatchNorm2d) for m in net._domain_norms)
    assert not any(type(m) is torch.nn.BatchNorm2d for m in net.trunk.modules())
    net.train()
    frames, crops = torch.randn(2, 3, 96, 128) * 3 + 2, torch.randn(6, 3, 112, 112)
    for _ in range(3):
        net.detect(frames)
        net.attributes(crops)
    stem = net._domain_norms[0]
    assert not torch.allclose(stem.running_mean, stem.crops_running_mean)
    net.eval()
    images = (np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3))).astype(np.uint8)
    path = export_graph(net, contract.ATTRIBUTES, tmp_path / "attributes.onnx")
    session = make_session(path, threads=1)
    served = session.run([contract.GENDER], {contract.CROPS: images})[0]
    from omniface.export.onnx import graph_for

    graph = graph_for(net, contract.ATTRIBUTES)
    gender = graph.output_names.index(contract.GENDER)
    with torch.no_grad():
        expected = graph(torch.from_numpy(images))[gender].numpy()
        for norm in net._domain_norms:  # the frames' statistics would give something else
            norm.crops_running_mean, norm.running_mean = norm.running_mean, norm.crops_running_mean
            norm.crops_running_var, norm.running_var = norm.running_var, norm.crops_running_var
        swapped = graph(torch.from_numpy(images))[gender].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert np.abs(served - swapped).max() > 1e-4
    rebuilt = build_model(net.config)
    rebuilt.load_state_dict(net.state_dict())
    assert rebuilt.split_bn and net.config["split_bn"] is True
