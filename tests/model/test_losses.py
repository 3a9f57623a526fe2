"""Losses and multi-task methods against values computed by hand: elementwise losses,
CORAL encoding, masking with zero gradients, uncertainty weighting, MT-CP, ReSup and
distribution matching."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omniface import contract  # noqa: E402
from omniface.training import losses as L  # noqa: E402
from omniface.training.distribution_matching import DistributionMatching, match_loss, relation_matrix  # noqa: E402
from omniface.training.resup import BetaMixture, ReSup, similarity  # noqa: E402
from omniface.training.weighting import MTCPWeighting, UncertaintyWeighting  # noqa: E402

pytestmark = pytest.mark.model
torch.set_num_threads(1)


def f(x):
    """A float of a tensor or number (detached: no autograd warning)."""
    return float(x.detach()) if torch.is_tensor(x) else float(x)
LN2 = math.log(2.0)


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


# ------------------------------------------------------------------ elementwise losses


def test_focal_and_quality_focal_by_hand():
    # p = 0.5: focal(target 1) = alpha * (1 - 0.5)^2 * ln 2; target 0 uses 1 - alpha.
    got = L.focal_loss(t(0.0, 0.0), t(1.0, 0.0), alpha=0.25, gamma=2.0)
    assert got.tolist() == pytest.approx([0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2], rel=1e-6)
    # QFL, q = 0.8, p = 0.5: |0.8 - 0.5|^2 * BCE = 0.09 * ln 2 (BCE at p = 0.5 is ln 2 for any q).
    assert f(L.quality_focal_loss(t(0.0), t(0.8), beta=2.0)) == pytest.approx(0.09 * LN2, rel=1e-6)
    # a perfectly calibrated prediction costs nothing
    logit = math.log(0.3 / 0.7)
    assert f(L.quality_focal_loss(t(logit), t(0.3))) == pytest.approx(0.0, abs=1e-9)


def test_giou_and_diou_by_hand():
    pred, target = t(0, 0, 2, 2)[None], t(1, 1, 3, 3)[None]
    # inter 1, union 7, hull 9: GIoU = 1/7 - 2/9
    assert f(L.giou_loss(pred, target)) == pytest.approx(1 - (1 / 7 - 2 / 9), rel=1e-5)
    # centres 2 apart squared (1+1), enclosing diagonal^2 = 18
    assert f(L.diou_loss(pred, target)) == pytest.approx(1 - 1 / 7 + 2 / 18, rel=1e-5)
    assert f(L.giou_loss(target, target)) == pytest.approx(0.0, abs=1e-6)


def test_smooth_l1_and_wing_by_hand():
    assert L.smooth_l1(t(0.5, -2.0), beta=1.0).tolist() == pytest.approx([0.125, 1.5])
    c = 1.0 - 1.0 * math.log(1 + 1.0 / 0.2)
    assert L.wing_loss(t(0.5, -2.0), w=1.0, eps=0.2).tolist() == pytest.approx([math.log(3.5), 2.0 - c], rel=1e-6)


def test_coral_targets_and_loss():
    y = L.coral_targets(t(1, 3, 100))
    assert y.shape == (3, contract.AGE_RANKS)
    assert y[0].sum() == 0  # age 1 is not > AGE_MIN
    assert y[1].tolist()[:3] == [1, 1, 0]  # 3 > 1, 3 > 2, not 3 > 3
    assert y[2].sum() == contract.AGE_RANKS  # 100 > 99
    zeros = torch.zeros(2, contract.AGE_RANKS)
    assert L.coral_loss(zeros, t(30, 60)).tolist() == pytest.approx([contract.AGE_RANKS * LN2] * 2, rel=1e-6)
    assert L.coral_loss(zeros, t(30, 60), "mean").tolist() == pytest.approx([LN2] * 2, rel=1e-6)


# ------------------------------------------------------------------ masking


def test_masked_mean_by_hand_and_empty_mask_is_unconnected():
    v = t(1.0, 2.0, 3.0).requires_grad_()
    m = torch.tensor([True, False, True])
    assert f(L.masked_mean(v, m).detach()) == pytest.approx(2.0)
    assert f(L.masked_mean(v, m, t(0.5, 9.0, 1.0)).detach()) == pytest.approx((0.5 + 3.0) / 2)
    empty = L.masked_mean(v, torch.zeros(3, dtype=torch.bool))
    assert f(empty) == 0.0 and not empty.requires_grad


def _heads_net():
    """Stand-in with one linear head per attribute task on shared features."""
    torch.manual_seed(0)
    sizes = {"age": contract.AGE_RANKS, "gender": 1, "expression": 7, "smile": 1, "head_pose": 3, "glasses": 1,
             "action_units": len(contract.ACTION_UNITS)}
    trunk = torch.nn.Linear(8, 16)
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(16, n) for k, n in sizes.items()})

    def forward(x):
        h = torch.relu(trunk(x))
        out = {}
        for k, head in heads.items():
            y = head(h)
            out[L.OUTPUT_KEYS[k]] = y.squeeze(1) if sizes[k] == 1 else y
        return out

    return trunk, heads, forward


def _labels(n):
    return {"age": torch.full((n,), 30.0), "gender": torch.ones(n), "expression": torch.full((n,), 3, dtype=torch.long),
            "smile": torch.ones(n), "head_pose": torch.zeros(n, 3), "glasses": torch.zeros(n),
            "action_units": torch.zeros(n, len(contract.ACTION_UNITS))}


def test_missing_labels_give_zero_loss_and_zero_gradient():
    trunk, heads, forward = _heads_net()
    n = 4
    mask = {k: torch.zeros(n, dtype=torch.bool) for k in heads}
    mask["age"][:2] = True
    mask["smile"][3] = True
    out = forward(torch.randn(n, 8))
    losses = L.attribute_losses(out, _labels(n), mask)
    assert set(losses) == set(heads)
    for k in ("gender", "expression", "head_pose", "glasses", "action_units"):
        assert f(losses[k]) == 0.0 and not losses[k].requires_grad
    torch.stack(list(losses.values())).sum().backward()
    for k, head in heads.items():
        grads = [p.grad for p in head.parameters()]
        if k in ("age", "smile"):
            assert all(g is not None and g.abs().sum() > 0 for g in grads), k
        else:
            assert all(g is None or g.abs().sum() == 0 for g in grads), k


def test_masked_losses_use_only_labelled_samples():
    _, _, forward = _heads_net()
    with torch.no_grad():
        out = forward(torch.randn(3, 8))
    labels = _labels(3)
    mask = {k: torch.tensor([True, False, True]) for k in labels}
    got = L.attribute_losses(out, labels, mask)
    gender = torch.nn.functional.binary_cross_entropy_with_logits(out["gender_logit"][[0, 2]], labels["gender"][[0, 2]])
    assert f(got["gender"]) == pytest.approx(f(gender), rel=1e-6)
    ce = torch.nn.functional.cross_entropy(out["expression_logits"][[0, 2]], labels["expression"][[0, 2]], reduction="none")
    w = t(0.2, 5.0, 1.0)
    got_w = L.attribute_losses(out, labels, mask, weights={"expression": w})
    assert f(got_w["expression"]) == pytest.approx(f((ce * t(0.2, 1.0)).sum() / 2), rel=1e-6)


def test_detection_losses_without_positives():
    n_loc = 5
    out = {"score_logits": torch.zeros(1, n_loc, requires_grad=True), "boxes": torch.ones(1, n_loc, 4, requires_grad=True),
           "landmarks": torch.zeros(1, n_loc, 10, requires_grad=True)}
    tg = {"positive": torch.zeros(1, n_loc, dtype=torch.bool), "box": torch.zeros(1, n_loc, 4),
          "landmarks": torch.zeros(1, n_loc, 10), "landmark_mask": torch.zeros(1, n_loc, dtype=torch.bool),
          "centres": torch.rand(n_loc, 2) * 32, "strides": torch.full((n_loc,), 8.0)}
    got = L.detection_losses(out, tg, {"score": "focal"})
    # all negatives, p = 0.5: (1 - alpha) * 0.5^2 * ln2 each, normalised by max(num_pos, 1) = 1
    assert f(got["det_score"].detach()) == pytest.approx(n_loc * 0.75 * 0.25 * LN2, rel=1e-6)
    assert f(got["det_box"]) == 0.0 and not got["det_box"].requires_grad
    assert f(got["det_landmarks"]) == 0.0 and not got["det_landmarks"].requires_grad


def test_detection_losses_with_one_positive_by_hand():
    centres, strides = t(12.0, 12.0)[None], t(8.0)
    # predicted distances 1 stride each way -> box (4, 4, 20, 20); target (4, 4, 20, 28)
    out = {"score_logits": torch.zeros(1, 1), "boxes": torch.ones(1, 1, 4), "landmarks": torch.zeros(1, 1, 10)}
    tg = {"positive": torch.ones(1, 1, dtype=torch.bool), "box": t(4, 4, 20, 28)[None, None],
          "landmarks": torch.full((1, 1, 10), 0.5), "landmark_mask": torch.ones(1, 1, dtype=torch.bool),
          "centres": centres, "strides": strides}
    got = L.detection_losses(out, tg, {"score": "qfl", "landmark": "smooth_l1", "smooth_l1_beta": 1.0})
    iou = 256 / 384  # inter 16x16 over union 16x24
    assert f(got["det_score"]) == pytest.approx((iou - 0.5) ** 2 * -(iou * math.log(0.5) + (1 - iou) * math.log(0.5)), rel=1e-5)
    assert f(got["det_box"]) == pytest.approx(1 - iou, rel=1e-5)  # hull == union
    assert f(got["det_landmarks"]) == pytest.approx(10 * 0.5 * 0.25, rel=1e-6)


# ------------------------------------------------------------------ uncertainty weighting


def test_uncertainty_weighting_formula_by_hand():
    uw = UncertaintyWeighting(["det_box", "gender", "smile"])
    with torch.no_grad():
        uw.log_vars["det_box"].fill_(0.5)
        uw.log_vars["gender"].fill_(-0.2)
    losses = {"det_box": t(2.0)[0], "gender": t(3.0)[0], "smile": t(1.0)[0]}
    total = uw(losses, present={"det_box", "gender"})
    want = 0.5 * math.exp(-0.5) * 2.0 + 0.5 * 0.5 + math.exp(0.2) * 3.0 + 0.5 * -0.2
    assert f(total) == pytest.approx(want, rel=1e-6)
    total.backward()
    # d/ds [c e^-s L + s/2] = -c e^-s L + 1/2
    assert f(uw.log_vars["det_box"].grad) == pytest.approx(-0.5 * math.exp(-0.5) * 2.0 + 0.5, rel=1e-6)
    assert uw.log_vars["smile"].grad is None


def test_uncertainty_log_variance_untouched_without_labels():
    uw = UncertaintyWeighting(["gender", "smile"])
    opt = torch.optim.AdamW(uw.parameters(), lr=0.1, weight_decay=0.0)
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        uw({"gender": t(2.0)[0], "smile": t(5.0)[0]}, present={"gender"}).backward()
        opt.step()
    assert f(uw.log_vars["smile"]) == 0.0
    assert f(uw.log_vars["gender"]) != 0.0
    assert "smile" not in {k for k, v in uw.log_vars.items() if v in opt.state}


def test_uncertainty_auto_init_starts_at_the_stationary_point():
    uw = UncertaintyWeighting(["det_box", "age", "smile"], init="auto")
    total = uw({"det_box": t(4.0)[0], "age": t(30.0)[0], "smile": t(1.0)[0]}, present={"det_box", "age"})
    assert f(uw.log_vars["det_box"]) == pytest.approx(math.log(2 * 0.5 * 4.0))
    assert f(uw.log_vars["age"]) == pytest.approx(math.log(2 * 30.0))
    assert f(uw.log_vars["smile"]) == 0.0 and uw.initialised.tolist() == [True, True, False]
    # each present term sits at c e^-s L = 1/2: total = 1/2 + s/2 per task, zero gradient on s
    want = 0.5 + 0.5 * math.log(4.0) + 0.5 + 0.5 * math.log(60.0)
    assert f(total) == pytest.approx(want, rel=1e-6)
    total.backward()
    assert abs(f(uw.log_vars["age"].grad)) < 1e-6
    uw.log_vars["age"].data.fill_(1.0)
    uw({"age": t(5.0)[0]}, present={"age"})
    assert f(uw.log_vars["age"]) == 1.0  # initialised once only


# ------------------------------------------------------------------ MT-CP


def test_mtcp_weights_by_hand():
    w = MTCPWeighting(["a", "b"], period=1)
    proj = lambda v: t(math.expm1(v))[0]  # noqa: E731  loss whose log(1 + L) is v
    total = w({"a": proj(1.0), "b": proj(2.0)}, {"a", "b"})
    assert f(total) == pytest.approx(3.0, rel=1e-6)
    w.end_step()
    assert w.weights() == {"a": 1.0, "b": 1.0}  # no history yet
    total = w({"a": proj(0.5), "b": proj(1.8)}, {"a", "b"})
    assert f(total) == pytest.approx(2.3, rel=1e-6)
    w.end_step()
    big_r = 2.3 / 3.0  # the total's change
    assert w.weights()["a"] == pytest.approx((0.5 / 1.0) / big_r, rel=1e-6)  # fast-decreasing: down-weighted
    assert w.weights()["b"] == pytest.approx((1.8 / 2.0) / big_r, rel=1e-6)  # slow-decreasing: up-weighted
    total = w({"a": proj(0.4), "b": proj(1.5)}, {"a", "b"})
    assert f(total) == pytest.approx(0.4 * 0.5 / big_r + 1.5 * 0.9 / big_r, rel=1e-6)
    # gradient goes through log(1 + L): d/dL [w log(1 + L)] = w / (1 + L)
    x = torch.tensor(3.0, requires_grad=True)
    w({"a": x}, {"a"}).backward()
    assert f(x.grad) == pytest.approx(w.weights()["a"] / 4.0, rel=1e-6)


def test_mtcp_absent_task_keeps_weight_and_state_roundtrip():
    w = MTCPWeighting(["a", "b"], period=1)
    w({"a": t(1.0)[0], "b": t(1.0)[0]}, {"a", "b"}); w.end_step()
    w({"a": t(0.5)[0]}, {"a"}); w.end_step()
    assert w.weights()["b"] == 1.0
    w2 = MTCPWeighting(["a", "b"], period=1)
    w2.load_state_dict(w.state_dict())
    assert w2.weights() == w.weights() and w2.prev == w.prev


# ------------------------------------------------------------------ ReSup


def test_resup_similarity_is_probability_of_label():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert similarity(p, np.array([0, 1])).tolist() == pytest.approx([0.7, 0.3])


def test_resup_noisy_samples_get_lower_weight():
    rng = np.random.default_rng(0)
    clean = rng.beta(8, 2, size=700)   # predictions agree with clean labels
    noisy = rng.beta(2, 6, size=300)   # and disagree with flipped ones
    resup = ReSup(1000, warmup_steps=0)
    resup.observe(np.arange(1000), np.concatenate([clean, noisy]))
    assert resup.weights(np.array([0.1])).tolist() == [1.0]  # before the first fit
    assert resup.maybe_refit(step=10, epoch=1)
    w = resup.weights(np.concatenate([clean, noisy]))
    assert w[:700].mean() > 0.85
    assert w[700:].mean() < 0.25
    assert w[:700].mean() - w[700:].mean() > 0.6
    mix = resup.mixture
    assert mix.means.max() > 0.7 and mix.means.min() < 0.35
    assert mix.weights[int(np.argmax(mix.means))] == pytest.approx(0.7, abs=0.08)


def test_resup_state_roundtrip_and_refit_once_per_epoch():
    r = ReSup(10)
    r.observe([1, 2, 3, 4, 5], [0.9, 0.8, 0.95, 0.1, 0.2])
    assert not r.maybe_refit(step=3, epoch=0)
    assert r.maybe_refit(step=3, epoch=1) and not r.maybe_refit(step=4, epoch=1)
    r2 = ReSup(10)
    r2.load_state_dict(r.state_dict())
    assert np.allclose(r2.weights([0.3, 0.9]), r.weights([0.3, 0.9]))
    assert isinstance(r2.mixture, BetaMixture)


# ------------------------------------------------------------------ distribution matching


def test_relation_matrix_from_per_class_prior():
    r = relation_matrix("expression", "smile", {"happy": 0.9, "default": 0.07})
    assert r.shape == (7, 2)
    happy = contract.EXPRESSIONS.index("happy")
    assert r[happy].tolist() == pytest.approx([0.1, 0.9])
    assert r[0].tolist() == pytest.approx([0.93, 0.07])
    with pytest.raises(ValueError):
        relation_matrix("expression", "smile", {"joy": 0.9})


def test_distribution_matching_value_by_hand():
    out = {"expression_logits": torch.zeros(1, 7), "smile_logit": torch.zeros(1)}
    dm = DistributionMatching([{"a": "expression", "b": "smile", "relation": {"happy": 0.9, "default": 0.07}}])
    q = (0.9 + 6 * 0.07) / 7  # uniform expression -> P(smile)
    kl = q * math.log(q / 0.5) + (1 - q) * math.log((1 - q) / 0.5)
    assert f(dm(out)) == pytest.approx(kl, rel=1e-5)
    sym = DistributionMatching(dm_pairs := [{"a": "expression", "b": "smile", "relation": {"happy": 0.9, "default": 0.07}}],
                               symmetric=True)
    kl_rev = 0.5 * math.log(0.5 / q) + 0.5 * math.log(0.5 / (1 - q))
    assert f(sym(out)) == pytest.approx(0.5 * (kl + kl_rev), rel=1e-5)
    assert dm_pairs[0]["a"] == "expression"


def test_distribution_matching_gradient_flows_on_unlabelled_samples():
    expr = torch.randn(4, 7, requires_grad=True)
    smile = torch.randn(4, requires_grad=True)
    r = relation_matrix("expression", "smile", {"happy": 0.9, "default": 0.07})
    p_a = torch.softmax(expr, 1)
    p_b = torch.stack([1 - torch.sigmoid(smile), torch.sigmoid(smile)], 1)
    match_loss(p_a, p_b, r).backward()  # no labels anywhere
    assert (expr.grad.abs().sum(1) > 0).all() and (smile.grad.abs() > 0).all()
    expr.grad = smile.grad = None
    match_loss(torch.softmax(expr, 1), torch.stack([1 - torch.sigmoid(smile), torch.sigmoid(smile)], 1), r,
               stop_grad="a").backward()
    assert expr.grad is None and (smile.grad.abs() > 0).all()
