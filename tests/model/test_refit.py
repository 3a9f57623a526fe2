"""The head refit (omniface.training.refit): it rewrites only the heads' initializers of
an attributes graph, the written graph reproduces the refit heads through its own
decoding, outputs of heads that were not replaced stay bit for bit the same, and a head
trained on frozen features reads what they carry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from omniface import contract  # noqa: E402
from omniface.data.synthetic import write_fixture  # noqa: E402
from omniface.nn.model import OmniFaceNet  # noqa: E402
from omniface.training import refit  # noqa: E402

pytestmark = pytest.mark.model
GRAPH = Path(__file__).resolve().parents[2] / "model_repository" / "attributes" / "1" / "model.onnx"


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def test_graph_structure_the_refit_relies_on() -> None:
    model = onnx.load(GRAPH)
    name = refit.head_input(model)
    assert next(n for n in model.graph.node if name in n.output).op_type == "Concat"  # pooled s16 + s32
    weight = _initializers(GRAPH)[refit._coral_weight_name(model)]
    assert weight.shape == (128, 1)  # CORAL's w, exported transposed


def test_a_head_on_frozen_features_learns_what_they_carry() -> None:
    rng = np.random.default_rng(0)
    features = np.abs(rng.normal(size=(3000, 384))).astype(np.float32)
    direction = rng.normal(size=384).astype(np.float32)
    score = (features - features.mean(0)) @ direction / np.sqrt(384)
    labels = (score > 0).astype(np.float32)
    net = OmniFaceNet(tasks=("gender",)).eval()
    refit.train_heads(net, "gender", features[:2400], labels[:2400], refit.RefitSettings(steps=400, batch=128),
                      progress=False)
    out = refit._graph_outputs(net, features[2400:])
    assert np.mean((out[contract.GENDER][:, 0] > 0.5) == (labels[2400:] > 0.5)) > 0.9


@pytest.fixture(scope="module")
def refit_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("refit")
    root = write_fixture(work / "data", seed=3)
    graph = work / "in.onnx"
    shutil.copy2(GRAPH, graph)
    out = work / "out.onnx"
    settings = refit.RefitSettings(copies=2, steps=20, batch=16, keep="always")
    report = refit.refit_heads(graph, out, ("age", "expression", "head_pose"), settings, root=root,
                               work_dir=work / "work", progress=False)
    return graph, out, report


def test_refit_rewrites_only_the_chosen_heads(refit_run) -> None:
    graph, out, report = refit_run
    assert set(report.tasks) == {"age", "expression", "head_pose"}
    assert all(r.kept_refit and r.train_crops > 0 for r in report.tasks.values())
    before, after = _initializers(graph), _initializers(out)
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    coral_w = refit._coral_weight_name(onnx.load(graph))
    expected = {coral_w} | {n for n in before if n.startswith(("net.heads.age.", "net.heads.expression.",
                                                                   "net.heads.head_pose."))}
    assert changed == expected
    # gender and smile were not refit: their outputs are bit for bit the served ones
    assert report.unchanged_outputs_max_abs_change == 0.0
    assert "| head_pose |" in refit.format_report(report)


def test_keep_better_keeps_the_served_head_without_an_inner_holdout(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(refit, "INNER_FRACTION", 0.0)
    root = write_fixture(tmp_path / "data", seed=4)
    out = tmp_path / "out.onnx"
    report = refit.refit_heads(GRAPH, out, ("smile",), refit.RefitSettings(copies=1, steps=5, batch=8), root=root,
                               work_dir=tmp_path / "work", progress=False)
    assert report.tasks["smile"].inner_images == 0 and not report.tasks["smile"].kept_refit
    before, after = _initializers(GRAPH), _initializers(out)
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_unknown_keep_policy_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="keep"):
        refit.refit_heads(GRAPH, tmp_path / "x.onnx", settings=refit.RefitSettings(keep="sometimes"))
