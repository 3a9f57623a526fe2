"""Bad input against the real server: each case gets a correct result or a clear error
naming the problem, both from the server (raw tritonclient requests, so the SDK's own
checks cannot hide a server bug) and through the SDK; and the server answers the next
request correctly."""

from __future__ import annotations

import io

import numpy as np
import pytest

from omniface import contract
from omniface.errors import InvalidInput

pytestmark = pytest.mark.integration

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


def encode(image: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def raw(triton_server):
    """A plain tritonclient, to see what the server itself answers."""
    return tritonclient_grpc.InferenceServerClient(triton_server.grpc_url)


@pytest.fixture(scope="module")
def client(triton_server):
    from omniface import Client

    with Client(triton_server.grpc_url, timeout=120) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def reference(client, astronaut):
    return client.analyze(astronaut)


def send_bytes(raw, data: bytes):
    tensor = tritonclient_grpc.InferInput(contract.IMAGE_BYTES, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=object))
    return raw.infer(contract.FACE_ANALYSIS, [tensor])


def send_raw(raw, array: np.ndarray, datatype: str = "UINT8"):
    tensor = tritonclient_grpc.InferInput(contract.IMAGE_RAW, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return raw.infer(contract.FACE_ANALYSIS, [tensor])


def assert_still_serving(client, astronaut, reference) -> None:
    assert client.analyze(astronaut) == reference  # deterministic: the very same result


def assert_server_refuses(call, *words: str) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    message = str(info.value).lower()
    for word in words:
        assert word.lower() in message, message
    return message


def test_corrupt_image(raw, client, astronaut, reference) -> None:
    junk = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert_server_refuses(lambda: send_bytes(raw, junk), "invalid input", "not a decodable image")
    with pytest.raises(InvalidInput, match="decodable"):
        client.analyze(junk)
    assert_still_serving(client, astronaut, reference)


def test_truncated_jpeg(raw, client, astronaut, reference) -> None:
    data = encode(astronaut, "JPEG", quality=90)
    truncated = data[: len(data) // 2]
    assert_server_refuses(lambda: send_bytes(raw, truncated), "invalid input", "truncated")
    with pytest.raises(InvalidInput, match="truncated"):
        client.analyze(truncated)
    assert_still_serving(client, astronaut, reference)


def test_empty_buffer(raw, client, astronaut, reference) -> None:
    assert_server_refuses(lambda: send_bytes(raw, b""), "invalid input", "empty")
    with pytest.raises(InvalidInput, match="empty"):
        client.analyze(b"")
    assert_still_serving(client, astronaut, reference)


def test_wrong_dtype(raw, client, astronaut, reference) -> None:
    floats = astronaut.astype(np.float32)
    assert_server_refuses(lambda: send_raw(raw, floats, "FP32"), "IMAGE_RAW", "UINT8")
    with pytest.raises(InvalidInput, match="uint8"):
        client.analyze(floats)
    assert_still_serving(client, astronaut, reference)


def test_wrong_shape(raw, client, astronaut, reference) -> None:
    five_channels = np.zeros((64, 64, 5), dtype=np.uint8)
    assert_server_refuses(lambda: send_raw(raw, five_channels), "IMAGE_RAW")
    with pytest.raises(InvalidInput, match="channel|shape"):
        client.analyze(five_channels)
    with pytest.raises(InvalidInput):
        client.analyze(np.zeros((2, 64, 64, 3), dtype=np.uint8))
    assert_still_serving(client, astronaut, reference)


def test_both_and_neither_input(raw, client, astronaut, reference) -> None:
    assert_server_refuses(lambda: raw.infer(contract.FACE_ANALYSIS, []), "exactly one")
    tensors = []
    for name, datatype, value in ((contract.IMAGE_BYTES, "BYTES", np.array([encode(astronaut)], dtype=object)),
                                  (contract.IMAGE_RAW, "UINT8", astronaut)):
        tensor = tritonclient_grpc.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    assert_server_refuses(lambda: raw.infer(contract.FACE_ANALYSIS, tensors), "exactly one")
    assert_still_serving(client, astronaut, reference)


def test_grayscale_image_is_analysed(raw, client, astronaut, reference) -> None:
    gray = np.asarray(np.dot(astronaut[..., :3], [0.299, 0.587, 0.114]), dtype=np.uint8)
    served = send_bytes(raw, encode(gray))
    assert served.as_numpy(contract.FRAME_INFO)[:2].tolist() == [512, 512]
    result = client.analyze(gray)  # a HxW array
    assert (result.width, result.height) == (512, 512)
    assert client.analyze(encode(gray)) == result
    assert_still_serving(client, astronaut, reference)


def test_rgba_image_is_analysed(client, astronaut, reference) -> None:
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert client.analyze(rgba) == reference  # opaque alpha: same pixels, same result
    assert client.analyze(encode(rgba)).faces == client.analyze(encode(astronaut)).faces
    assert_still_serving(client, astronaut, reference)


def test_one_pixel_frame(raw, client, astronaut, reference) -> None:
    pixel = np.full((1, 1, 3), 128, dtype=np.uint8)
    served = send_raw(raw, pixel)
    assert int(served.as_numpy(contract.FACE_COUNT)[0]) == 0
    result = client.analyze(pixel)
    assert (result.width, result.height, result.faces) == (1, 1, ())
    assert_still_serving(client, astronaut, reference)


@pytest.mark.slow
def test_huge_frame(client, astronaut, reference) -> None:
    huge = np.zeros((8000, 8000, 3), dtype=np.uint8)
    huge[:512, :512] = astronaut
    result = client.analyze(encode(huge, "PNG", compress_level=1))
    assert (result.width, result.height) == (8000, 8000)
    for face in result.faces:
        assert 0 <= face.box.x1 <= face.box.x2 <= 8000 and 0 <= face.box.y1 <= face.box.y2 <= 8000
    raw_result = client.analyze(huge)  # 192 MB of raw pixels over gRPC
    assert (raw_result.width, raw_result.height) == (8000, 8000)
    assert_still_serving(client, astronaut, reference)


def test_too_many_pixels_is_refused(raw, client, astronaut, reference) -> None:
    # A valid PNG header that claims 20000 x 20000 pixels: refused before decoding.
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    bomb = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    message = assert_server_refuses(lambda: send_bytes(raw, bomb), "invalid input")
    assert "pixel" in message or "large" in message
    with pytest.raises(InvalidInput):
        client.analyze(bomb)
    assert_still_serving(client, astronaut, reference)


def test_frame_without_faces(client, astronaut, reference) -> None:
    from omniface import samples

    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    result = client.analyze(frame)
    assert result.faces == () and (result.width, result.height) == (640, 480)
    coffee = client.analyze(samples.no_face())
    assert all(0 <= f.box.x1 <= f.box.x2 <= coffee.width for f in coffee.faces)
    assert_still_serving(client, astronaut, reference)


def test_more_faces_than_the_cap(permissive_server, astronaut) -> None:
    """Threshold 0 makes every location a candidate: NMS leaves far more than the cap
    of 8 (a postprocess setting), and exactly 8 come back, best first."""
    from omniface import Client, samples

    with Client(permissive_server.grpc_url, timeout=120) as capped:
        result = capped.analyze(samples.face_grid(24))
        assert len(result.faces) == 8
        scores = [face.score for face in result.faces]
        assert scores == sorted(scores, reverse=True)
        assert all(face.age is not None and face.expression is not None for face in result.faces)
        assert len(capped.analyze(astronaut).faces) == 8
