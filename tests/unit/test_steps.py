"""The python steps' per-request settings without a server: preprocess sizes the frame
for detection at the request's det_size (else its configured one), postprocess applies
the request's threshold, face cap and minimum face size (else its configured ones), and
both refuse out-of-range values with InvalidInput and bad configured defaults at load."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from omniface import contract
from omniface.errors import InvalidInput
from omniface.serving.steps import PostprocessStep, PreprocessStep, request_setting


def setting(name: str, value) -> np.ndarray:
    return np.array([value], dtype=contract.NUMPY_DTYPES[contract.SETTINGS_BY_NAME[name].dtype])


def info(out: dict) -> dict[str, float]:
    return dict(zip(contract.FRAME_INFO_FIELDS, out[contract.FRAME_INFO].tolist()))


def test_preprocess_sizes_the_frame_at_the_requested_det_size() -> None:
    step = PreprocessStep({})
    frame = np.zeros((683, 1024, 3), np.uint8)
    default = step({contract.IMAGE_RAW: frame})
    assert default[contract.DETECTOR_IMAGE].shape == (1, 448, contract.DET_SIZE_DEFAULT, 3)
    assert (info(default)["detector_height"], info(default)["detector_width"]) == (448, 640)
    assert info(default)["orientation"] == 1 and (info(default)["height"], info(default)["width"]) == (683, 1024)
    native = step({contract.IMAGE_RAW: frame, contract.DET_SIZE: setting(contract.DET_SIZE, contract.DET_SIZE_NATIVE)})
    assert native[contract.DETECTOR_IMAGE].shape == (1, 704, 1024, 3) and info(native)["scale"] == 1.0
    big = step({contract.IMAGE_RAW: frame, contract.DET_SIZE: setting(contract.DET_SIZE, 1280)})
    assert big[contract.DETECTOR_IMAGE].shape == (1, 864, 1280, 3)
    assert PreprocessStep({contract.DET_SIZE: "native"})({contract.IMAGE_RAW: frame})[contract.DETECTOR_IMAGE].shape[1:3] == (704, 1024)


@pytest.mark.parametrize("value", [0.5, 31, 1921, -1])
def test_preprocess_refuses_a_bad_det_size(value) -> None:
    step = PreprocessStep({})
    with pytest.raises(InvalidInput, match="det_size"):
        step({contract.IMAGE_RAW: np.zeros((8, 8, 3), np.uint8), contract.DET_SIZE: np.array([value], np.float32)})


def test_preprocess_reports_the_exif_orientation_and_the_upright_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, "JPEG", exif=exif)
    out = PreprocessStep({})({contract.IMAGE_BYTES: np.array([buffer.getvalue()], dtype=object)})
    fields = info(out)
    assert (fields["orientation"], fields["height"], fields["width"]) == (6, 40, 30)  # stored 40x30, shown 30x40
    assert out[contract.SOURCE_IMAGE].shape == (40, 30, 3)


def test_bad_configured_defaults_fail_at_load() -> None:
    with pytest.raises(ValueError, match="det_size"):
        PreprocessStep({contract.DET_SIZE: "4000"})
    with pytest.raises(ValueError, match="max_faces"):
        PostprocessStep({contract.MAX_FACES: "0"})
    with pytest.raises(ValueError, match="score_threshold"):
        PostprocessStep({contract.SCORE_THRESHOLD: "1.5"})


def detector_outputs(height: int, width: int, faces: list[tuple[int, float, float]]) -> dict[str, np.ndarray]:
    """Raw detector outputs of one canvas with a face at each (stride-32 cell index,
    score, half-size in strides)."""
    count = contract.detector_locations(height, width)
    scores = np.zeros((1, count), np.float32)
    boxes = np.ones((1, count, 4), np.float32)
    offset = count - (height // 32) * (width // 32)
    for cell, score, half in faces:
        scores[0, offset + cell] = score
        boxes[0, offset + cell] = half
    return {contract.DETECTOR_SCORES: scores, contract.DETECTOR_BOXES: boxes,
            contract.DETECTOR_LANDMARKS: np.zeros((1, count, 10), np.float32)}


def frame_info(height: int, width: int) -> np.ndarray:
    values = {"height": height, "width": width, "scale": 1.0, "pad_x": 0.0, "pad_y": 0.0, "source_scale": 1.0,
              "orientation": 1, "detector_height": height, "detector_width": width}
    return np.array([values[f] for f in contract.FRAME_INFO_FIELDS], np.float32)


@pytest.fixture
def request_inputs() -> dict[str, np.ndarray]:
    # A 256x320 canvas (8x10 stride-32 cells); three faces far apart, 64, 128 and 192 px tall.
    inputs = detector_outputs(256, 320, [(11, 0.9, 1.0), (25, 0.7, 2.0), (57, 0.6, 3.0)])
    inputs[contract.SOURCE_IMAGE] = np.zeros((256, 320, 3), np.uint8)
    inputs[contract.FRAME_INFO] = frame_info(256, 320)
    return inputs


def test_postprocess_applies_the_requests_settings(request_inputs) -> None:
    step = PostprocessStep({})
    assert step(request_inputs)[contract.FACE_COUNT].tolist() == [3]  # the configured threshold 0.5, cap 64

    def count(**settings) -> int:
        extra = {name: setting(name, value) for name, value in settings.items()}
        return int(step({**request_inputs, **extra})[contract.FACE_COUNT][0])

    assert count(score_threshold=0.65) == 2 and count(score_threshold=0.95) == 0
    assert count(max_faces=1) == 1
    out = step({**request_inputs, contract.MAX_FACES: setting(contract.MAX_FACES, 2)})
    assert out[contract.FACE_SCORES].tolist() == pytest.approx([0.9, 0.7])  # highest scores first
    assert count(min_face_size=100) == 2 and count(min_face_size=150) == 1 and count(min_face_size=500) == 0
    assert count(min_face_size=150, max_faces=5, score_threshold=0.0) == 1
    assert count() == 3  # nothing sticks between requests
    strict = PostprocessStep({contract.SCORE_THRESHOLD: "0.8", contract.MIN_FACE_SIZE: "0"})
    assert int(strict(request_inputs)[contract.FACE_COUNT][0]) == 1  # another server default


@pytest.mark.parametrize(("name", "value", "match"), [
    (contract.SCORE_THRESHOLD, 1.5, "between 0 and 1"),
    (contract.SCORE_THRESHOLD, float("nan"), "finite"),
    (contract.MAX_FACES, 0, "between 1 and 128"),
    (contract.MAX_FACES, 1000, "between 1 and 128"),
    (contract.MIN_FACE_SIZE, -2.0, ">= 0"),
])
def test_postprocess_refuses_out_of_range_settings(request_inputs, name: str, value, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        PostprocessStep({})({**request_inputs, name: setting(name, value)})


def test_request_setting_shapes_and_dtypes() -> None:
    assert request_setting({}, contract.MAX_FACES, 64) == 64
    with pytest.raises(InvalidInput, match="exactly one value"):
        request_setting({contract.MAX_FACES: np.array([1, 2], np.int32)}, contract.MAX_FACES, 64)
    with pytest.raises(InvalidInput, match="a number"):
        request_setting({contract.MAX_FACES: np.array([b"5"], object)}, contract.MAX_FACES, 64)
    assert request_setting({contract.MAX_FACES: np.array([[7]], np.int64)}, contract.MAX_FACES, 64) == 7.0
