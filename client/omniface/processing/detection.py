"""Detector outputs -> faces: anchor centres, decoding, NMS, mapping to the frame.

The detector is anchor-free (YuNet / SCRFD style): one prediction per feature-map cell
per stride in ``contract.DETECTOR_STRIDES``. Locations are concatenated stride 8, then
16, then 32; inside a level they are row-major (index = y * fw + x). For each location:

- ``scores`` [L]: sigmoid face probability;
- ``boxes`` [L, 4]: (left, top, right, bottom) distances from the cell centre, in units
  of the level's stride;
- ``landmarks`` [L, 10]: five (dx, dy) offsets from the cell centre, in stride units.

The centre of cell (x, y) at stride s is ((x + 0.5) * s, (y + 0.5) * s) detector px.
This runs per request on all locations, so thresholding comes first and only the
survivors are decoded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from omniface import contract
from omniface.errors import InvalidInput
from omniface.processing.image import Letterbox, clip_boxes, unletterbox_boxes, unletterbox_points


@functools.lru_cache(maxsize=32)
def anchor_centers(
    height: int, width: int, strides: tuple[int, ...] = contract.DETECTOR_STRIDES
) -> tuple[np.ndarray, np.ndarray]:
    """(centres [L, 2] float32 detector px, stride per location [L] float32), read-only.

    Cached: a server sees few canvas sizes (one per det_size and aspect ratio); at most
    32 are kept (a 1920x1440 canvas's take 0.5 MB).
    """
    centers, per_location = [], []
    for stride in strides:
        fh, fw = height // stride, width // stride
        ys, xs = np.meshgrid(np.arange(fh, dtype=np.float32), np.arange(fw, dtype=np.float32), indexing="ij")
        level = np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)
        centers.append((level + np.float32(0.5)) * np.float32(stride))
        per_location.append(np.full(fh * fw, stride, dtype=np.float32))
    center_array = np.ascontiguousarray(np.concatenate(centers) if centers else np.zeros((0, 2), np.float32))
    stride_array = np.concatenate(per_location) if per_location else np.zeros((0,), np.float32)
    center_array.setflags(write=False)
    stride_array.setflags(write=False)
    return center_array, stride_array


def decode(
    scores: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    height: int,
    width: int,
    score_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs of one image -> (boxes xyxy [K, 4], scores [K], landmarks [K, 5, 2]),
    float32 detector px, for the K locations whose score is above ``score_threshold``
    (in location order)."""
    centers, strides = anchor_centers(int(height), int(width))
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float32)
    landmarks = np.asarray(landmarks, dtype=np.float32)
    count = len(centers)
    expected = {"scores": (count,), "boxes": (count, 4), "landmarks": (count, 2 * contract.NUM_LANDMARKS)}
    for name, array in (("scores", scores), ("boxes", boxes), ("landmarks", landmarks)):
        if array.shape != expected[name]:
            raise InvalidInput(
                f"detector output {name!r} has shape {array.shape}, expected {expected[name]} "
                f"for a {height}x{width} input (strides {contract.DETECTOR_STRIDES})"
            )
    keep = np.flatnonzero(scores > score_threshold)  # NaN scores compare False: dropped.
    center = centers[keep]
    stride = strides[keep][:, np.newaxis]
    dist = boxes[keep] * stride
    xyxy = np.concatenate([center - dist[:, :2], center + dist[:, 2:]], axis=1)
    offsets = landmarks[keep].reshape(-1, contract.NUM_LANDMARKS, 2) * stride[:, :, np.newaxis]
    points = center[:, np.newaxis, :] + offsets
    return xyxy.astype(np.float32, copy=False), scores[keep], points.astype(np.float32, copy=False)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_output: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept (int64), highest score first.

    A box is dropped when its IoU with an already kept, higher-scored box exceeds
    ``iou_threshold``. Ties keep the lower index first, so results are deterministic.
    Degenerate (zero-area) boxes overlap nothing.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(boxes) != len(scores):
        raise InvalidInput(f"nms got {len(boxes)} boxes but {len(scores)} scores")
    limit = len(boxes) if max_output is None else max(0, int(max_output))
    if len(boxes) == 0 or limit == 0:
        return np.zeros((0,), dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    kept: list[int] = []
    while order.size and len(kept) < limit:
        best = order[0]
        kept.append(int(best))
        rest = order[1:]
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


@dataclass(frozen=True)
class Detections:
    """Faces of one frame in original pixels, sorted by score (highest first).

    ``boxes`` [N, 4] float32 x1, y1, x2, y2 clipped to the frame; ``scores`` [N] float32;
    ``landmarks`` [N, 5, 2] float32 x, y (not clipped: alignment needs the true points).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, contract.NUM_LANDMARKS, 2), np.float32),
        )


def detect_faces(
    scores: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    letterbox: Letterbox,
    frame_height: int,
    frame_width: int,
    score_threshold: float,
    nms_iou: float,
    max_faces: int,
    detector_height: int = contract.DETECTOR_INPUT_HEIGHT,
    detector_width: int = contract.DETECTOR_INPUT_WIDTH,
    *,
    min_face_size: float = 0.0,
) -> Detections:
    """Raw detector outputs of one frame -> ``Detections`` in original pixels.

    ``detector_height`` x ``detector_width`` is the canvas the detector ran on (the
    number of locations follows it). Threshold, decode, map back through the letterbox,
    drop boxes that lie wholly in the padding (empty once clipped to the frame) and boxes
    whose longer side is below ``min_face_size`` original pixels, NMS, keep at most
    ``max_faces``.
    """
    det_boxes, det_scores, det_points = decode(
        scores, boxes, landmarks, detector_height, detector_width, score_threshold
    )
    if len(det_scores) == 0 or max_faces <= 0:
        return Detections.empty()
    orig_boxes = unletterbox_boxes(det_boxes, letterbox)
    orig_points = unletterbox_points(det_points, letterbox)
    clipped = clip_boxes(orig_boxes, frame_height, frame_width)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    if min_face_size > 0:
        longer = np.maximum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1])
        inside &= longer >= np.float32(min_face_size)
    if not inside.all():
        orig_boxes, clipped, orig_points, det_scores = (
            orig_boxes[inside], clipped[inside], orig_points[inside], det_scores[inside]
        )
    keep = nms(orig_boxes, det_scores, nms_iou, max_faces)
    return Detections(
        boxes=np.ascontiguousarray(clipped[keep], dtype=np.float32),
        scores=np.ascontiguousarray(det_scores[keep], dtype=np.float32),
        landmarks=np.ascontiguousarray(orig_points[keep], dtype=np.float32),
    )
