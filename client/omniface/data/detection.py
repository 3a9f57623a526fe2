"""Detection training frames: WIDER FACE images randomly scaled and cropped to the
training size, mirrored (landmarks re-ordered), colour-jittered, and optionally with
single-face crops pasted in (a copy-paste "mosaic")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from omniface import contract

from . import geometry as geo
from .augment import TEMPLATE_FACE_BOX, ColourJitter, flip_landmarks
from .faces import FaceRecord, crop_to_template
from .widerface import WiderImage


@dataclass
class DetectionAugment:
    size: tuple[int, int] = (640, 480)
    """Training frame (width, height); multiples of 32."""
    scale: tuple[float, float] = (0.5, 2.0)
    """Zoom relative to the letterbox fit (1 = the whole image fits, as served), log-uniform."""
    flip: float = 0.5
    min_face: float = 2.0
    """Faces whose clipped box is narrower or shorter than this (pixels) are dropped."""
    fill: int = 0
    """Padding colour; black like the served letterbox (omniface.processing.image.letterbox)."""
    colour: ColourJitter = field(default_factory=ColourJitter)
    paste: float = 0.0
    """Probability of pasting single-face crops into a frame (0 = off)."""
    paste_max: int = 3
    paste_height: tuple[float, float] = (16.0, 160.0)
    """Pasted face box height range, pixels, log-uniform."""
    tries: int = 10
    """Placements tried to keep at least one face in the crop."""


@dataclass
class DetectionSample:
    image: np.ndarray
    """uint8 [H, W, 3] RGB."""
    boxes: np.ndarray
    """float32 [N, 4] x1 y1 x2 y2 pixels."""
    landmarks: np.ndarray
    """float32 [N, 5, 2]."""
    landmark_valid: np.ndarray
    """bool [N]."""


def open_scaled(path, scale: float) -> tuple[Image.Image, float]:
    """Open a JPEG letting libjpeg decode at 1/2, 1/4 or 1/8 size when the image is
    going to be shrunk that much anyway; returns (image, factor from original pixels)."""
    img = Image.open(path)
    w0, h0 = img.size
    if scale < 0.5 and img.format == "JPEG":
        img.draft("RGB", (max(1, int(w0 * scale)), max(1, int(h0 * scale))))
    img = img.convert("RGB")
    return img, img.size[0] / w0


def _place(rng, src_w, src_h, out_w, out_h, scale):
    """Translation placing a ``scale``d source in the canvas: a random crop along an axis
    where it is larger, a random pad where it is smaller."""
    t = []
    for s, o in ((src_w * scale, out_w), (src_h * scale, out_h)):
        t.append(-rng.uniform(0, s - o) if s > o else rng.uniform(0, o - s))
    return t


def frame_transform(rng, width, height, faces_xyxy, aug: DetectionAugment) -> np.ndarray:
    """A random scale + crop/pad (2x3, original -> canvas pixels), retried until the
    centre of at least one face lands inside the canvas."""
    out_w, out_h = aug.size
    fit = min(out_w / width, out_h / height)
    centres = (faces_xyxy[:, :2] + faces_xyxy[:, 2:]) / 2 if len(faces_xyxy) else np.zeros((0, 2))
    a = None
    for _ in range(max(1, aug.tries)):
        scale = fit * float(np.exp(rng.uniform(np.log(aug.scale[0]), np.log(aug.scale[1]))))
        tx, ty = _place(rng, width, height, out_w, out_h, scale)
        a = np.array([[scale, 0.0, tx], [0.0, scale, ty]])
        if not len(centres):
            break
        c = geo.apply_points(a, centres)
        if ((c[:, 0] >= 0) & (c[:, 0] < out_w) & (c[:, 1] >= 0) & (c[:, 1] < out_h)).any():
            break
    return a


def filter_faces(boxes, landmarks, valid, width, height, min_face):
    """Clip boxes to the canvas; keep faces whose centre is inside and whose clipped box
    is at least ``min_face`` wide and tall."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    keep = (
        (c[:, 0] >= 0) & (c[:, 0] < width) & (c[:, 1] >= 0) & (c[:, 1] < height)
        & (clipped[:, 2] - clipped[:, 0] >= min_face) & (clipped[:, 3] - clipped[:, 1] >= min_face)
    )
    return clipped[keep], landmarks[keep], valid[keep]


def paste_faces(canvas: Image.Image, boxes, landmarks, valid, crops: list[FaceRecord], rng, aug: DetectionAugment):
    """Paste face crops (the whole template-aligned crop, scaled so its face box gets a
    random height) where they cover no existing face centre. The new faces' boxes are
    ``TEMPLATE_FACE_BOX`` and their landmarks the template points, mapped the same way
    (the crops are aligned to the template by their data set's mean face, so these are
    approximate to within the data set's spread)."""
    out_w, out_h = canvas.size
    tb = np.asarray(TEMPLATE_FACE_BOX)
    boxes, landmarks, valid = list(boxes), list(landmarks), list(valid)
    for rec in crops:
        with Image.open(rec.path) as im:
            src = im.convert("RGB")
        base = crop_to_template(rec.dataset, *src.size)
        h = float(np.exp(rng.uniform(*np.log(aug.paste_height))))
        k = h / (tb[3] - tb[1])
        patch = contract.CROP_SIZE * k
        if patch >= min(out_w, out_h):
            continue
        x0, y0 = rng.uniform(0, out_w - patch), rng.uniform(0, out_h - patch)
        place = np.array([[k, 0.0, x0], [0.0, k, y0]])
        if boxes:
            c = (np.asarray(boxes)[:, :2] + np.asarray(boxes)[:, 2:]) / 2
            if ((c[:, 0] > x0) & (c[:, 0] < x0 + patch) & (c[:, 1] > y0) & (c[:, 1] < y0 + patch)).any():
                continue
        piece = geo.warp(src, geo.compose(geo.similarity(k), base), (int(np.ceil(patch)), int(np.ceil(patch))))
        corner = (int(round(x0)), int(round(y0)))
        canvas.paste(piece, corner)
        place[:, 2] = corner  # the geometry follows the rounded corner the piece was pasted at
        boxes.append(geo.apply_boxes(place, tb[None])[0])
        landmarks.append(geo.apply_points(place, np.asarray(contract.ALIGNMENT_TEMPLATE_112)))
        valid.append(True)
    as_arr = lambda v, shape: np.asarray(v, np.float64).reshape(shape)  # noqa: E731
    return as_arr(boxes, (-1, 4)), as_arr(landmarks, (-1, 5, 2)), np.asarray(valid, bool)


def detection_sample(rec: WiderImage, rng: np.random.Generator | None, aug: DetectionAugment,
                     paste_pool: list[FaceRecord] | None = None) -> DetectionSample:
    """One training frame from ``rec``; ``rng=None`` gives the plain letterbox (no
    augmentation) used for validation."""
    out_w, out_h = aug.size
    with Image.open(rec.path) as im:
        width, height = im.size
    if rng is None:
        s = min(out_w / width, out_h / height)
        a = np.array([[s, 0.0, (out_w - width * s) / 2], [0.0, s, (out_h - height * s) / 2]])
    else:
        a = frame_transform(rng, width, height, rec.boxes, aug)
    img, factor = open_scaled(rec.path, a[0, 0])
    canvas = geo.warp(img, geo.compose(a, geo.similarity(1.0 / factor)), (out_w, out_h), fill=(aug.fill,) * 3)
    boxes = geo.apply_boxes(a, rec.boxes)
    landmarks = geo.apply_points(a, rec.landmarks)
    valid = rec.landmark_valid.copy()
    boxes, landmarks, valid = filter_faces(boxes, landmarks, valid, out_w, out_h, aug.min_face)
    if rng is not None and paste_pool and aug.paste > 0 and rng.random() < aug.paste:
        n = int(rng.integers(1, aug.paste_max + 1))
        picks = [paste_pool[int(i)] for i in rng.integers(0, len(paste_pool), size=n)]
        boxes, landmarks, valid = paste_faces(canvas, boxes, landmarks, valid, picks, rng, aug)
    image = np.asarray(canvas)
    if rng is not None:
        if rng.random() < aug.flip:
            image = image[:, ::-1]
            boxes = np.stack([out_w - boxes[:, 2], boxes[:, 1], out_w - boxes[:, 0], boxes[:, 3]], axis=1) if len(boxes) else boxes
            landmarks = flip_landmarks(landmarks, out_w)
        image = aug.colour(np.ascontiguousarray(image), rng)
    return DetectionSample(
        np.ascontiguousarray(image), boxes.astype(np.float32).reshape(-1, 4),
        landmarks.astype(np.float32).reshape(-1, 5, 2), valid.astype(bool),
    )
