"""Target assignment on hand-built boxes, evaluation metrics by hand, the config, and the
trainer on generated data: the loss falls, resume is exact, a signal checkpoints, the
CLI scripts run, and the evaluation runs through the served post-processing."""

import json
import math
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omniface import contract  # noqa: E402
from omniface.data.synthetic import aligned_attribute_set, write_fixture  # noqa: E402
from omniface.data.mixed import TrainStream  # noqa: E402
from omniface.training.config import load_config  # noqa: E402
from omniface.training.evaluate import average_precision, attribute_metrics, landmark_nme, match_detections  # noqa: E402
from omniface.training.targets import anchor_points, assign_atss, build_targets  # noqa: E402

pytestmark = pytest.mark.model
torch.set_num_threads(1)


def f(x):
    """A float of a tensor or number (detached: no autograd warning)."""
    return float(x.detach()) if torch.is_tensor(x) else float(x)
REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ targets


def _grid(h=32, w=32):
    return anchor_points(h, w)


def test_anchor_points_layout():
    c, s, lv = anchor_points(64, 96)
    assert len(c) == contract.detector_locations(64, 96)
    assert c[0].tolist() == [4.0, 4.0] and c[1].tolist() == [12.0, 4.0] and c[12].tolist() == [4.0, 12.0]
    first16 = (64 // 8) * (96 // 8)
    assert s[first16].item() == 16 and c[first16].tolist() == [8.0, 8.0] and lv[first16].item() == 1


def test_atss_single_face_by_hand():
    """A face equal to the stride-8 anchor box (16 px, anchor sizes 16/32/64) at cell (1, 1).
    Candidate IoUs: 1 (the cell), 1/3 x4 (edge neighbours), 1/7 x4 (corners), stride 16:
    0.25, 0.176 x2, 0.127; stride 32: 0.0625 -> mean + std = 0.49: one positive."""
    c, s, lv = _grid()
    gt = torch.tensor([[4.0, 4.0, 20.0, 20.0]])
    assigned, iou = assign_atss(gt, c, s, lv, topk=9, anchor_sizes=(16, 32, 64))
    assert torch.nonzero(assigned >= 0).squeeze(1).tolist() == [5]  # y=1, x=1 on stride 8
    assert iou[5].item() == pytest.approx(1.0)
    tg = build_targets(gt, torch.zeros(1, 5, 2), torch.tensor([False]), c, s, lv, topk=9, anchor_sizes=(16, 32, 64))
    assert tg["ltrb"][5].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert tg["box"][5].tolist() == [4, 4, 20, 20]
    assert not tg["landmark_mask"].any()  # no landmark annotation: masked


def test_atss_large_face_goes_to_coarse_level_and_centres_inside():
    c, s, lv = _grid(128, 128)
    gt = torch.tensor([[10.0, 6.0, 110.0, 120.0]])
    assigned, _ = assign_atss(gt, c, s, lv, anchor_sizes=(24, 90, 360))
    pos = assigned >= 0
    assert pos.any()
    assert set(s[pos].tolist()) <= {16.0, 32.0}
    inside = (c[pos, 0] > 10) & (c[pos, 0] < 110) & (c[pos, 1] > 6) & (c[pos, 1] < 120)
    assert inside.all()


def test_atss_tiny_face_fallback_and_targets():
    c, s, lv = _grid()
    gt = torch.tensor([[7.0, 7.0, 9.0, 9.0]])  # 2 px face between centres (4, 4) and (12, 12)... contains none
    assigned, _ = assign_atss(gt, c, s, lv, fallback=False)
    assert not (assigned >= 0).any()
    assigned, _ = assign_atss(gt, c, s, lv, fallback=True)
    assert (assigned >= 0).sum() == 1
    loc = int(torch.nonzero(assigned >= 0))
    assert s[loc] == 8
    lm = torch.tensor([[[7.5, 7.5], [8.5, 7.5], [8.0, 8.0], [7.5, 8.5], [8.5, 8.5]]])
    tg = build_targets(gt, lm, torch.tensor([True]), c, s, lv)
    assert tg["landmark_mask"][loc]
    expect = ((lm[0] - c[loc]) / 8.0).reshape(-1)
    assert torch.allclose(tg["landmarks"][loc], expect)
    assert (tg["ltrb"][loc] >= 0).all()  # clamped to the network's non-negative range


def test_atss_overlap_keeps_highest_iou_face():
    c, s, lv = _grid()
    a = torch.tensor([4.0, 4.0, 20.0, 20.0])  # IoU 1 with cell 5's 16 px anchor
    b = torch.tensor([2.0, 2.0, 26.0, 26.0])  # also contains cell 5's centre, IoU 0.44
    assigned, _ = assign_atss(torch.stack([a, b]), c, s, lv, anchor_sizes=(16, 32, 64))
    assert assigned[5].item() == 0


# ------------------------------------------------------------------ metrics


def test_average_precision_by_hand():
    # 3 faces; detections by score: hit, miss, hit, (ignored), miss
    scores = [0.9, 0.8, 0.7, 0.65, 0.6]
    flags = [1, 0, 1, -1, 0]
    # precision at recall 1/3: 1; at 2/3: 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3
    assert average_precision(scores, flags, 3) == pytest.approx(1 / 3 + 2 / 9)
    assert average_precision([], [], 2) == 0.0 and math.isnan(average_precision([0.5], [0], 0))


def test_match_detections_ignores_faces_outside_the_set():
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], float)
    dets = np.array([[0, 0, 10, 10], [21, 21, 40, 40], [0, 0, 10, 11], [50, 50, 60, 60]], float)
    flags, matched = match_detections(dets, np.array([0.9, 0.8, 0.7, 0.6]), gt, np.array([False, True]))
    assert flags.tolist() == [-1, 1, -1, 0]  # face 0 is not in this set: its matches are ignored
    flags, matched = match_detections(dets, np.array([0.9, 0.8, 0.7, 0.6]), gt, np.array([True, True]))
    assert flags.tolist() == [1, 1, 0, 0] and matched.tolist() == [0, 1, -1, -1]  # a duplicate is a false positive


def test_landmark_nme_and_attribute_metrics_by_hand():
    gt = np.zeros((5, 2))
    pred = np.tile([3.0, 4.0], (5, 1))
    assert landmark_nme(pred, gt, np.array([0, 0, 10, 40])) == pytest.approx(5.0 / 20.0)
    from omniface.data import FaceRecord

    recs = [FaceRecord(Path("a"), "utkface", "a", {"age": 30.0, "gender": 1.0}),
            FaceRecord(Path("b"), "utkface", "b", {"age": 50.0, "gender": 0.0}),
            FaceRecord(Path("c"), "genki4k", "c", {"smile": 1.0, "head_pose": np.array([10.0, 0.0, -5.0])})]
    pred = {"age": np.array([[33.0], [45.0], [20.0]]), "age_std": np.ones((3, 1)), "gender": np.array([[0.9], [0.7], [0.5]]),
            "smile": np.array([[0.2], [0.9], [0.8]]), "head_pose": np.array([[0, 0, 0], [0, 0, 0], [12.0, 1.0, -5.0]])}
    m = attribute_metrics(pred, recs)
    assert m["age_mae"] == pytest.approx(4.0) and m["gender_acc"] == pytest.approx(0.5)
    assert m["smile_acc"] == 1.0 and m["pose_mae"] == pytest.approx({"yaw": 2.0, "pitch": 1.0, "roll": 0.0})
    recs = [FaceRecord(Path(str(i)), "fer2013", str(i), {"expression": k}) for i, k in enumerate([3, 3, 0, 5])]
    probs = np.eye(7)[[3, 0, 0, 3]]
    m = attribute_metrics({"expression": probs}, recs)
    assert m["expression_acc"] == 0.5
    assert m["expression_recall"] == {"angry": 1.0, "happy": 0.5, "sad": 0.0}


# ------------------------------------------------------------------ config


def test_config_file_extends_and_overrides(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('[train]\nmax_steps = 50\n[data]\nshares = { utkface = 1.0 }\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[train]\nlr = 0.5\n')
    cfg = load_config(child, ["train.warmup_steps=3", "data.det_size=[64, 64]", "weighting.method=mtcp"])
    assert cfg["train"]["max_steps"] == 50 and cfg["train"]["lr"] == 0.5 and cfg["train"]["warmup_steps"] == 3
    assert cfg["data"]["shares"] == {"utkface": 1.0} and cfg["data"]["det_size"] == [64, 64]
    assert cfg["weighting"]["method"] == "mtcp"
    with pytest.raises(KeyError):
        load_config(None, ["train.max_stepz=3"])
    for name in ("default", "ablation_mtcp", "ablation_fixed_weights", "ablation_no_resup", "ablation_no_dm", "cpu_smoke"):
        load_config(REPO / "build" / "configs" / f"{name}.toml")


# ------------------------------------------------------------------ trainer


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("data"))


def small_config(root, **over):
    cfg = load_config(None, {
        "data.root": str(root), "data.det_batch": 2, "data.attr_batch": 8, "data.det_size": [64, 64],
        "data.val_fraction": 0.0, "model.width": 0.25, "train.max_steps": 6, "train.warmup_steps": 0,
        "train.threads": 1, "train.log_every": 1, "train.plot_every": 0, "train.lr": 3e-3,
        "train.checkpoint_minutes": 60.0, "data.paste": 0.0,
    })
    for k, v in over.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return cfg


def _trainer(cfg, out, **kw):
    from omniface.training.trainer import Trainer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Trainer(cfg, out, quiet=True, **kw)


def test_short_training_run_total_loss_falls(data_root, tmp_path):
    """The default method (uncertainty weighting, auto-initialised at each term's
    stationary point, so the total starts near sum_t (1/2 + s_t/2) and falls as the
    s_t follow the losses down), ReSup and distribution matching on."""
    cfg = small_config(data_root, **{"train.max_steps": 40, "train.lr": 1e-2})
    tr = _trainer(cfg, tmp_path / "run")
    assert tr.run() == "done"
    totals = [r["total"] for r in tr.history]
    assert len(totals) == 40 and all(math.isfinite(v) for v in totals)
    assert np.mean(totals[-10:]) < np.mean(totals[:10]) - 0.5
    expr = [r["loss_expression"] for r in tr.history if "loss_expression" in r]
    assert np.mean(expr[-10:]) < 0.5 * np.mean(expr[:10])
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"step", "lr", "loss_det_score", "loss_age", "w_age", "logvar_age", "resup_mean_weight"} <= set(header)
    assert len(rows) == 41
    assert tr.resup.mixture is not None  # the FER walk passed an epoch: the mixture was fitted
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 1000
    from omniface.nn import load_model

    net = load_model(tmp_path / "run" / "model.pt")
    assert net.tasks == tuple(contract.DEFAULT_TASKS)


def _states_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_resume_is_exact(data_root, tmp_path):
    cfg = small_config(data_root)
    straight = _trainer(cfg, tmp_path / "a")
    straight.run()
    first = _trainer(small_config(data_root, **{"train.stop_after": 3}), tmp_path / "b")
    assert first.run() == "stopped" and first.step == 3
    resumed = _trainer(small_config(data_root), tmp_path / "b", resume=True)
    assert resumed.step == 3
    assert resumed.run() == "done" and resumed.step == 6
    assert _states_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert _states_equal(straight.weighting.state_dict(), resumed.weighting.state_dict())
    a = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    b = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    strip = lambda rows: [",".join(c for i, c in enumerate(r.split(",")) if i != 1) for r in rows]  # noqa: E731 drop time
    assert strip(a) == strip(b)


def test_signal_saves_checkpoint_and_stops(data_root, tmp_path):
    tr = _trainer(small_config(data_root, **{"train.max_steps": 50}), tmp_path / "sig")
    step = tr.train_step

    def step_then_signal(batch):
        out = step(batch)
        if tr.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    tr.train_step = step_then_signal
    assert tr.run() == "interrupted"
    ckpt = torch.load(tmp_path / "sig" / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["data_position"]["step"] == 2
    assert {"optimizer", "scheduler", "weighting", "resup", "rng"} <= set(ckpt)
    assert signal.getsignal(signal.SIGTERM) is not tr._on_signal


@pytest.mark.parametrize("method", ["mtcp", "fixed"])
def test_other_weightings_train(data_root, tmp_path, method):
    cfg = small_config(data_root, **{"weighting.method": method, "weighting.mtcp_period": 2, "train.max_steps": 4,
                                     "resup.enabled": False, "dm.enabled": False})
    tr = _trainer(cfg, tmp_path / method)
    assert tr.run() == "done"
    assert all(math.isfinite(r["total"]) for r in tr.history)
    if method == "mtcp":
        assert tr.weighting.steps == 4 and tr.weighting.prev


def test_heads_without_labels_get_no_gradient_in_a_step(tmp_path):
    """Generated glasses / AU data only: the age, gender, ... heads stay untouched."""
    recs = aligned_attribute_set(tmp_path / "syn", n=8)
    tasks = ("age", "gender", "glasses", "action_units")
    stream = TrainStream(None, {"synthetic": recs}, det_batch=0, attr_batch=4, shares={"synthetic": 1.0}, tasks=tasks)
    cfg = small_config(tmp_path, **{"model.tasks": list(tasks), "dm.enabled": False})
    tr = _trainer(cfg, tmp_path / "gl", stream=stream)
    before = {k: v.clone() for k, v in tr.model.heads["age"].state_dict().items()}
    logs = tr.train_step(stream[0])
    assert "loss_glasses" in logs and "loss_action_units" in logs and "loss_age" not in logs
    for name in ("age", "gender"):
        assert all(p.grad is None for p in tr.model.heads[name].parameters()), name
    assert all(p.grad is not None for p in tr.model.heads["glasses"].parameters())
    assert _states_equal(before, tr.model.heads["age"].state_dict())
    assert f(tr.weighting.log_vars["age"]) == 0.0 and f(tr.weighting.log_vars["glasses"]) != 0.0


def test_train_and_evaluate_scripts(data_root, tmp_path):
    env = {**os.environ, "OMNIFACE_DATA": str(data_root), "PYTHONWARNINGS": "ignore"}
    sets = ["data.det_batch=1", "data.attr_batch=4", "data.det_size=[64,64]", "model.width=0.25", "train.max_steps=2",
            "train.threads=1", "data.workers=0", "data.val_fraction=0.5", "train.device=\"cpu\""]
    cmd = [sys.executable, str(REPO / "build" / "train.py"), "--config", str(REPO / "build" / "configs" / "default.toml"),
           "--out", str(tmp_path / "cli"), "--quiet"] + [a for s in sets for a in ("--set", s)]
    done = subprocess.run(cmd + ["--set", "train.stop_after=1"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped at step 1/2" in done.stdout
    resume = cmd[:2] + ["--out", str(tmp_path / "cli"), "--resume", "--quiet", "--set", "train.stop_after=0"]
    done = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "done at step 2/2" in done.stdout
    cmd = [sys.executable, str(REPO / "build" / "evaluate.py"), "--checkpoint", str(tmp_path / "cli" / "model.pt"),
           "--out", str(tmp_path / "eval.json"), "--set", "eval.threads=1", "--set", "eval.batch=2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((tmp_path / "eval.json").read_text())
    det = res["detection"]
    assert {"ap50_all", "ap50_easy", "ap50_medium", "ap50_hard", "landmark_nme_box"} <= set(det)
    assert det["images"] >= 1 and 0.0 <= det["ap50_all"] <= 1.0
    attrs = res["attributes"]
    assert {"age_mae", "gender_acc"} <= set(attrs["utkface"]) and "expression_recall" in attrs["fer2013"]
    assert set(attrs["genki4k"]["pose_mae"]) == set(contract.HEAD_POSE_ANGLES)
    assert "ap50_all" in done.stdout


# ------------------------------------------------------------------ targets <-> served decoding


class OracleBackend:
    """Raw detector outputs built from the ground truth with the training targets: what
    a perfect network would emit. Evaluating it checks that targets, the served decode
    (omniface.processing) and the metric agree on every coordinate convention."""

    def __init__(self, records):
        from omniface.processing.image import letterbox

        self.records, self.i, self.letterbox = records, 0, letterbox

    def detect(self, frames):
        from omniface.training.targets import anchor_points, build_targets
        from PIL import Image

        h, w = frames.shape[1:3]
        c, s, lv = anchor_points(h, w)
        outs = []
        for _ in range(len(frames)):
            rec = self.records[self.i]
            self.i += 1
            with Image.open(rec.path) as im:
                _, box = self.letterbox(np.asarray(im.convert("RGB")), h, w)
            gt = torch.from_numpy(rec.boxes * box.scale + np.array([box.pad_x, box.pad_y] * 2, np.float32))
            lm = torch.from_numpy(rec.landmarks * box.scale + np.array([box.pad_x, box.pad_y], np.float32))
            tg = build_targets(gt, lm, torch.from_numpy(rec.landmark_valid), c, s, lv)
            score = tg["positive"].float() * 0.9
            exact = tg["positive"] & (tg["ltrb"] > 0).all(1)  # fallback positives cannot hold their box
            score[exact] = 0.99
            outs.append((score.numpy(), tg["ltrb"].numpy(), tg["landmarks"].numpy()))
        return tuple(np.stack(x) for x in zip(*outs))


def test_perfect_outputs_score_full_ap_through_served_decoding(data_root):
    from omniface.data import load_widerface
    from omniface.training.evaluate import evaluate_detection

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recs = load_widerface(data_root / "widerface", "all")
    res = evaluate_detection(OracleBackend(recs), recs, score_threshold=0.5, nms_iou=0.4, batch=2)
    assert res["ap50_all"] == pytest.approx(1.0)
    assert res["landmark_nme_box"] < 1e-4 and res["landmark_faces"] > 0


def test_loader_workers_do_not_change_batches(data_root):
    from omniface.data.mixed import make_loader
    from omniface.training.datasets import build_stream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = build_stream(small_config(data_root))
    direct = [stream[i] for i in (2, 3)]
    loaded = list(make_loader(stream, 2, 4, workers=1))
    for a, b in zip(direct, loaded):
        assert a["step"] == b["step"]
        assert torch.equal(a["det"]["images"], b["det"]["images"]) and torch.equal(a["attr"]["images"], b["attr"]["images"])


def test_model_card_tables_from_an_evaluation():
    from omniface.training.evaluate import headline, markdown_table, targets_table

    res = {"detection": {"ap50_easy": 0.9, "ap50_medium": 0.5, "ap50_hard": 0.2, "ap50_all": 0.3, "landmark_nme_box": 0.1},
           "attributes": {"utkface": {"age_mae": 7.5, "gender_acc": 0.95}, "fer2013": {"expression_acc": 0.6},
                          "genki4k": {"smile_acc": 0.91, "pose_mae": {"yaw": 4.0, "pitch": 5.0, "roll": 3.0}}}}
    row = headline(res)
    assert row["AP easy"] == 0.9 and row["yaw"] == 4.0 and np.isnan(row["expr recall"])
    table = markdown_table({"run": res, "empty": {}})
    assert "| run | 0.900 |" in table and "| empty | – |" in table
    targets = targets_table(res).splitlines()
    assert "| AP easy | >= 0.850 | 0.900 | yes |  |" in targets
    assert "| AP medium | >= 0.750 | 0.500 | no | 0.250 |" in targets
    assert "| age MAE | <= 6.00 | 7.50 | no | 1.50 |" in targets
    assert "| roll | <= 3.00 | 3.00 | yes |  |" in targets


def test_ablate_script_trains_evaluates_and_tabulates(data_root, tmp_path):
    env = {**os.environ, "OMNIFACE_DATA": str(data_root), "PYTHONWARNINGS": "ignore"}
    sets = ["data.det_batch=1", "data.attr_batch=4", "data.det_size=[64,64]", "model.width=0.25", "train.max_steps=2",
            "train.warmup_steps=1", "train.threads=1", "data.workers=0", "data.val_fraction=0.5"]
    cmd = [sys.executable, str(REPO / "build" / "ablate.py"), "--schedule", str(REPO / "build" / "configs" / "default.toml"),
           "--out", str(tmp_path / "abl"), "--quiet", "--only", "default", "--only", "no_resup",
           "--eval-set", "eval.threads=1", "--eval-set", "eval.batch=2"] + [a for s in sets for a in ("--set", s)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| default (uncertainty + ReSup + DM) |" in table and "| no ReSup |" in table
    cfg = json.loads((tmp_path / "abl" / "no_resup" / "config.json").read_text())
    assert cfg["resup"]["enabled"] is False and cfg["train"]["max_steps"] == 2 and cfg["data"]["det_size"] == [64, 64]
    assert json.loads((tmp_path / "abl" / "default" / "config.json").read_text())["resup"]["enabled"] is True


def test_apply_overrides_is_the_one_place_set_is_read() -> None:
    from omniface.training.config import apply_overrides, load_config

    cfg = apply_overrides(load_config(), ["train.max_steps=12", "data.attribute_sets=['utkface']",
                                          "data.shares.utkface = 1.0"])
    assert cfg["train"]["max_steps"] == 12 and cfg["data"]["attribute_sets"] == ["utkface"]
    assert cfg["data"]["shares"]["utkface"] == 1.0
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(cfg, ["train.max_steps"])
    with pytest.raises(KeyError, match="unknown config key"):
        apply_overrides(cfg, ["train.max_stepz=3"])
    assert apply_overrides(cfg, {"train.lr": 0.5})["train"]["lr"] == 0.5
