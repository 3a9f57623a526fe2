"""2-D geometry of the augmentations, in continuous pixel coordinates.

A pixel with integer index ``i`` covers [i, i + 1) and has its centre at i + 0.5 (the
convention of PIL's affine warp and of the detector's cell centres (x + 0.5) * s), so a
horizontal flip of a ``W``-wide image is ``x -> W - x``. Transforms are 2x3 float64
matrices ``A`` mapping source points to destination points: ``dst = A[:, :2] @ src + A[:, 2]``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def identity() -> np.ndarray:
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def compose(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The transform that applies ``first`` then ``second``."""
    a = np.vstack([second, [0.0, 0.0, 1.0]]) @ np.vstack([first, [0.0, 0.0, 1.0]])
    return a[:2]


def invert(a: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([a, [0.0, 0.0, 1.0]]))[:2]


def similarity(scale: float = 1.0, angle_deg: float = 0.0, tx: float = 0.0, ty: float = 0.0,
               centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rotate by ``angle_deg`` (counter-clockwise as seen on screen, y pointing down)
    and scale by ``scale`` about ``centre``, then translate by (tx, ty)."""
    t = math.radians(angle_deg)
    c, s = scale * math.cos(t), scale * math.sin(t)
    cx, cy = centre
    # y points down: a visual counter-clockwise rotation uses +s on x's y term.
    m = np.array([[c, s, 0.0], [-s, c, 0.0]])
    m[:, 2] = np.array([cx, cy]) - m[:, :2] @ np.array([cx, cy]) + np.array([tx, ty])
    return m


def hflip(width: float) -> np.ndarray:
    """Mirror ``x -> width - x``."""
    return np.array([[-1.0, 0.0, float(width)], [0.0, 1.0, 0.0]])


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection)
    taking points ``src [K,2]`` to ``dst [K,2]`` (Umeyama 1991)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    var = (s0**2).sum() / len(src)
    scale = (sig * d).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def apply_points(a: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Transform points ``[..., 2]``."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ a[:, :2].T + a[:, 2]


def apply_boxes(a: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Transform axis-aligned boxes ``[N, 4]`` (x1, y1, x2, y2): the bounding box of
    the four transformed corners (exact for scale + translation + flip)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]], axis=1)
    t = apply_points(a, corners)
    return np.concatenate([t.min(1), t.max(1)], axis=1)


def warp(image: Image.Image, a: np.ndarray, size: tuple[int, int], fill: int | tuple = 0) -> Image.Image:
    """Warp ``image`` by ``a`` (source -> destination) into a ``size = (width, height)``
    canvas, bilinear, ``fill`` outside the source."""
    inv = invert(a)
    coeffs = (inv[0, 0], inv[0, 1], inv[0, 2], inv[1, 0], inv[1, 1], inv[1, 2])
    return image.transform(size, Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=fill)
