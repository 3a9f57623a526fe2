"""Data loaders on generated fixtures written in the real formats, the deterministic
split, augmentation semantics (landmark flip order, head-pose signs) and the mixed
training stream. No test touches /work/shared/data."""

import warnings

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from omniface import contract  # noqa: E402
from omniface.data import (  # noqa: E402
    CropAugment, DetectionAugment, FaceRecord, WiderImage, crop_sample, data_root, detection_sample,
    difficulty_masks, flip_labels, flip_landmarks, in_split, load_fer2013, load_genki4k, load_utkface,
    load_widerface, parse_label_file, split_value,
)
from omniface.data.augment import ColourJitter  # noqa: E402
from omniface.data.mixed import TrainStream, split_counts  # noqa: E402
from omniface.data.synthetic import aligned_attribute_set, write_fixture  # noqa: E402

pytestmark = pytest.mark.model
torch.set_num_threads(1)

NO_COLOUR = ColourJitter(0, 0, 0, 0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("data"))


# ------------------------------------------------------------------ WIDER FACE


LABELS = """# 0--A/a.jpg
10 20 30 40 15.0 30.0 0.0 35.0 30.0 1.0 25.0 40.0 0.0 18.0 50.0 0.0 32.0 50.0 0.0 0.82
50 10 8 9 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 0.3
5 5 0 7 1.0 1.0 0.0 2.0 1.0 0.0 1.5 2.0 0.0 1.0 3.0 0.0 2.0 3.0 0.0 0.5
# 0--A/missing.jpg
1 1 10 10 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0
# 0--A/b.jpg
40 40 20 20 45.00 48.00 0.00 55.00 48.00 0.00 50.00 52.00 0.00 46.00 56.00 0.00 54.00 56.00 0.00 -1.0
"""


def test_widerface_label_format(tmp_path):
    base = tmp_path / "widerface"
    (base / "train" / "images" / "0--A").mkdir(parents=True)
    (base / "train" / "label.txt").write_text(LABELS)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (100, 80)).save(base / "train" / "images" / "0--A" / name)
    blocks = parse_label_file(base / "train" / "label.txt")
    assert [b[0] for b in blocks] == ["0--A/a.jpg", "0--A/missing.jpg", "0--A/b.jpg"]
    assert len(blocks[0][1]) == 2  # the zero-width box is dropped
    with pytest.warns(UserWarning, match="1 listed images are not on disk"):
        images = load_widerface(base, "all")
    assert [im.name for im in images] == ["0--A/a.jpg", "0--A/b.jpg"]
    a = images[0]
    assert a.boxes.tolist() == [[10, 20, 40, 60], [50, 10, 58, 19]]
    assert a.landmarks[0].tolist() == [[15, 30], [35, 30], [25, 40], [18, 50], [32, 50]]
    assert a.landmark_valid.tolist() == [True, False]
    assert a.landmarks[1].tolist() == [[0, 0]] * 5
    assert a.landmark_flags[0].tolist() == [0, 1, 0, 0, 0]
    assert a.scores.tolist() == pytest.approx([0.82, 0.3])
    assert images[1].scores.tolist() == [-1.0] and images[1].landmark_valid.tolist() == [True]


def test_difficulty_sets_are_nested_by_height():
    boxes = np.array([[0, 0, 10, 60], [0, 0, 10, 30], [0, 0, 10, 12], [0, 0, 10, 5]], float)
    m = difficulty_masks(boxes)
    assert m["easy"].tolist() == [True, False, False, False]
    assert m["medium"].tolist() == [True, True, False, False]
    assert m["hard"].tolist() == [True, True, True, False]
    assert m["all"].all()


def test_widerface_fixture_and_split(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        everything = load_widerface(root / "widerface", "all")
        train = load_widerface(root / "widerface", "train", val_fraction=0.3)
        val = load_widerface(root / "widerface", "val", val_fraction=0.3)
    assert len(everything) == 5  # six listed, one not on disk
    assert {i.name for i in train} | {i.name for i in val} == {i.name for i in everything}
    assert not {i.name for i in train} & {i.name for i in val}
    assert any(not v for im in everything for v in im.landmark_valid)


# ------------------------------------------------------------------ split


def test_split_is_deterministic_disjoint_and_sized():
    names = [f"img_{i}.jpg" for i in range(4000)]
    val = [n for n in names if in_split(n, "val", 0.12)]
    train = [n for n in names if in_split(n, "train", 0.12)]
    assert not set(val) & set(train) and len(val) + len(train) == len(names)
    assert 0.10 < len(val) / len(names) < 0.14
    assert val == [n for n in names if in_split(n, "val", 0.12)]
    assert split_value("x.jpg", 0) == split_value("x.jpg", 0) != split_value("x.jpg", 1)
    with pytest.raises(ValueError):
        in_split("x", "test")


def test_data_root_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("OMNIFACE_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root(str(tmp_path / "other")) == tmp_path / "other"
    monkeypatch.delenv("OMNIFACE_DATA")
    assert data_root().parts[-2:] == ("shared", "data")


# ------------------------------------------------------------------ single-face sets


def test_utkface_names_and_malformed_warning(root):
    with pytest.warns(UserWarning, match="skipped 1 file") as record:
        recs = load_utkface(root / "utkface", "all")
    assert len([w for w in record if "skipped" in str(w.message)]) == 1
    assert len(recs) == 24
    r = recs[0]
    age, gender = r.path.name.split("_")[:2]
    assert r.labels == {"age": float(age), "gender": float(gender)}
    assert set(r.labels) == {"age", "gender"} and r.dataset == "utkface"


def test_utkface_age_is_clipped_to_contract_range(tmp_path):
    folder = tmp_path / "utk" / "crop_part1"
    folder.mkdir(parents=True)
    Image.new("RGB", (200, 200)).save(folder / "116_0_0_20170101000000000.jpg.chip.jpg")
    (rec,) = load_utkface(tmp_path / "utk", "all")
    assert rec.labels["age"] == contract.AGE_MAX


def test_fer2013_folders_map_to_contract_order(root):
    recs = load_fer2013(root / "fer2013", "all")
    assert len(recs) == 4 * len(contract.EXPRESSIONS)
    for r in recs:
        assert contract.EXPRESSIONS[r.labels["expression"]] == r.path.parent.name


def test_genki4k_labels_by_line_number_in_degrees(root):
    lines = (root / "genki4k" / "labels.txt").read_text().splitlines()
    assert len(lines) == 30  # lists files that are not there
    recs = load_genki4k(root / "genki4k", "all")
    assert len(recs) == 20
    for r in recs:
        n = int(r.path.stem[4:])
        smile, yaw, pitch, roll = (float(v) for v in lines[n - 1].split())
        assert r.labels["smile"] == smile and r.path.parent.name == str(int(smile))
        assert r.labels["head_pose"] == pytest.approx(np.degrees([yaw, pitch, roll]), abs=1e-4)


def test_genki4k_file_without_label_line_is_skipped(tmp_path):
    base = tmp_path / "genki4k"
    (base / "train" / "1").mkdir(parents=True)
    (base / "labels.txt").write_text("1 0.1 0.2 0.3\n")
    for n in (1, 7):
        Image.new("RGB", (64, 64)).save(base / "train" / "1" / f"file{n:04d}.jpg")
    with pytest.warns(UserWarning, match="1 file"):
        recs = load_genki4k(base, "all")
    assert [r.path.name for r in recs] == ["file0001.jpg"]


# ------------------------------------------------------------------ augmentation


def _eye_frame():
    """A 100x80 frame with one face: red dot at the image-left eye, blue at the right."""
    img = np.zeros((80, 100, 3), np.uint8)
    img[29:32, 29:32] = (255, 0, 0)
    img[29:32, 59:62] = (0, 0, 255)
    lm = np.array([[30.5, 30.5], [60.5, 30.5], [45.0, 40.0], [35.0, 50.0], [55.0, 50.0]], np.float32)
    return img, lm


def test_flip_keeps_landmark_semantics(tmp_path):
    img, lm = _eye_frame()
    path = tmp_path / "f.png"
    Image.fromarray(img).save(path)
    rec = WiderImage(path, "f.png", np.array([[20, 15, 70, 65]], np.float32), lm[None], np.array([True]),
                     np.zeros((1, 5), np.float32), np.ones(1, np.float32))
    aug = DetectionAugment(size=(100, 80), scale=(1.0, 1.0), flip=1.0, colour=NO_COLOUR)
    s = detection_sample(rec, np.random.default_rng(0), aug)
    out = s.landmarks[0]
    # index 0 is still the image-left eye, now the mirrored right eye (blue)
    assert out[0, 0] < out[1, 0] and out[3, 0] < out[4, 0]
    assert out[0].tolist() == pytest.approx([100 - 60.5, 30.5])
    x, y = (int(v) for v in out[0])
    assert s.image[y, x, 2] > 200 and s.image[y, x, 0] < 50  # blue at the new left eye
    x, y = (int(v) for v in out[1])
    assert s.image[y, x, 0] > 200  # red at the new right eye
    assert s.boxes[0].tolist() == pytest.approx([30, 15, 80, 65])
    assert flip_landmarks(lm, 100)[0].tolist() == pytest.approx([39.5, 30.5])
    assert list(contract.LANDMARK_FLIP_ORDER) == [1, 0, 2, 4, 3]


def test_flip_changes_yaw_and_roll_signs_only():
    labels = {"smile": 1.0, "head_pose": np.array([10.0, -5.0, 3.0], np.float32)}
    assert flip_labels(labels)["head_pose"].tolist() == [-10.0, -5.0, -3.0]
    assert labels["head_pose"].tolist() == [10.0, -5.0, 3.0]  # input untouched
    im = Image.new("RGB", (64, 64), (128, 128, 128))
    aug = CropAugment(scale=(1, 1), shift=0.0, rotate=0.0, flip=1.0, colour=NO_COLOUR)
    crop, lab = crop_sample(im, np.array([[1.75, 0, 0], [0, 1.75, 0]]), labels, np.random.default_rng(0), aug)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert lab["head_pose"].tolist() == pytest.approx([-10.0, -5.0, -3.0])


def test_crop_rotation_updates_roll():
    labels = {"head_pose": np.array([0.0, 0.0, 0.0], np.float32)}
    im = Image.new("RGB", (64, 64))
    aug = CropAugment(scale=(1, 1), shift=0.0, rotate=15.0, flip=0.0, colour=NO_COLOUR)
    rng = np.random.default_rng(3)
    _, lab = crop_sample(im, np.eye(2, 3) * 1.75, labels, rng, aug)
    # the draws crop_sample makes: flip coin, scale, angle
    ref = np.random.default_rng(3)
    ref.random(); ref.uniform(0, 0)
    angle = ref.uniform(-15.0, 15.0)
    assert lab["head_pose"][2] == pytest.approx(-angle, abs=1e-5)


def test_detection_sample_drops_tiny_faces_and_stays_in_frame(tmp_path):
    path = tmp_path / "g.jpg"
    Image.new("RGB", (200, 160), (90, 90, 90)).save(path)
    boxes = np.array([[20, 20, 80, 90], [150, 100, 151.5, 101.5]], np.float32)
    rec = WiderImage(path, "g.jpg", boxes, np.zeros((2, 5, 2), np.float32), np.array([False, False]),
                     np.zeros((2, 5), np.float32), np.ones(2, np.float32))
    aug = DetectionAugment(size=(128, 96), scale=(1.0, 1.0), flip=0.0, colour=NO_COLOUR)
    s = detection_sample(rec, None, aug)  # plain letterbox: scale 0.6
    assert s.image.shape == (96, 128, 3)
    assert len(s.boxes) == 1  # the 1.5 px face is 0.9 px now: dropped
    assert s.boxes[0].tolist() == pytest.approx([12 + 4, 12, 48 + 4, 54], abs=1e-4)
    for seed in range(5):
        s = detection_sample(rec, np.random.default_rng(seed), DetectionAugment(size=(64, 64)))
        assert s.image.shape == (64, 64, 3)
        if len(s.boxes):
            assert (s.boxes[:, :2] >= 0).all() and (s.boxes[:, 2] <= 64).all() and (s.boxes[:, 3] <= 64).all()
            assert ((s.boxes[:, 2:] - s.boxes[:, :2]) >= 2).all()


def test_mosaic_paste_adds_faces_with_landmarks(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wider = load_widerface(root / "widerface", "all")
        pool = load_utkface(root / "utkface", "all")
    aug = DetectionAugment(size=(160, 128), scale=(1.0, 1.0), paste=1.0, paste_max=3, paste_height=(20, 40))
    base = detection_sample(wider[0], np.random.default_rng(1), DetectionAugment(size=(160, 128), scale=(1.0, 1.0)))
    pasted = detection_sample(wider[0], np.random.default_rng(1), aug, pool)
    assert len(pasted.boxes) > len(base.boxes) and pasted.landmark_valid[len(base.boxes):].all()
    extra = pasted.boxes[len(base.boxes):]
    lm = pasted.landmarks[len(base.boxes):]
    inside = (lm[..., 0] >= extra[:, None, 0]) & (lm[..., 0] <= extra[:, None, 2])
    assert inside.all()


# ------------------------------------------------------------------ the stream


def test_split_counts_largest_remainder():
    assert split_counts(10, {"a": 0.4, "b": 0.35, "c": 0.25}) == {"a": 4, "b": 4, "c": 2}
    assert sum(split_counts(7, {"a": 1, "b": 1, "c": 1}).values()) == 7


def _stream(root, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wider = load_widerface(root / "widerface", "all")
        faces = {"utkface": load_utkface(root / "utkface", "all"), "fer2013": load_fer2013(root / "fer2013", "all"),
                 "genki4k": load_genki4k(root / "genki4k", "all")}
    args = dict(det_batch=2, attr_batch=10, shares={"utkface": 0.4, "fer2013": 0.3, "genki4k": 0.3},
                tasks=contract.DEFAULT_TASKS, seed=0, det_aug=DetectionAugment(size=(96, 64)), crop_aug=CropAugment())
    args.update(kw)
    return TrainStream(wider, faces, **args)


def test_stream_batches_are_deterministic_with_task_masks(root):
    s = _stream(root)
    a, b = s[3], _stream(root)[3]
    assert torch.equal(a["det"]["images"], b["det"]["images"]) and torch.equal(a["attr"]["images"], b["attr"]["images"])
    assert not torch.equal(a["attr"]["images"], s[4]["attr"]["images"])
    attr = a["attr"]
    assert attr["images"].shape == (10, 112, 112, 3) and attr["images"].dtype == torch.uint8
    ds = attr["dataset"]
    assert ds.count("utkface") == 4 and ds.count("fer2013") == 3 and ds.count("genki4k") == 3
    for i, name in enumerate(ds):
        carried = {"utkface": {"age", "gender"}, "fer2013": {"expression"}, "genki4k": {"smile", "head_pose"}}[name]
        assert {t for t in contract.DEFAULT_TASKS if attr["mask"][t][i]} == carried
    assert a["det"]["images"].shape == (2, 64, 96, 3) and len(a["det"]["boxes"]) == 2


def test_stream_walk_visits_every_sample_once_per_epoch(root):
    s = _stream(root, det_batch=0, shares={"utkface": 1.0}, attr_batch=5)
    n = len(s.faces["utkface"])
    seen = [i for step in range(n // 5) for i, _ in s.walks["utkface"].indices(step)]
    assert len(set(seen)) == len(seen) == n // 5 * 5  # no repeats within an epoch
    epoch0 = [i for step in range(24) for i, e in s.walks["utkface"].indices(step) if e == 0]
    assert sorted(epoch0) == list(range(n))


def test_generated_glasses_and_au_records(tmp_path):
    recs = aligned_attribute_set(tmp_path / "syn", n=6)
    s = TrainStream(None, {"synthetic": recs}, det_batch=0, attr_batch=4, shares={"synthetic": 1.0},
                    tasks=("glasses", "action_units", "age"), crop_aug=None)
    attr = s[0]["attr"]
    assert attr["mask"]["glasses"].all() and attr["mask"]["action_units"].all() and not attr["mask"]["age"].any()
    assert attr["labels"]["action_units"].shape == (4, len(contract.ACTION_UNITS))
    assert s[0]["det"] is None
    assert isinstance(recs[0], FaceRecord)
