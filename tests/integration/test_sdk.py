"""The SDK against a real tritonserver running the omniface repository.

Most tests assert structure and consistency (types, sizes, boxes inside the frame,
the same answers for the same pixels), whatever the weights; one checks that the
trained default model reads the astronaut portrait.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from omniface import contract
from omniface.aio import AsyncClient
from omniface.client import Client
from omniface.errors import InvalidInput, ServerUnavailable, Timeout
from omniface.types import Face, FaceAttributes, FrameResult

pytestmark = pytest.mark.integration

TOLERANCE = 1e-3  # px / probability; identical pixels give identical answers on CPU


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_attributes_valid(face: FaceAttributes) -> None:
    assert isinstance(face.age, float) and contract.AGE_MIN - 1e-3 <= face.age <= contract.AGE_MAX + 1e-3
    assert isinstance(face.age_std, float) and face.age_std >= 0
    assert face.gender in contract.GENDERS and 0.5 <= face.gender_score <= 1.0
    assert face.expression in contract.EXPRESSIONS
    assert list(face.expression_scores) == list(contract.EXPRESSIONS)
    assert sum(face.expression_scores.values()) == pytest.approx(1.0, abs=1e-3)
    assert face.expression_scores[face.expression] == max(face.expression_scores.values())
    assert isinstance(face.smile, bool) and 0.0 <= face.smile_score <= 1.0
    assert face.smile == (face.smile_score >= 0.5)
    assert face.head_pose is not None and all(np.isfinite([face.head_pose.yaw, face.head_pose.pitch, face.head_pose.roll]))
    # not in the default model
    assert face.glasses is None and face.glasses_score is None and face.action_units is None


def assert_result_valid(result: FrameResult, height: int, width: int) -> None:
    assert isinstance(result, FrameResult)
    assert (result.height, result.width) == (height, width)
    assert isinstance(result.faces, tuple) and len(result.faces) <= contract.MAX_FACES_DEFAULT
    for face in result.faces:
        assert isinstance(face, Face)
        box = face.box
        assert -1 <= box.x1 <= box.x2 <= width + 1 and -1 <= box.y1 <= box.y2 <= height + 1, box
        assert 0.0 <= face.score <= 1.0 + 1e-6
        assert len(face.landmarks) == contract.NUM_LANDMARKS
        assert all(np.isfinite([p.x, p.y]).all() for p in face.landmarks)
        assert_attributes_valid(face)
    scores = [f.score for f in result.faces]
    assert scores == sorted(scores, reverse=True)  # highest first


@pytest.fixture(scope="module")
def client(triton_server) -> Client:
    with Client(triton_server.grpc_url, timeout=60.0) as client:
        yield client


@pytest.fixture(scope="module")
def frames(astronaut: np.ndarray) -> list[np.ndarray]:
    """Distinct sizes, so a reordering would show in the results."""
    return [
        astronaut,
        np.ascontiguousarray(astronaut[:, ::-1]),
        np.ascontiguousarray(astronaut[40:400, 60:500]),
        np.ascontiguousarray(astronaut[::2, ::2]),
        np.zeros((90, 120, 3), np.uint8),
    ]


def test_is_ready_and_contract(client: Client) -> None:
    assert client.is_ready() is True
    assert client.contract_version() == contract.CONTRACT_VERSION


def test_analyze_array_bytes_and_path_agree(client: Client, astronaut: np.ndarray, tmp_path: Path, assert_same_result) -> None:
    height, width = astronaut.shape[:2]
    from_array = client.analyze(astronaut)
    assert_result_valid(from_array, height, width)
    data = png_bytes(astronaut)
    from_bytes = client.analyze(data)
    path = tmp_path / "astronaut.png"
    path.write_bytes(data)
    from_path = client.analyze(path)
    from_str = client.analyze(str(path))
    for other in (from_bytes, from_path, from_str):
        assert_result_valid(other, height, width)
        assert_same_result(from_array, other)


def test_color_orders_and_grayscale(client: Client, astronaut: np.ndarray, assert_same_result) -> None:
    rgb = client.analyze(astronaut)
    bgr = client.analyze(np.ascontiguousarray(astronaut[..., ::-1]), color_order="BGR")
    assert_same_result(rgb, bgr)
    with Client(client.url, color_order="BGR") as bgr_client:
        assert_same_result(rgb, bgr_client.analyze(np.ascontiguousarray(astronaut[..., ::-1])))
    gray = np.ascontiguousarray(astronaut.mean(axis=2).astype(np.uint8))
    assert_result_valid(client.analyze(gray), *gray.shape)


def test_non_square_and_tiny_frames(client: Client, frames: list[np.ndarray]) -> None:
    for frame in frames[2:]:
        assert_result_valid(client.analyze(frame), *frame.shape[:2])


@pytest.mark.parametrize("concurrency", [1, 4])
def test_analyze_batch_matches_sequential_in_order(client: Client, frames: list[np.ndarray], concurrency: int, assert_same_result) -> None:
    sequential = [client.analyze(f) for f in frames]
    batch = client.analyze_batch(frames * 2, concurrency=concurrency)
    assert len(batch) == 2 * len(frames)
    for got, expected, frame in zip(batch, sequential * 2, frames * 2):
        assert_result_valid(got, *frame.shape[:2])
        assert_same_result(got, expected)


async def test_async_client_matches_sync(triton_server, client: Client, frames: list[np.ndarray], assert_same_result) -> None:
    sequential = [client.analyze(f) for f in frames]
    async with AsyncClient(triton_server.grpc_url, timeout=60.0) as aclient:
        assert await aclient.is_ready() is True
        assert await aclient.contract_version() == contract.CONTRACT_VERSION
        assert_same_result(await aclient.analyze(frames[0]), sequential[0])
        batch = await aclient.analyze_batch(frames, concurrency=4)
        for got, expected in zip(batch, sequential):
            assert_same_result(got, expected)
        crops = [frames[0][100:300, 150:350], frames[0][:112, :112]]
        assert await aclient.analyze_faces(crops) == client.analyze_faces(crops)
        with pytest.raises(InvalidInput):
            await aclient.analyze(b"this is not an image")
        with pytest.raises(Timeout):
            await aclient.analyze(frames[0], timeout=1e-4)


def test_analyze_faces_on_crops(client: Client, astronaut: np.ndarray) -> None:
    result = client.analyze(astronaut)
    crops = [astronaut[int(f.box.y1):int(f.box.y2) + 1, int(f.box.x1):int(f.box.x2) + 1] for f in result.faces
             if f.box.width >= 2 and f.box.height >= 2]
    crops += [astronaut[30:250, 120:320], astronaut[:112, :112], astronaut[::4, ::4]]
    attributes = client.analyze_faces(crops)
    assert len(attributes) == len(crops)
    for item in attributes:
        assert type(item) is FaceAttributes
        assert_attributes_valid(item)
    # same pixels, same answer; BGR crops agree with RGB ones
    again = client.analyze_faces([np.ascontiguousarray(c[..., ::-1]) for c in crops], color_order="BGR")
    for a, b in zip(attributes, again):
        assert a.age == pytest.approx(b.age, abs=0.05) and a.gender == b.gender
    assert client.analyze_faces([]) == []


def test_analyze_faces_chunks_above_the_max_batch(client: Client) -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(contract.ATTRIBUTES_MAX_BATCH + 3, contract.CROP_SIZE, contract.CROP_SIZE, 3),
                         dtype=np.uint8)
    attributes = client.analyze_faces(crops)
    assert len(attributes) == len(crops)
    single = client.analyze_faces(crops[-1:])
    assert attributes[-1].age == pytest.approx(single[0].age, abs=0.05)


def test_bad_input_is_refused_by_the_server(client: Client) -> None:
    with pytest.raises(InvalidInput) as info:
        client.analyze(b"this is not an image")
    assert "omniface: invalid input" not in str(info.value)
    assert client.is_ready()  # one bad request does not take the server down


def test_tiny_timeout_maps_to_timeout(client: Client, astronaut: np.ndarray) -> None:
    client.contract_version()  # the (cached) config fetch is not what times out here
    with pytest.raises(Timeout):
        client.analyze(astronaut, timeout=1e-4)
    assert_result_valid(client.analyze(astronaut), *astronaut.shape[:2])  # the client is still usable


def test_dead_port_is_server_unavailable(astronaut: np.ndarray) -> None:
    from omniface.server import free_port

    with Client(f"127.0.0.1:{free_port()}", retries=1, backoff=0.05, timeout=5.0) as dead:
        assert dead.is_ready() is False
        with pytest.raises(ServerUnavailable, match="omniface serve"):
            dead.analyze(astronaut)


def test_default_model_reads_the_astronaut(client: Client, astronaut: np.ndarray) -> None:
    """The trained default model through the whole served path: one face, where her face
    is (roughly x 150-330, y 40-220 in the 512x512 portrait), with its landmarks inside
    the box and attributes in their ranges. Random-init graphs fail this."""
    faces = [f for f in client.analyze(astronaut).faces if f.score >= 0.5]
    assert len(faces) == 1, faces
    face = faces[0]
    x1, y1, x2, y2 = face.box.x1, face.box.y1, face.box.x2, face.box.y2
    assert 110 < x1 < 230 and 260 < x2 < 370 and 0 <= y1 < 130 and 160 < y2 < 290, face.box
    for point in face.landmarks:
        assert x1 <= point.x <= x2 and y1 <= point.y <= y2, face.landmarks
    assert 1 <= face.age <= 100 and 0 < face.age_std
    assert face.gender in ("female", "male") and 0.5 <= face.gender_score <= 1
    assert abs(sum(face.expression_scores.values()) - 1) < 1e-3 and 0 <= face.smile_score <= 1
