"""The single-face attribute data sets, read in their published layouts.

* ``utkface``: ``crop_part1/<age>_<gender>_<race>_<datetime>.jpg.chip.jpg`` (200x200 RGB,
  aligned); labels age (years) and gender (0 male, 1 female = ``contract.GENDERS`` order).
  Malformed names are skipped with one warning.
* ``fer2013``: ``train/<expression>/*.jpg`` (48x48 gray); the folder name is the label,
  mapped to the ``contract.EXPRESSIONS`` index.
* ``genki4k``: ``train/<smile>/fileNNNN.jpg`` (64x64 RGB) and ``labels.txt`` whose line N
  (1-based, as the data's README says and as the folders confirm: file0001 is line 1) is
  ``smile yaw pitch roll`` for ``fileN.jpg``, pose in radians -> converted to degrees.
  ``labels.txt`` lists 4000 files, only some are on disk: the listing is driven by disk.

Each record carries only its own data set's labels; everything else is missing, which is
what makes training on all of them together a partial-label problem.

Mapping to the 112 template
---------------------------
The crops are already face-centred, each data set with its own framing, so each is
mapped to the ArcFace 112 template (``contract.ALIGNMENT_TEMPLATE_112``) by one fixed
similarity. It is the least-squares similarity taking the data set's *mean* eye centres
and mouth centre to the template's (eyes, and the mid-point of the template's mouth
corners). Those mean positions were measured on the average image of 2,000 random
crops of each set (dark minima of the smoothed mean: the eyes, and the mouth line on
the centre column); FER2013's mean is blurrier (its crops are registered loosely), so its
points were read off the contrast-stretched mean by eye. Augmentation jitter (scale,
shift, rotation) then covers the per-image spread around these means, as the detector's
alignment error does at inference time.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniface import contract

from .geometry import fit_similarity
from .paths import in_split

SOURCE_FACE_POINTS: dict[str, tuple[tuple[float, float], ...]] = {
    # (left eye, right eye, mouth centre) as fractions of the crop's width and height.
    "utkface": ((0.292, 0.287), (0.693, 0.287), (0.500, 0.688)),
    "fer2013": ((0.315, 0.365), (0.685, 0.365), (0.500, 0.740)),
    "genki4k": ((0.305, 0.367), (0.680, 0.367), (0.500, 0.755)),
}
"""Mean (left eye, right eye, mouth centre) of each data set's crops, image left/right."""

_T = np.asarray(contract.ALIGNMENT_TEMPLATE_112, np.float64)
TEMPLATE_FACE_POINTS = np.stack([_T[0], _T[1], (_T[3] + _T[4]) / 2])
"""The template's left eye, right eye and mouth centre (112 px crop)."""

DATASET_TASKS: dict[str, tuple[str, ...]] = {
    "utkface": ("age", "gender"),
    "fer2013": ("expression",),
    "genki4k": ("smile", "head_pose"),
}


@dataclass
class FaceRecord:
    """One crop: its file, data set, split name and the labels it carries."""

    path: Path
    dataset: str
    name: str
    labels: dict = field(default_factory=dict)


def crop_to_template(dataset: str, width: int, height: int) -> np.ndarray:
    """The fixed similarity (2x3) taking a ``width x height`` crop of ``dataset`` to the
    112 template."""
    frac = np.asarray(SOURCE_FACE_POINTS[dataset], np.float64)
    src = frac * np.array([width, height], np.float64)
    return fit_similarity(src, TEMPLATE_FACE_POINTS)


_UTK = re.compile(r"^(\d+)_([01])_(\d+)_(\d+)\.jpg\.chip\.jpg$")


def load_utkface(root: str | Path, split: str = "train", val_fraction: float = 0.12, seed: int = 0) -> list[FaceRecord]:
    folder = Path(root) / "crop_part1"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no UTKFace crop_part1 folder there")
    records, bad = [], []
    for path in sorted(folder.iterdir()):
        m = _UTK.match(path.name)
        if not m:
            if path.suffix.lower() == ".jpg":
                bad.append(path.name)
            continue
        if not in_split(path.name, split, val_fraction, seed):
            continue
        age = float(np.clip(int(m.group(1)), contract.AGE_MIN, contract.AGE_MAX))
        records.append(FaceRecord(path, "utkface", path.name, {"age": age, "gender": float(m.group(2))}))
    if bad:
        warnings.warn(
            f"{folder}: skipped {len(bad)} file(s) whose name is not <age>_<gender>_<race>_<datetime>.jpg.chip.jpg "
            f"(e.g. {bad[0]})",
            stacklevel=2,
        )
    return records


def load_fer2013(root: str | Path, split: str = "train", val_fraction: float = 0.12, seed: int = 0) -> list[FaceRecord]:
    folder = Path(root) / "train"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no FER2013 train folder there")
    index = {name: i for i, name in enumerate(contract.EXPRESSIONS)}
    records, unknown = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = index.get(sub.name.lower())
        if label is None:
            unknown.append(sub.name)
            continue
        for path in sorted(sub.glob("*.jpg")):
            name = f"{sub.name}/{path.name}"
            if in_split(name, split, val_fraction, seed):
                records.append(FaceRecord(path, "fer2013", name, {"expression": label}))
    if unknown:
        warnings.warn(f"{folder}: folders {unknown} are not in contract.EXPRESSIONS; skipped", stacklevel=2)
    return records


_GENKI = re.compile(r"^file(\d+)\.jpg$")


def read_genki_labels(path: str | Path) -> dict[int, tuple[float, np.ndarray]]:
    """``labels.txt`` -> {N (1-based line number): (smile, [yaw, pitch, roll] degrees)}."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if len(parts) < 4:
                continue
            smile = float(parts[0])
            pose = np.degrees(np.asarray([float(p) for p in parts[1:4]], np.float64)).astype(np.float32)
            out[n] = (smile, pose)
    return out


def load_genki4k(root: str | Path, split: str = "train", val_fraction: float = 0.12, seed: int = 0) -> list[FaceRecord]:
    root = Path(root)
    folder, label_file = root / "train", root / "labels.txt"
    if not folder.is_dir() or not label_file.is_file():
        raise FileNotFoundError(f"{root}: GENKI-4K needs train/<smile>/fileNNNN.jpg and labels.txt")
    labels = read_genki_labels(label_file)
    records, unlabelled = [], 0
    for path in sorted(folder.glob("*/file*.jpg")):
        m = _GENKI.match(path.name)
        if not m:
            continue
        entry = labels.get(int(m.group(1)))
        if entry is None:
            unlabelled += 1
            continue
        if not in_split(path.name, split, val_fraction, seed):
            continue
        smile, pose = entry
        records.append(FaceRecord(path, "genki4k", path.name, {"smile": smile, "head_pose": pose}))
    if unlabelled:
        warnings.warn(f"{folder}: {unlabelled} file(s) have no line in labels.txt; skipped", stacklevel=2)
    return records


LOADERS = {"utkface": load_utkface, "fer2013": load_fer2013, "genki4k": load_genki4k}


def load_faces(dataset: str, root: str | Path, split: str = "train", val_fraction: float = 0.12, seed: int = 0) -> list[FaceRecord]:
    """Records of one attribute data set (a key of ``LOADERS``) under its folder ``root``."""
    if dataset not in LOADERS:
        raise KeyError(f"unknown attribute data set {dataset!r}; known: {sorted(LOADERS)}")
    return LOADERS[dataset](root, split, val_fraction, seed)
