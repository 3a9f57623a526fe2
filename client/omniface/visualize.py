"""Draw a ``FrameResult`` onto its frame: boxes, the five landmarks and a label per face.

Pillow only. Line widths and text size scale with the frame so a label stays readable
on a 320 px thumbnail and on a 4K frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from omniface import contract
from omniface.types import Face, FrameResult

__all__ = ["annotate", "face_label", "BOX_COLOR", "LANDMARK_COLORS"]

BOX_COLOR = (0, 230, 118)
LABEL_TEXT = (0, 0, 0)
LANDMARK_COLORS: dict[str, tuple[int, int, int]] = {
    "left_eye": (255, 64, 64),
    "right_eye": (64, 160, 255),
    "nose": (255, 220, 0),
    "mouth_left": (255, 64, 255),
    "mouth_right": (0, 255, 255),
}
"""One colour per landmark, keyed by ``contract.LANDMARK_NAMES``."""


def face_label(face: Face) -> str:
    """A compact one-line summary: ``"F 31y happy 0.98 smile yaw+12"``-style."""
    parts: list[str] = []
    if face.gender is not None:
        parts.append("F" if face.gender == "female" else "M")
    if face.age is not None:
        parts.append(f"{face.age:.0f}y")
    if face.expression is not None:
        score = face.expression_score
        parts.append(face.expression if score is None else f"{face.expression} {score:.2f}")
    if face.smile:
        parts.append("smile")
    if face.glasses:
        parts.append("glasses")
    if face.head_pose is not None:
        pose = face.head_pose
        parts.append(f"y{pose.yaw:+.0f} p{pose.pitch:+.0f} r{pose.roll:+.0f}")
    if not parts:
        parts.append(f"{face.score:.2f}")
    return " ".join(parts)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable on Pillow >= 10.1
    except TypeError:  # pragma: no cover - older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def annotate(image_rgb: np.ndarray | Any, result: FrameResult, *, labels: bool = True) -> Any:
    """A copy of ``image_rgb`` (RGB ``HxWx3`` uint8 array, or a PIL image) with the
    result drawn on it; returns a ``PIL.Image.Image`` in RGB mode."""
    from PIL import Image, ImageDraw

    if isinstance(image_rgb, Image.Image):
        canvas = image_rgb.convert("RGB")
    else:
        array = np.asarray(image_rgb)
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"annotate takes an HxWx3 RGB image, got shape {array.shape}")
        canvas = Image.fromarray(np.ascontiguousarray(array[..., :3], dtype=np.uint8), "RGB")
    if canvas.size != (result.width, result.height):
        # A result of another frame size (e.g. annotating a thumbnail): scale the drawing.
        sx, sy = canvas.width / max(result.width, 1), canvas.height / max(result.height, 1)
    else:
        sx = sy = 1.0

    draw = ImageDraw.Draw(canvas)
    side = max(canvas.width, canvas.height)
    line = max(1, round(side / 320))
    radius = max(2, round(side / 200))
    font = _font(max(12, round(side / 36)))
    for face in result.faces:
        x1, y1, x2, y2 = face.box.x1 * sx, face.box.y1 * sy, face.box.x2 * sx, face.box.y2 * sy
        draw.rectangle((x1, y1, x2, y2), outline=BOX_COLOR, width=line)
        for name, point in zip(contract.LANDMARK_NAMES, face.landmarks):
            px, py = point.x * sx, point.y * sy
            draw.ellipse((px - radius, py - radius, px + radius, py + radius),
                         fill=LANDMARK_COLORS.get(name, BOX_COLOR))
        if labels:
            text = face_label(face)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left, bottom - top
            pad = max(2, line)
            # Above the box when there is room, else inside its top edge.
            ty = y1 - th - 2 * pad if y1 - th - 2 * pad >= 0 else y1
            tx = min(max(x1, 0), max(canvas.width - tw - 2 * pad, 0))
            draw.rectangle((tx, ty, tx + tw + 2 * pad, ty + th + 2 * pad), fill=BOX_COLOR)
            draw.text((tx + pad - left, ty + pad - top), text, fill=LABEL_TEXT, font=font)
    return canvas
