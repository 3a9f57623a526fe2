"""The fast training pipeline: the decoded cache, tensor augmentation (CachedStream), the
separate attribute trunk and logit-adjusted expression loss. All on generated data in the
real data sets' layouts (``omniface.data.synthetic``); no test touches /work/shared/data."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omniface import contract  # noqa: E402
from omniface.data import crop_sample, load_faces, load_widerface  # noqa: E402
from omniface.data.cache import ensure_cache, open_faces, open_wider  # noqa: E402
from omniface.data.cached_stream import (  # noqa: E402
    CachedStream, ColourConfig, CropConfig, DetCropConfig, StreamConfig, colour_jitter)
from omniface.data.mixed import base_transform, make_loader  # noqa: E402
from omniface.data.synthetic import write_fixture  # noqa: E402
from omniface.training.config import load_config  # noqa: E402

SETS = ["widerface", "utkface", "fer2013", "genki4k"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def cache(data_root, tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ensure_cache(data_root, SETS, tmp_path_factory.mktemp("cache"), quiet=True)


def no_jitter(**over) -> StreamConfig:
    cfg = StreamConfig(
        det=DetCropConfig(batch=2, crop=(64, 64), scale=(1.0, 1.0), flip=0.0),
        crops=CropConfig(scale=(1.0, 1.0), shift=0.0, rotate=0.0, flip=0.0, plain_resize=0.0, lowres=0.0),
        colour=ColourConfig(0.0, 0.0, 0.0, 0.0), attr_batch=6, val_fraction=0.0)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def test_cache_holds_the_decoded_images_and_labels(data_root, cache):
    wider = open_wider(cache / "widerface")
    recs = load_widerface(data_root / "widerface", "all")
    assert wider.names == [r.name for r in recs]
    from PIL import Image

    for i in (0, len(recs) - 1):
        with Image.open(recs[i].path) as im:
            assert np.array_equal(wider.image(i), np.asarray(im.convert("RGB")))
        boxes, lms, valid = wider.faces(i)
        assert np.allclose(boxes, recs[i].boxes) and np.array_equal(valid, recs[i].landmark_valid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        utk = load_faces("utkface", data_root / "utkface", "all")
    faces = open_faces("utkface", cache / "utkface")
    assert faces.names == [r.name for r in utk] and faces.images.shape[1:] == (128, 128, 3)
    assert np.allclose(faces.labels["age"], [r.labels["age"] for r in utk])
    fer = open_faces("fer2013", cache / "fer2013")
    assert fer.images.shape[-1] == 1 and fer.labels["expression"].dtype == np.int64
    # The split is the file loaders' name hash.
    val = set(np.array(faces.names)[faces.subset("val", 0.3, 0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert val == {r.name for r in load_faces("utkface", data_root / "utkface", "val", 0.3, 0)}


def test_cache_is_reused_and_rebuilt_when_stale(data_root, cache):
    manifest = cache / "genki4k" / "manifest.json"
    before = (cache / "genki4k" / "images.npy").stat().st_mtime_ns
    ensure_cache(data_root, ["genki4k"], cache, quiet=True)
    assert (cache / "genki4k" / "images.npy").stat().st_mtime_ns == before
    stale = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**stale, "files": stale["files"] + 1}))
    ensure_cache(data_root, ["genki4k"], cache, quiet=True)
    assert json.loads(manifest.read_text()) == stale


def test_crops_without_jitter_match_the_served_alignment(data_root, cache):
    """grid_sample with the template map gives the crop PIL's warp gives (what
    evaluation and the server's alignment use), up to interpolation rounding."""
    stream = CachedStream(cache, no_jitter(shares={"genki4k": 1.0}), detection=False, attribute_sets=("genki4k",))
    batch = stream.attribute_batch(0)
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recs = load_faces("genki4k", data_root / "genki4k", "train", 0.0)
    got = batch["x"].permute(0, 2, 3, 1).numpy() / contract.PIXEL_SCALE + contract.PIXEL_MEAN
    for k in range(len(batch["index"])):
        rec = recs[int(batch["index"][k])]
        with Image.open(rec.path) as im:
            want, _ = crop_sample(im.convert("RGB"), base_transform(rec, *im.size), rec.labels, None, None)
        assert np.abs(got[k] - want.astype(np.float32)).mean() < 1.5
        assert np.allclose(batch["labels"]["smile"][k], rec.labels["smile"])


def test_flip_and_rotation_update_head_pose_labels(cache):
    cfg = no_jitter(shares={"genki4k": 1.0})
    plain = CachedStream(cache, cfg, detection=False, attribute_sets=("genki4k",)).attribute_batch(3)
    cfg.crops = CropConfig(scale=(1.0, 1.0), shift=0.0, rotate=15.0, flip=1.0, plain_resize=0.0, lowres=0.0)
    stream = CachedStream(cache, cfg, detection=False, attribute_sets=("genki4k",))
    moved = stream.attribute_batch(3)
    _, flips, angles = stream.crop_transforms("genki4k", len(moved["index"]), 64,
                                              np.random.default_rng([0, 3, 3, 1]))
    assert flips.all()
    p, m = plain["labels"]["head_pose"].numpy(), moved["labels"]["head_pose"].numpy()
    assert np.allclose(m[:, 0], -p[:, 0]) and np.allclose(m[:, 1], p[:, 1])
    assert np.allclose(m[:, 2], -p[:, 2] - angles, atol=1e-4)


def test_detection_crop_places_faces_where_their_boxes_say(cache):
    """At native scale without flips, the crop is a translated window of the frame: its
    pixels equal the frame's under the same map, and every kept box lies in the crop."""
    stream = CachedStream(cache, no_jitter(), attribute_sets=())
    det = stream.detection_batch(1)
    assert det["x"].shape == (2, 3, 64, 64)
    for j, (pos, _) in enumerate(stream.det_walk.indices(1)):
        i = int(stream.det_index[pos])
        h, w = stream.wider.shapes[i]
        rng = np.random.default_rng([0, 1, 0, j])
        a = stream.frame_transform(rng, int(w), int(h), stream.wider.faces(i)[0])
        tx, ty = a[0, 2], a[1, 2]
        img = stream.wider.image(i).astype(np.float32)
        crop = det["x"][j].permute(1, 2, 0).numpy() / contract.PIXEL_SCALE + contract.PIXEL_MEAN
        for (u, v) in [(10, 12), (40, 30), (55, 50)]:
            x, y = u + 0.5 - tx, v + 0.5 - ty  # source point of the crop pixel centre
            if 1 <= x < w - 1 and 1 <= y < h - 1:
                xi, yi = int(np.floor(x - 0.5)), int(np.floor(y - 0.5))
                fx, fy = x - 0.5 - xi, y - 0.5 - yi
                want = ((1 - fx) * (1 - fy) * img[yi, xi] + fx * (1 - fy) * img[yi, xi + 1]
                        + (1 - fx) * fy * img[yi + 1, xi] + fx * fy * img[yi + 1, xi + 1])
                assert np.allclose(crop[v, u], want, atol=0.6)
        b = det["boxes"][j].numpy()
        assert ((b[:, :2] >= 0) & (b[:, 2:] <= 64)).all()


def test_downscaled_crops_are_box_averaged_not_aliased(cache):
    """A 4x downscale reads the frame through a 4x4 box average (like the served
    letterbox): a crop of a one-pixel checkerboard comes out flat grey."""
    stream = CachedStream(cache, no_jitter(), attribute_sets=())
    board = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)
    image = np.repeat(board[..., None], 3, axis=2)
    out = stream.render_crop(image, np.array([[0.25, 0.0, 0.0], [0.0, 0.25, 0.0]]), (64, 64))
    assert abs(float(out.mean()) - 127.5) < 1.0 and float(out.std()) < 1.0


def test_colour_jitter_is_the_sequential_formula():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.uniform(0, 255, (4, 3, 8, 8)), dtype=torch.float64)
    cfg = ColourConfig(0.3, 0.3, 0.3, 0.5)
    got = colour_jitter(x.clone(), np.random.default_rng(1), cfg, normalise=False)
    r = np.random.default_rng(1)
    b, c, s = (r.uniform(0.7, 1.3, 4) for _ in range(3))
    grey = r.random(4) < 0.5
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
    want = x * torch.as_tensor(b).view(4, 1, 1, 1)
    m = want.mean(dim=(1, 2, 3), keepdim=True)
    want = (want - m) * torch.as_tensor(c).view(4, 1, 1, 1) + m
    g = (want * w).sum(1, keepdim=True)
    want = (want - g) * torch.as_tensor(s).view(4, 1, 1, 1) + g
    g = (want * w).sum(1, keepdim=True).expand_as(want)
    want = torch.where(torch.as_tensor(grey).view(4, 1, 1, 1), g, want).clamp(0, 255)
    assert torch.allclose(got, want, atol=1e-9)


def test_batches_are_a_pure_function_of_the_step(cache):
    cfg = StreamConfig(det=DetCropConfig(batch=2, crop=(64, 64)), attr_batch=6, val_fraction=0.0)
    stream = CachedStream(cache, cfg)
    direct = [stream[i] for i in (4, 5)]
    again = stream[4]
    assert torch.equal(direct[0]["attr"]["x"], again["attr"]["x"]) and torch.equal(direct[0]["det"]["x"], again["det"]["x"])
    # A loader worker runs torch on one thread: the same batch up to float rounding
    # (vectorised kernels differ by an ulp); the draws and the labels are identical.
    loaded = list(make_loader(stream, 4, 6, workers=1))
    for a, b in zip(direct, loaded):
        assert torch.allclose(a["det"]["x"], b["det"]["x"], atol=1e-5)
        assert torch.allclose(a["attr"]["x"], b["attr"]["x"], atol=1e-5)
        assert all(torch.equal(x, y) for x, y in zip(a["det"]["boxes"], b["det"]["boxes"]))
        assert all(torch.equal(a["attr"]["labels"][t], b["attr"]["labels"][t]) for t in a["attr"]["labels"])


# ------------------------------------------------------------------ network and trainer


def test_separate_attribute_trunk_leaves_the_detector_alone():
    from omniface.nn.model import OmniFaceNet

    net = OmniFaceNet(width=0.25, attr_trunk="separate", attr_width=0.5)
    out = net.attributes(torch.randn(2, 3, 112, 112))
    sum(v.float().sum() for v in out.values()).backward()
    assert all(p.grad is None for p in net.trunk.parameters())
    assert any(p.grad is not None for p in net.attr_trunk.parameters())
    with pytest.raises(ValueError, match="attr_trunk"):
        OmniFaceNet(attr_trunk="both")


def test_separate_trunk_checkpoint_round_trip(tmp_path):
    from omniface.nn import load_model
    from omniface.nn.model import OmniFaceNet, save_checkpoint

    net = OmniFaceNet(width=0.25, attr_trunk="separate", attr_width=0.5).eval()
    save_checkpoint(net, tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert back.config["attr_trunk"] == "separate" and back.config["attr_width"] == 0.5
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(net.attributes(x).values(), back.attributes(x).values()))


def test_logit_adjustment_moves_the_loss_towards_rare_classes():
    from omniface.training.losses import attribute_losses

    logits = torch.zeros(2, len(contract.EXPRESSIONS))
    labels = {"expression": torch.tensor([1, 3])}  # disgust (rare), happy (common)
    mask = {"expression": torch.tensor([True, True])}
    prior = np.log(np.array([0.14, 0.015, 0.14, 0.25, 0.17, 0.17, 0.115]))
    plain = attribute_losses({"expression_logits": logits}, labels, mask, {})["expression"]
    adjusted = attribute_losses({"expression_logits": logits}, labels, mask,
                                {"expression_log_prior": prior.tolist(), "expression_logit_adjust": 1.0})["expression"]
    # With the prior added, a flat prediction already "explains" the common class, so
    # the rare-class sample costs more: its gradient pushes its logit up harder.
    assert float(adjusted) != pytest.approx(float(plain))
    one = torch.zeros(1, 7, requires_grad=True)
    attribute_losses({"expression_logits": one}, {"expression": torch.tensor([1])}, {"expression": torch.tensor([True])},
                     {"expression_log_prior": prior.tolist(), "expression_logit_adjust": 1.0})["expression"].backward()
    assert float(one.grad[0, 1]) < -0.9


def cached_config(root, cache, **over):
    cfg = load_config(None, {
        "data.root": str(root), "data.cache": str(cache), "data.pipeline": "cached", "data.det_batch": 2,
        "data.attr_batch": 8, "data.det_crop": [64, 64], "data.val_fraction": 0.0, "model.width": 0.25,
        "model.attr_trunk": "separate", "model.attr_width": 0.25, "train.max_steps": 6, "train.warmup_steps": 0,
        "train.threads": 1, "train.log_every": 1, "train.plot_every": 0, "train.lr": 3e-3,
        "train.checkpoint_minutes": 60.0, "loss.expression_logit_adjust": 0.5,
    })
    for k, v in over.items():
        *path, last = k.split(".")
        node = cfg
        for p in path:
            node = node[p]
        node[last] = v
    return cfg


def _trainer(cfg, out, **kw):
    from omniface.training.trainer import Trainer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Trainer(cfg, out, quiet=True, **kw)


def test_cached_pipeline_trains_and_resumes_exactly(data_root, cache, tmp_path):
    straight = _trainer(cached_config(data_root, cache), tmp_path / "a")
    assert straight.run() == "done"
    assert "expression_log_prior" in straight.loss_cfg
    assert all(np.isfinite(r["total"]) for r in straight.history)
    first = _trainer(cached_config(data_root, cache, **{"train.stop_after": 3}), tmp_path / "b")
    assert first.run() == "stopped"
    resumed = _trainer(cached_config(data_root, cache), tmp_path / "b", resume=True)
    assert resumed.run() == "done" and resumed.step == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cached_pipeline_loss_falls(data_root, cache, tmp_path):
    tr = _trainer(cached_config(data_root, cache, **{"train.max_steps": 40, "train.lr": 1e-2}), tmp_path / "run")
    assert tr.run() == "done"
    expr = [r["loss_expression"] for r in tr.history if "loss_expression" in r]
    assert np.mean(expr[-10:]) < 0.7 * np.mean(expr[:10])
    score = [r["loss_det_score"] for r in tr.history]
    assert np.mean(score[-10:]) < np.mean(score[:10])
