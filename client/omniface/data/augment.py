"""Augmentations shared by the attribute crops and the detection frames.

Everything draws from an explicit ``numpy.random.Generator`` so a sample is a pure
function of (seed, step, slot): that is what makes ``--resume`` exact and the loader's
worker count irrelevant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from omniface import contract

from . import geometry as geo

TEMPLATE_FACE_BOX = (16.1, 13.2, 96.0, 117.8)
"""The WIDER-style face box of a template-aligned 112 crop (x1, y1, x2, y2): the median,
over the 3,293 WIDER FACE train faces >= 40 px with landmarks, of the box mapped by the
similarity taking its landmarks to the template. Used to paste crops into mosaics."""


@dataclass
class ColourJitter:
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    grayscale: float = 0.1

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``image`` uint8 HxWx3 -> jittered uint8 (random order of b/c/s, then gray)."""
        x = image.astype(np.float32)
        for op in rng.permutation(3):
            if op == 0 and self.brightness > 0:
                x = x * rng.uniform(1 - self.brightness, 1 + self.brightness)
            elif op == 1 and self.contrast > 0:
                m = x.mean()
                x = (x - m) * rng.uniform(1 - self.contrast, 1 + self.contrast) + m
            elif op == 2 and self.saturation > 0:
                g = x @ np.array([0.299, 0.587, 0.114], np.float32)
                x = (x - g[..., None]) * rng.uniform(1 - self.saturation, 1 + self.saturation) + g[..., None]
        if rng.random() < self.grayscale:
            g = x @ np.array([0.299, 0.587, 0.114], np.float32)
            x = np.repeat(g[..., None], 3, axis=-1)
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)


@dataclass
class CropAugment:
    """Geometric jitter of an aligned crop around the template, plus flip and colour."""

    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.06
    """Max shift, as a fraction of the crop size, in x and y."""
    rotate: float = 10.0
    """Max rotation, degrees."""
    flip: float = 0.5
    colour: ColourJitter | None = None

    def __post_init__(self):
        if self.colour is None:
            self.colour = ColourJitter()


def flip_labels(labels: dict) -> dict:
    """Labels after a horizontal mirror: yaw and roll change sign (pitch does not);
    the other tasks are mirror-invariant."""
    out = dict(labels)
    if "head_pose" in out:
        pose = np.asarray(out["head_pose"], np.float32).copy()
        pose[0], pose[2] = -pose[0], -pose[2]
        out["head_pose"] = pose
    return out


def flip_landmarks(landmarks: np.ndarray, width: float) -> np.ndarray:
    """Mirror landmarks ``[..., 5, 2]`` in an image ``width`` wide and re-order them with
    ``contract.LANDMARK_FLIP_ORDER`` so index 0 is again the image-left eye."""
    lm = np.asarray(landmarks, np.float64).copy()
    lm[..., 0] = width - lm[..., 0]
    return lm[..., list(contract.LANDMARK_FLIP_ORDER), :]


def crop_sample(image: Image.Image, base: np.ndarray, labels: dict, rng: np.random.Generator | None,
                aug: CropAugment | None, size: int = contract.CROP_SIZE) -> tuple[np.ndarray, dict]:
    """Warp ``image`` by ``base`` (its fixed similarity to the template), jittered when
    ``aug`` is given, into a ``size``-square uint8 RGB crop; returns (crop, labels) with
    the labels updated for the flip and the rotation.

    The jitter is ``J = similarity(scale, angle, shift) about the crop centre`` after an
    optional mirror ``F`` (``x -> size - x``): ``A = J . F . base``. GENKI-4K's roll is
    positive for a face turned clockwise on screen (checked on its most-rolled images),
    and ``angle`` turns the image counter-clockwise, so roll' = roll - angle.
    """
    image = image.convert("RGB")
    a = base
    if size != contract.CROP_SIZE:
        a = geo.compose(geo.similarity(size / contract.CROP_SIZE), a)
    if aug is None or rng is None:
        return np.asarray(geo.warp(image, a, (size, size))), dict(labels)
    if rng.random() < aug.flip:
        a = geo.compose(geo.hflip(size), a)
        labels = flip_labels(labels)
    else:
        labels = dict(labels)
    scale = float(np.exp(rng.uniform(np.log(aug.scale[0]), np.log(aug.scale[1]))))
    angle = float(rng.uniform(-aug.rotate, aug.rotate))
    tx, ty = rng.uniform(-aug.shift, aug.shift, size=2) * size
    a = geo.compose(geo.similarity(scale, angle, tx, ty, centre=(size / 2, size / 2)), a)
    if "head_pose" in labels:
        pose = np.asarray(labels["head_pose"], np.float32).copy()
        pose[2] -= angle
        labels["head_pose"] = pose
    crop = np.asarray(geo.warp(image, a, (size, size)))
    return aug.colour(crop, rng), labels
