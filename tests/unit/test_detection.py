"""Anchor centres, decoding of raw detector outputs, NMS and the frame mapping."""

from __future__ import annotations

import numpy as np
import pytest

from omniface import contract
from omniface.errors import InvalidInput
from omniface.processing import detection
from omniface.processing.image import Letterbox

H, W = contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH
L = contract.detector_locations()


def _level_offset(stride: int) -> int:
    offset = 0
    for s in contract.DETECTOR_STRIDES:
        if s == stride:
            return offset
        offset += (H // s) * (W // s)
    raise ValueError(stride)


def _empty_outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(L, np.float32), np.ones((L, 4), np.float32), np.zeros((L, 10), np.float32)


# --------------------------------------------------------------------- anchor centres


def test_anchor_centers_counts_and_corners() -> None:
    centers, strides = detection.anchor_centers(H, W)
    assert centers.shape == (L, 2) and strides.shape == (L,) == (6300,)
    assert centers.dtype == np.float32 and strides.dtype == np.float32
    assert centers[0].tolist() == [4.0, 4.0] and strides[0] == 8
    assert centers[1].tolist() == [12.0, 4.0]  # row-major: x moves first
    assert centers[W // 8].tolist() == [4.0, 12.0]
    assert centers[_level_offset(16)].tolist() == [8.0, 8.0] and strides[_level_offset(16)] == 16
    assert centers[_level_offset(32) - 1].tolist() == [632.0, 472.0]  # last stride-16 cell
    assert centers[-1].tolist() == [624.0, 464.0] and strides[-1] == 32
    for s in contract.DETECTOR_STRIDES:
        assert (strides == s).sum() == (H // s) * (W // s)


def test_anchor_centers_cached_and_read_only() -> None:
    first = detection.anchor_centers(H, W)
    assert detection.anchor_centers(H, W)[0] is first[0]
    with pytest.raises(ValueError):
        first[0][0, 0] = 1.0
    assert detection.anchor_centers(64, 96)[0].shape[0] == contract.detector_locations(64, 96)


# ---------------------------------------------------------------------------- decode


def test_decode_synthetic_face_exact() -> None:
    scores, boxes, landmarks = _empty_outputs()
    # Stride-16 cell (x=10, y=5): centre (168, 88).
    index = _level_offset(16) + 5 * (W // 16) + 10
    scores[index] = 0.9
    boxes[index] = [2.0, 3.0, 1.5, 0.5]  # left, top, right, bottom in stride units
    landmarks[index] = [-1, -1, 1, -1, 0, 0, -0.5, 1, 0.5, 1]
    scores[3] = 0.3  # below threshold
    out_boxes, out_scores, out_points = detection.decode(scores, boxes, landmarks, H, W, 0.5)
    assert out_boxes.shape == (1, 4) and out_points.shape == (1, 5, 2)
    assert out_scores.tolist() == pytest.approx([0.9])
    assert out_boxes[0].tolist() == [168 - 32, 88 - 48, 168 + 24, 88 + 8]
    assert out_points[0].tolist() == [[152, 72], [184, 72], [168, 88], [160, 104], [176, 104]]


def test_decode_threshold_filters_in_location_order() -> None:
    scores, boxes, landmarks = _empty_outputs()
    scores[[5, 100, L - 1]] = [0.6, 0.95, 0.51]
    scores[7] = 0.5  # not above the threshold
    scores[8] = np.nan
    out_boxes, out_scores, _ = detection.decode(scores, boxes, landmarks, H, W, 0.5)
    assert out_scores.tolist() == pytest.approx([0.6, 0.95, 0.51])
    # Last location: stride 32, centre (624, 464), unit distances -> 32 px each side.
    assert out_boxes[-1].tolist() == [592, 432, 656, 496]
    assert detection.decode(scores, boxes, landmarks, H, W, 0.99)[0].shape == (0, 4)


def test_decode_rejects_wrong_shapes() -> None:
    scores, boxes, landmarks = _empty_outputs()
    with pytest.raises(ValueError, match="expected"):
        detection.decode(scores[:-1], boxes, landmarks, H, W, 0.5)


# ------------------------------------------------------------------------------- NMS


def test_nms_overlapping_pairs_and_disjoint() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # pair A, lower score
            [1, 0, 11, 10],  # pair A, higher score (IoU with 0: 9/11)
            [50, 50, 60, 60],  # disjoint
            [100, 100, 120, 120],  # pair B
            [105, 100, 125, 120],  # pair B: IoU 15/25 = 0.6
        ],
        np.float32,
    )
    scores = np.array([0.8, 0.9, 0.5, 0.7, 0.6], np.float32)
    assert detection.nms(boxes, scores, 0.4).tolist() == [1, 3, 2]
    assert detection.nms(boxes, scores, 0.65).tolist() == [1, 3, 4, 2]  # 0.6 <= 0.65: kept
    assert detection.nms(boxes, scores, 0.4, max_output=2).tolist() == [1, 3]
    assert detection.nms(boxes, scores, 0.4, max_output=0).tolist() == []


def test_nms_identical_scores_and_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10]] * 3 + [[20, 20, 30, 30]], np.float32)
    scores = np.full(4, 0.7, np.float32)
    assert detection.nms(boxes, scores, 0.5).tolist() == [0, 3]  # ties: lower index first


def test_nms_empty_and_degenerate() -> None:
    assert detection.nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    degenerate = np.array([[5, 5, 5, 5], [5, 5, 5, 5]], np.float32)
    assert detection.nms(degenerate, np.array([0.9, 0.8]), 0.5).tolist() == [0, 1]


# ----------------------------------------------------------------------- detect_faces


def test_detect_faces_maps_to_frame_and_sorts() -> None:
    scores, boxes, landmarks = _empty_outputs()
    # A 1920x1080 frame letterboxed into 640x480: scale 1/3, pad_y 60.
    box = Letterbox(scale=1 / 3, pad_x=0.0, pad_y=60.0)
    a = _level_offset(8) + 20 * (W // 8) + 30  # centre (244, 164)
    b = a + 1  # neighbour, heavily overlapping: suppressed
    c = _level_offset(32) + 7 * (W // 32) + 3  # centre (112, 240)
    d = _level_offset(32) + 0 * (W // 32) + 0  # centre (16, 16): in the top padding
    scores[[a, b, c, d]] = [0.8, 0.7, 0.95, 0.99]
    boxes[[a, b]] = 2.0
    boxes[c] = [1, 1, 1, 1]
    boxes[d] = [0.2, 0.2, 0.2, 0.2]
    landmarks[a] = [0.5] * 10
    faces = detection.detect_faces(scores, boxes, landmarks, box, 1080, 1920, 0.5, 0.4, 10)
    assert len(faces) == 2
    assert faces.scores.tolist() == pytest.approx([0.95, 0.8])
    np.testing.assert_allclose(faces.boxes[0], [(112 - 32) * 3, (240 - 32 - 60) * 3, (112 + 32) * 3, (240 + 32 - 60) * 3], atol=1e-3)
    np.testing.assert_allclose(faces.boxes[1], [(244 - 16) * 3, (164 - 16 - 60) * 3, (244 + 16) * 3, (164 + 16 - 60) * 3], atol=1e-3)
    np.testing.assert_allclose(faces.landmarks[1], [[(244 + 4) * 3, (164 + 4 - 60) * 3]] * 5, atol=1e-3)
    assert faces.boxes.dtype == faces.scores.dtype == faces.landmarks.dtype == np.float32
    capped = detection.detect_faces(scores, boxes, landmarks, box, 1080, 1920, 0.5, 0.4, 1)
    assert capped.scores.tolist() == pytest.approx([0.95])


def test_detect_faces_clips_and_empty() -> None:
    scores, boxes, landmarks = _empty_outputs()
    box = Letterbox(scale=1.0, pad_x=0.0, pad_y=0.0)
    scores[0] = 0.9  # centre (4, 4), 5 strides = 40 px each side: sticks out top-left
    boxes[0] = 5.0
    faces = detection.detect_faces(scores, boxes, landmarks, box, 480, 640, 0.5, 0.4, 64)
    assert faces.boxes.tolist() == [[0, 0, 44, 44]]
    none = detection.detect_faces(*_empty_outputs(), box, 480, 640, 0.5, 0.4, 64)
    assert none.boxes.shape == (0, 4) and none.scores.shape == (0,) and none.landmarks.shape == (0, 5, 2)


def test_detect_faces_min_face_size_drops_small_boxes_before_the_cap() -> None:
    scores, boxes, landmarks = _empty_outputs()
    box = Letterbox(scale=0.5, pad_x=0.0, pad_y=0.0)  # a 1280x960 frame: original px = 2 x detector px
    big = _level_offset(32) + 5 * (W // 32) + 5  # 2 strides each side: 128 detector px, 256 original px
    small = _level_offset(8) + 5 * (W // 8) + 5  # 1 stride each side: 16 detector px, 32 original px
    scores[[big, small]] = [0.6, 0.9]
    boxes[big] = 2.0
    boxes[small] = 1.0
    args = (scores, boxes, landmarks, box, 960, 1280, 0.5, 0.4)
    assert detection.detect_faces(*args, 10).scores.tolist() == pytest.approx([0.9, 0.6])
    kept = detection.detect_faces(*args, 1, min_face_size=33)  # the small one goes first, then the cap
    assert kept.scores.tolist() == pytest.approx([0.6])
    assert len(detection.detect_faces(*args, 10, min_face_size=32)) == 2  # "shorter than" drops, equal keeps
    assert len(detection.detect_faces(*args, 10, min_face_size=257)) == 0


@pytest.mark.parametrize(("height", "width"), [(32, 32), (640, 480), (704, 1024)])
def test_detect_faces_follows_the_detector_size(height: int, width: int) -> None:
    count = contract.detector_locations(height, width)
    scores = np.zeros(count, np.float32)
    scores[-1] = 0.9  # the last stride-32 cell: bottom-right of the canvas
    boxes = np.ones((count, 4), np.float32)
    landmarks = np.zeros((count, 10), np.float32)
    faces = detection.detect_faces(scores, boxes, landmarks, Letterbox(1.0, 0.0, 0.0), height, width, 0.5, 0.4, 5,
                                   height, width)
    np.testing.assert_allclose(faces.boxes[0], [max(0, width - 48), max(0, height - 48), width, height])
    with pytest.raises(InvalidInput, match="expected"):  # outputs of another size are refused, not misread
        detection.detect_faces(scores, boxes, landmarks, Letterbox(1.0, 0.0, 0.0), height, width, 0.5, 0.4, 5,
                               height + 32, width)
