"""Similarity estimation, the Pillow affine warp and the aligned crops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from omniface import contract
from omniface.processing import align


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _bilinear_reference(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Plain numpy warp in continuous pixel coordinates (centres at +0.5), zero border."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    src = np.stack([xs, ys], -1) @ inverse[:, :2].T + inverse[:, 2] - 0.5
    x0, y0 = np.floor(src[..., 0]).astype(int), np.floor(src[..., 1]).astype(int)
    fx, fy = src[..., 0] - x0, src[..., 1] - y0
    h, w = image.shape[:2]
    padded = np.zeros((h + 4, w + 4, 3))
    padded[2:-2, 2:-2] = image

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return padded[np.clip(yy + 2, 0, h + 3), np.clip(xx + 2, 0, w + 3)]

    top = at(y0, x0) * (1 - fx)[..., None] + at(y0, x0 + 1) * fx[..., None]
    bottom = at(y0 + 1, x0) * (1 - fx)[..., None] + at(y0 + 1, x0 + 1) * fx[..., None]
    return top * (1 - fy)[..., None] + bottom * fy[..., None]


def test_template_scaled_to_crop_size() -> None:
    assert align.ALIGNMENT_TEMPLATE.shape == (5, 2)
    np.testing.assert_allclose(align.ALIGNMENT_TEMPLATE[0], [38.2946, 51.6963])  # CROP_SIZE is 112


@pytest.mark.parametrize("angle,scale,tx,ty", [(0, 1, 0, 0), (25, 1.7, -30, 12.5), (-170, 0.3, 200, -40)])
def test_similarity_transform_recovers_matrix(angle: float, scale: float, tx: float, ty: float) -> None:
    truth = _similarity(angle, scale, tx, ty)
    src = np.random.default_rng(3).uniform(0, 300, (5, 2))
    estimated = align.similarity_transform(src, _apply(truth, src))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_similarity_transform_least_squares_and_no_reflection() -> None:
    src = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    mirrored = align.ALIGNMENT_TEMPLATE * [-1, 1]
    matrix = align.similarity_transform(align.ALIGNMENT_TEMPLATE, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0  # a rotation, never a flip
    # A mirror-symmetric set mirrored: the best rotation+scale fit collapses to scale 0,
    # and align_faces must turn that into a black crop, not an error.
    collapsed = align.similarity_transform(src, src * [-1, 1])
    assert abs(np.linalg.det(collapsed[:, :2])) < 1e-12
    crops = align.align_faces(np.full((20, 20, 3), 99, np.uint8), (src * [-1, 1])[None, [0, 1, 2, 3, 0]])
    assert crops.shape == (1, 112, 112, 3)
    truth = _similarity(10, 2, 5, 5)
    noisy = _apply(truth, src) + [[0.3, 0], [-0.1, 0.2], [0, 0.1], [0.2, -0.4]]
    fitted = align.similarity_transform(src, noisy)
    np.testing.assert_allclose(fitted, truth, atol=0.2)
    # Least squares: no similarity fits better, in particular not the true one, nor a nudge.
    residual = lambda m: ((_apply(m, src) - noisy) ** 2).sum()  # noqa: E731
    assert residual(fitted) < residual(truth)
    for nudge in (_similarity(0.5, 1.0, 0, 0), _similarity(0, 1.01, 0, 0), _similarity(0, 1, 0.05, 0)):
        nudged = np.vstack([nudge, [0, 0, 1]]) @ np.vstack([fitted, [0, 0, 1]])
        assert residual(fitted) < residual(nudged[:2])
    degenerate = align.similarity_transform(np.ones((5, 2)), align.ALIGNMENT_TEMPLATE)
    assert np.isfinite(degenerate).all()


def test_warp_affine_matches_reference_bilinear() -> None:
    image = np.random.default_rng(4).integers(0, 256, (60, 80, 3), np.uint8)
    matrix = _similarity(17, 1.3, -5, 8)
    out = align.warp_affine(image, matrix, 48)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    reference = _bilinear_reference(image, matrix, 48)
    # Compare where the sample lies well inside the image (border handling may differ).
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:48, 0:48] + 0.5
    src = np.stack([xs, ys], -1) @ inverse[:, :2].T + inverse[:, 2]
    inside = (src[..., 0] > 1.5) & (src[..., 0] < 78.5) & (src[..., 1] > 1.5) & (src[..., 1] < 58.5)
    assert inside.sum() > 1000
    assert np.abs(out[inside].astype(float) - reference[inside]).max() <= 1.0
    assert (out[~inside & ((src[..., 0] < -1) | (src[..., 1] < -1))] == 0).all()  # black outside


def test_warp_affine_translation_exact() -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    image[5, 7] = 255
    out = align.warp_affine(image, np.array([[1.0, 0, 3], [0, 1, 2]]), 20)
    assert np.argwhere(out[..., 0] == 255).tolist() == [[7, 10]]
    assert out.sum() == 255 * 3


def _dotted_face(points: np.ndarray, height: int, width: int, radius: int) -> np.ndarray:
    """Bright discs at each landmark (continuous coordinates) on black."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    image = np.zeros((height, width, 3), np.uint8)
    for x, y in points:
        image[(xs - x) ** 2 + (ys - y) ** 2 <= radius**2] = 255
    return image


def _dot_centres(crop: np.ndarray, expected: np.ndarray, window: int = 6) -> np.ndarray:
    """Intensity-weighted centre of each dot near its expected position."""
    gray = crop[..., 0].astype(float)
    found = []
    for x, y in expected:
        x0, y0 = max(0, int(x) - window), max(0, int(y) - window)
        patch = gray[y0 : int(y) + window, x0 : int(x) + window]
        assert patch.sum() > 0, f"no dot near ({x:.1f}, {y:.1f})"
        py, px = np.mgrid[0 : patch.shape[0], 0 : patch.shape[1]] + 0.5
        found.append([x0 + (px * patch).sum() / patch.sum(), y0 + (py * patch).sum() / patch.sum()])
    return np.array(found)


@pytest.mark.parametrize("angle,scale", [(0, 2.0), (20, 3.0), (-35, 0.9), (10, 8.0)])
def test_align_faces_puts_landmarks_on_template(angle: float, scale: float) -> None:
    # A face whose landmarks are the template moved by a known similarity.
    template = align.ALIGNMENT_TEMPLATE
    face_to_image = _similarity(angle, scale, 0, 0)
    placed = _apply(face_to_image, template)
    placed += np.array([60.0, 60.0]) - placed.min(axis=0)
    height, width = int(placed[:, 1].max() + 60), int(placed[:, 0].max() + 60)
    image = _dotted_face(placed, height, width, radius=max(2, round(1.5 * scale)))
    crops = align.align_faces(image, placed[np.newaxis].astype(np.float32))
    assert crops.shape == (1, contract.CROP_SIZE, contract.CROP_SIZE, 3)
    centres = _dot_centres(crops[0], template)
    assert np.abs(centres - template).max() < 1.5


def test_align_faces_batch_and_empty() -> None:
    image = np.full((200, 300, 3), 128, np.uint8)
    landmarks = np.stack([align.ALIGNMENT_TEMPLATE + [dx, 20] for dx in (0, 50, 100)])
    crops = align.align_faces(image, landmarks)
    assert crops.shape == (3, 112, 112, 3) and crops.dtype == np.uint8
    assert (crops[:, 40:70, 40:70] == 128).all()
    assert align.align_faces(image, np.zeros((0, 5, 2))).shape == (0, 112, 112, 3)
    assert align.align_faces(image, np.zeros((0, 5, 2)), size=64).shape == (0, 64, 64, 3)
