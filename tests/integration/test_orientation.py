"""EXIF orientation against the real server: a real photo saved as JPEG the way a camera
stores it under each of the 8 orientations (pixels transposed, the tag saying how to show
them) gives the upright result: the upright size, the same face at the same place, its
eyes where a viewer sees them, and ``FrameResult.orientation`` naming the tag."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from omniface import contract

pytestmark = pytest.mark.integration

STORED = {  # how a camera stores an upright picture for each tag (the inverse of what viewers apply)
    1: (), 2: (Image.Transpose.FLIP_LEFT_RIGHT,), 3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,), 5: (Image.Transpose.TRANSPOSE,), 6: (Image.Transpose.ROTATE_90,),
    7: (Image.Transpose.TRANSVERSE,), 8: (Image.Transpose.ROTATE_270,),
}


def camera_jpeg(upright: np.ndarray, orientation: int) -> bytes:
    """The JPEG a phone writes for ``upright`` held at ``orientation``: stored pixels plus
    an EXIF block with the Orientation tag (and the make/model a phone adds)."""
    stored = Image.fromarray(upright)
    for op in STORED[orientation]:
        stored = stored.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "omniface-test"  # Make
    exif[0x0110] = "orientation-check"  # Model
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def portrait(astronaut: np.ndarray) -> np.ndarray:
    """The astronaut cropped to a 384x512 portrait: rotations change the frame's shape."""
    return np.ascontiguousarray(astronaut[:, 64:448])


@pytest.fixture(scope="module")
def client(triton_server):
    from omniface import Client

    with Client(triton_server.grpc_url, timeout=120) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def upright(client, portrait):
    result = client.analyze(camera_jpeg(portrait, 1))
    assert result.faces and result.faces[0].score > 0.8  # her face, found upright
    return result


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_gives_the_upright_result(client, portrait, upright, orientation: int) -> None:
    data = camera_jpeg(portrait, orientation)
    with Image.open(io.BytesIO(data)) as stored:  # the file really is stored transposed and tagged
        assert stored.getexif()[0x0112] == orientation
        assert stored.size == ((384, 512) if orientation <= 4 else (512, 384))
    result = client.analyze(data)
    assert (result.width, result.height, result.orientation) == (384, 512, orientation)
    face, want = result.faces[0], upright.faces[0]
    assert face.score == pytest.approx(want.score, abs=0.03)
    np.testing.assert_allclose(face.box.as_tuple(), want.box.as_tuple(), atol=3.0)
    np.testing.assert_allclose([(p.x, p.y) for p in face.landmarks], [(p.x, p.y) for p in want.landmarks], atol=3.0)
    left, right = face.landmark("left_eye"), face.landmark("right_eye")
    assert left.x < right.x and abs(left.y - right.y) < 15  # eyes level, in the viewer's order
    # Re-encoding the transposed pixels moves JPEG blocks: attributes wobble a little (age ~3 years).
    assert face.age == pytest.approx(want.age, abs=5) and face.gender == want.gender


def test_the_stored_pixels_alone_are_not_upright(client, portrait, upright) -> None:
    """What the server did before the tag was applied: the same sideways pixels without
    it give another frame, and the face (if found) somewhere else."""
    sideways = np.asarray(Image.fromarray(portrait).transpose(STORED[8][0]))
    result = client.analyze(sideways)  # a raw array: no EXIF, taken as it is
    assert (result.width, result.height, result.orientation) == (512, 384, 1)
    assert not result.faces or np.abs(np.subtract(result.faces[0].box.as_tuple(), upright.faces[0].box.as_tuple())).max() > 20


def test_orientation_reaches_the_raw_response(triton_server, portrait) -> None:
    tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
    raw = tritonclient_grpc.InferenceServerClient(triton_server.grpc_url)
    tensor = tritonclient_grpc.InferInput(contract.IMAGE_BYTES, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([camera_jpeg(portrait, 6)], dtype=object))
    info = dict(zip(contract.FRAME_INFO_FIELDS, raw.infer(contract.FACE_ANALYSIS, [tensor]).as_numpy(contract.FRAME_INFO).tolist()))
    assert (info["height"], info["width"], info["orientation"]) == (512, 384, 6)
