"""Five-point face alignment: similarity transform to the ArcFace template, then warp.

The attribute heads see every face in one canonical pose and scale (eyes, nose and
mouth at ``ALIGNMENT_TEMPLATE``), which is what makes a small network work across
detections of any size and roll. The warp runs in Pillow's C loops; coordinates are
continuous pixel coordinates (pixel centre at +0.5), Pillow's own convention.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from omniface import contract
from omniface.errors import InvalidInput

ALIGNMENT_TEMPLATE: np.ndarray = np.array(contract.ALIGNMENT_TEMPLATE_112, dtype=np.float64) * (
    contract.CROP_SIZE / 112
)
"""[5, 2] x, y of the landmarks in a CROP_SIZE crop."""
ALIGNMENT_TEMPLATE.setflags(write=False)

_ANTIALIAS_BELOW = 0.5
"""Bilinear warping point-samples: when a face shrinks more than 2x, its region is first
box-reduced by an integer factor so the crop does not alias."""


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection)
    mapping ``src`` [N, 2] onto ``dst`` [N, 2] (Umeyama 1991); 2x3 float64.

    Degenerate ``src`` (all points equal, e.g. zero padding) gives a pure translation
    of the means instead of NaNs.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) == 0:
        raise InvalidInput(f"similarity_transform needs matching non-empty point sets, got {len(src)} and {len(dst)}")
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mean_src, dst - mean_dst
    var_src = float((src_c**2).sum(axis=1).mean())
    matrix = np.zeros((2, 3), dtype=np.float64)
    if not math.isfinite(var_src) or var_src < 1e-12:
        matrix[:, :2] = np.eye(2)
        matrix[:, 2] = mean_dst - mean_src
        return matrix
    cov = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / var_src)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mean_dst - scale * rotation @ mean_src
    return matrix


def _inverse_coefficients(matrix: np.ndarray) -> tuple[float, ...]:
    """Forward 2x3 (image -> output) -> Pillow AFFINE data (output -> image)."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    try:
        inverse = np.linalg.inv(full)
    except np.linalg.LinAlgError as exc:
        raise InvalidInput(f"alignment matrix is singular: {matrix.tolist()}") from exc
    return tuple(float(v) for v in inverse[:2].reshape(-1))


def _reduce_span(low: float, high: float, factor: int, extent: int) -> tuple[int, int]:
    """Source span [start, end) covering [low, high] plus a box of margin, on a grid of
    ``factor``-wide boxes anchored at pixel 0 (no box straddles the top/left image edge)
    and intersected with the image, so a wild matrix never crops more than the image.
    A last, partial box at the bottom/right edge is averaged by ``reduce`` over the
    pixels that exist (no darkening by the outside; its centre moves < factor/2 px)."""
    start = (math.floor(low) // factor - 1) * factor
    end = math.ceil(high) + factor
    start = min(max(start, 0), max(0, (extent - 1) // factor * factor))
    end = min(max(end, start + 1), extent)
    return start, end


def _warp_pil(pil: Image.Image, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp a PIL RGB image by a forward 2x3 matrix into size x size, antialiased."""
    matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    if 0 < scale < _ANTIALIAS_BELOW:
        # Keeps the remaining scale in [0.5, 1); capped for absurd (garbage) matrices.
        factor = min(int(1.0 / scale), max(pil.width, pil.height, 2))
        # Output square -> source region, rounded out to whole reduce boxes.
        inverse = np.array(_inverse_coefficients(matrix)).reshape(2, 3)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
        region = corners @ inverse.T
        x0, x1 = _reduce_span(region[:, 0].min(), region[:, 0].max(), factor, pil.width)
        y0, y1 = _reduce_span(region[:, 1].min(), region[:, 1].max(), factor, pil.height)
        # crop() zero-fills outside the image, matching the warp's black border.
        pil = pil.crop((x0, y0, x1, y1)).reduce(factor)
        # p_image = factor * p_reduced + origin, so compose that into the forward map.
        lift = np.array([[factor, 0, x0], [0, factor, y0], [0, 0, 1]], dtype=np.float64)
        matrix = matrix @ lift
    data = _inverse_coefficients(matrix)
    warped = pil.transform((size, size), Image.AFFINE, data=data, resample=Image.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(warped)


def _to_pil(image: np.ndarray) -> Image.Image:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInput(f"alignment needs an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
    return Image.fromarray(np.ascontiguousarray(image), "RGB")


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp ``image`` by the forward 2x3 ``matrix`` (image px -> output px) into an RGB
    uint8 [size, size, 3]: output at p is the image at matrix^-1 p, bilinear, black
    outside. Strong downscales are box-reduced first to avoid aliasing."""
    return np.ascontiguousarray(_warp_pil(_to_pil(image), matrix, size))


def align_faces(image: np.ndarray, landmarks: np.ndarray, size: int = contract.CROP_SIZE) -> np.ndarray:
    """Cut aligned crops: landmarks [N, 5, 2] in ``image`` px -> uint8 [N, size, size, 3].

    Each face is mapped by the similarity that best puts its 5 points on the template
    (scaled to ``size``). The image is converted to Pillow once for all faces.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (contract.NUM_LANDMARKS, 2):
        raise InvalidInput(f"landmarks must be [N, {contract.NUM_LANDMARKS}, 2], got shape {landmarks.shape}")
    crops = np.zeros((len(landmarks), size, size, 3), dtype=np.uint8)
    if len(landmarks) == 0:
        return crops
    pil = _to_pil(image)
    template = ALIGNMENT_TEMPLATE * (size / contract.CROP_SIZE)
    for i, points in enumerate(landmarks):
        if not np.isfinite(points).all():
            continue  # A garbage prediction yields a black crop rather than an error.
        matrix = similarity_transform(points, template)
        if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:, :2])) < 1e-12:
            continue  # Collapsed fit (e.g. mirrored landmarks): no usable crop.
        crops[i] = _warp_pil(pil, matrix, size)
    return crops
