"""Sample frames the project may ship: public-domain pictures inside the scikit-image wheel.

``astronaut`` is NASA's portrait of Eileen Collins (public domain). The multi-face frames
are built from it (mirrored, rescaled copies on a canvas), so the demo, the benchmarks
and the tests can exercise many faces per frame without any face data set.
"""

from __future__ import annotations

import numpy as np

from omniface.errors import require


def astronaut() -> np.ndarray:
    """NASA's astronaut portrait, 512x512 RGB uint8."""
    data = require("skimage.data", "demo")
    return np.ascontiguousarray(data.astronaut())


def no_face() -> np.ndarray:
    """A frame with no face in it (scikit-image's coffee cup, public domain), RGB uint8."""
    data = require("skimage.data", "demo")
    return np.ascontiguousarray(data.coffee())


def face_grid(faces: int, tile: int = 160, columns: int | None = None) -> np.ndarray:
    """A frame with ``faces`` copies of the astronaut's head, alternately mirrored, on a
    grid of ``tile`` px cells (a stand-in for a crowd: same person, real face pixels)."""
    from PIL import Image

    portrait = astronaut()
    head = portrait[20:300, 100:330]  # her face and helmet, roughly square
    head_image = Image.fromarray(head).resize((tile, int(tile * head.shape[0] / head.shape[1])), Image.BILINEAR)
    cell = np.asarray(head_image)
    columns = columns or int(np.ceil(np.sqrt(faces * 4 / 3)))
    rows = int(np.ceil(faces / columns))
    canvas = np.full((rows * cell.shape[0], columns * cell.shape[1], 3), 40, dtype=np.uint8)
    for index in range(faces):
        r, c = divmod(index, columns)
        copy = cell[:, ::-1] if index % 2 else cell
        canvas[r * cell.shape[0]:(r + 1) * cell.shape[0], c * cell.shape[1]:(c + 1) * cell.shape[1]] = copy
    return canvas


def sample_frames() -> dict[str, np.ndarray]:
    """The demo's frames, by name."""
    return {"astronaut": astronaut(), "group_of_6": face_grid(6, tile=200), "coffee_no_face": no_face()}
