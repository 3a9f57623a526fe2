"""WIDER FACE with the RetinaFace 5-point landmarks: ``train/label.txt`` parsing and
the face-size difficulty sets used by the evaluation.

``label.txt`` (see ``train/LABELS-SOURCE.md`` next to the data)::

    # <event>/<image>.jpg
    x y w h  l0x l0y f0  l1x l1y f1  l2x l2y f2  l3x l3y f3  l4x l4y f4  score

``x y w h`` is the box in integer pixels (top-left corner, size); the five landmarks are
left eye, right eye, nose, left and right mouth corner (image left/right, the contract's
order) with a per-landmark 0.0/1.0 flag as published; a face without landmark annotation
has all 15 landmark values at -1.0. ``score`` is in [0, 1] or -1.0. As RetinaFace's own
loader does, a face's landmarks are used when its first x is >= 0; the flags are kept but
not used to mask (their meaning is not documented).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .paths import in_split

LABEL_FILE = Path("train") / "label.txt"
IMAGES_DIR = Path("train") / "images"

DIFFICULTY_MIN_HEIGHT: dict[str, float] = {"easy": 50.0, "medium": 20.0, "hard": 10.0, "all": 0.0}
"""Face-size difficulty sets (face box height in original pixels), nested like WIDER
FACE's own easy <= medium <= hard sets. The official per-face difficulty lists are not
here; box height is the strongest driver of WIDER's split, and the cut-offs are the usual
ones (>= 50 px large, >= 20 px medium). ``hard`` keeps faces >= 10 px: below that a face is
about 6 px after the served 640-wide letterbox, under the finest stride (8); ``all``
counts every face. As in the WIDER protocol, faces outside a set are *ignored* when that
set is scored (a detection on them is neither a hit nor a false positive)."""


@dataclass
class WiderImage:
    """One image's annotation: boxes ``[N,4]`` x1 y1 x2 y2 (float32, pixels),
    landmarks ``[N,5,2]``, ``landmark_valid [N]``, the published flags ``[N,5]`` and scores ``[N]``."""

    path: Path
    name: str
    boxes: np.ndarray
    landmarks: np.ndarray
    landmark_valid: np.ndarray
    landmark_flags: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.boxes)


def _face_arrays(rows: list[list[float]]):
    n = len(rows)
    boxes = np.zeros((n, 4), np.float32)
    landmarks = np.zeros((n, 5, 2), np.float32)
    flags = np.zeros((n, 5), np.float32)
    valid = np.zeros(n, bool)
    scores = np.full(n, -1.0, np.float32)
    for i, v in enumerate(rows):
        x, y, w, h = v[:4]
        boxes[i] = (x, y, x + w, y + h)
        if len(v) >= 19:
            lm = np.asarray(v[4:19], np.float32).reshape(5, 3)
            landmarks[i] = lm[:, :2]
            flags[i] = lm[:, 2]
            valid[i] = lm[0, 0] >= 0
            if len(v) >= 20:
                scores[i] = v[19]
    landmarks[~valid] = 0.0
    return boxes, landmarks, valid, flags, scores


def parse_label_file(path: str | Path) -> list[tuple[str, list[list[float]]]]:
    """``label.txt`` -> ``[(relative image path, [face rows of floats])]`` in file order.
    Lines with fewer than 4 numbers and boxes with a non-positive size are dropped."""
    blocks: list[tuple[str, list[list[float]]]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                blocks.append((line[1:].strip(), []))
                continue
            if not blocks:
                raise ValueError(f"{path}:{lineno}: face line before any '# image' line")
            values = [float(t) for t in line.split()]
            if len(values) < 4 or values[2] <= 0 or values[3] <= 0:
                continue
            blocks[-1][1].append(values)
    return blocks


def load_widerface(root: str | Path, split: str = "train", val_fraction: float = 0.12, seed: int = 0) -> list[WiderImage]:
    """WIDER FACE images of ``split`` under ``root`` (the ``widerface`` folder) that
    exist on disk, with their faces; images listed but absent are skipped (one warning)."""
    root = Path(root)
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        raise FileNotFoundError(f"{label_file}: no WIDER FACE label file (RetinaFace format) there")
    images, missing = [], 0
    for rel, rows in parse_label_file(label_file):
        if not in_split(rel, split, val_fraction, seed):
            continue
        path = root / IMAGES_DIR / rel
        if not path.is_file():
            missing += 1
            continue
        boxes, landmarks, valid, flags, scores = _face_arrays(rows)
        images.append(WiderImage(path, rel, boxes, landmarks, valid, flags, scores))
    if missing:
        warnings.warn(f"{label_file}: {missing} listed images are not on disk; skipped", stacklevel=2)
    return images


def difficulty_masks(boxes: np.ndarray) -> dict[str, np.ndarray]:
    """Per difficulty set, which of ``boxes [N,4]`` belong to it (see DIFFICULTY_MIN_HEIGHT)."""
    heights = np.asarray(boxes, np.float64).reshape(-1, 4)
    heights = heights[:, 3] - heights[:, 1]
    return {name: heights >= h for name, h in DIFFICULTY_MIN_HEIGHT.items()}
