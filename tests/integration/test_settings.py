"""Per-request detection settings against the real server: a request without them is
the request with the server's configured values; each setting changes the result as
asked, the same way a server configured with that value does; out-of-range values are
refused with InvalidInput by the server itself, which keeps serving; and frames are
detected at the size asked, mixed sizes in flight at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from omniface import contract, samples
from omniface.errors import InvalidInput

pytestmark = pytest.mark.integration

tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

DEFAULTS = {"score_threshold": contract.SCORE_THRESHOLD_DEFAULT, "max_faces": contract.MAX_FACES_DEFAULT,
            "min_face_size": contract.MIN_FACE_SIZE_DEFAULT, "det_size": contract.DET_SIZE_DEFAULT}


@pytest.fixture(scope="module")
def client(triton_server):
    from omniface import Client

    with Client(triton_server.grpc_url, timeout=120) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def crowd() -> np.ndarray:
    return samples.face_grid(6, tile=200)


@pytest.fixture(scope="module")
def two_sizes(astronaut) -> np.ndarray:
    """Her portrait at full size and at half size side by side: an ~85 px and an ~43 px face."""
    frame = np.zeros((512, 768, 3), np.uint8)
    frame[:, :512] = astronaut
    frame[128:384, 512:] = astronaut[::2, ::2]
    return frame


def test_without_settings_is_with_the_servers_own(client, astronaut, crowd) -> None:
    for frame in (astronaut, crowd):
        assert client.analyze(frame) == client.analyze(frame, **DEFAULTS)
    result = client.analyze(astronaut)
    assert result.detection_size == (contract.DET_SIZE_DEFAULT, contract.DET_SIZE_DEFAULT)  # 512x512 -> 640x640


def where(result) -> list[tuple]:
    return [(round(f.score, 4), *np.round(f.box.as_tuple(), 1)) for f in result.faces]


def test_the_face_cap_and_threshold_change_the_result_as_asked(client, crowd) -> None:
    everything = client.analyze(crowd, score_threshold=0.0, max_faces=contract.ATTRIBUTES_MAX_BATCH)
    assert len(everything.faces) == contract.ATTRIBUTES_MAX_BATCH  # every location kept, up to the cap
    five = client.analyze(crowd, score_threshold=0.0, max_faces=5)
    assert where(five) == where(everything)[:5]  # the 5 best, in score order
    default = client.analyze(crowd)
    scores = [f.score for f in default.faces]
    assert len(scores) >= 2 and scores[0] - scores[-1] > 0.01, scores  # the frame gives the test something to cut
    cut = (scores[0] + scores[-1]) / 2
    confident = client.analyze(crowd, score_threshold=cut)
    assert where(confident) == [w for w in where(default) if w[0] > cut]


def test_min_face_size_drops_the_small_faces(client, two_sizes) -> None:
    default = client.analyze(two_sizes)
    sides = sorted(max(f.box.width, f.box.height) for f in default.faces)
    assert len(sides) >= 2 and sides[-1] > 1.5 * sides[0], sides  # her face at both sizes
    cut = (sides[0] + sides[-1]) / 2
    large = client.analyze(two_sizes, min_face_size=cut)
    assert where(large) == [w for w, f in zip(where(default), default.faces) if max(f.box.width, f.box.height) >= cut]
    assert len(large.faces) < len(default.faces)


def test_det_size_sets_the_detection_canvas(client, astronaut) -> None:
    by_size = {size: client.analyze(astronaut, det_size=size) for size in (320, 960, "native")}
    assert by_size[320].detection_size == (320, 320)
    assert by_size[960].detection_size == (960, 960)
    assert by_size["native"].detection_size == (512, 512)
    for result in by_size.values():  # every size finds her, reported in the frame's own pixels
        face = result.faces[0]
        assert (result.width, result.height) == (512, 512)
        assert 150 < face.box.center.x < 300 and 40 < face.box.center.y < 200


def test_settings_equal_a_server_configured_with_them(client, permissive_server, astronaut) -> None:
    """The permissive server is configured with score_threshold 0 and max_faces 8."""
    from omniface import Client

    with Client(permissive_server.grpc_url, timeout=120) as configured:
        for frame in (astronaut, astronaut[::2, ::2].copy()):
            want = configured.analyze(frame)
            assert client.analyze(frame, score_threshold=0.0, max_faces=8).to_dict() == want.to_dict()
        # and the other way round: per-request values override the configured ones too
        assert configured.analyze(astronaut, **DEFAULTS) == client.analyze(astronaut)


@pytest.mark.parametrize(("name", "dtype", "value", "words"), [
    (contract.SCORE_THRESHOLD, "FP32", 1.5, ("score_threshold", "between 0 and 1")),
    (contract.SCORE_THRESHOLD, "FP32", float("nan"), ("score_threshold", "finite")),
    (contract.MAX_FACES, "INT32", 0, ("max_faces", "between 1 and 128")),
    (contract.MAX_FACES, "INT32", 256, ("max_faces", "between 1 and 128")),
    (contract.MIN_FACE_SIZE, "FP32", -4.0, ("min_face_size", ">= 0")),
    (contract.DET_SIZE, "INT32", 8, ("det_size", "between 32 and 1920")),
    (contract.DET_SIZE, "INT32", 4096, ("det_size",)),
    (contract.DET_SIZE, "FP32", 640.0, ("det_size", "INT32")),  # Triton checks the declared dtype
])
def test_the_server_refuses_bad_values_and_keeps_serving(triton_server, client, astronaut, name, dtype, value,
                                                         words) -> None:
    raw = tritonclient_grpc.InferenceServerClient(triton_server.grpc_url)
    frame = tritonclient_grpc.InferInput(contract.IMAGE_RAW, list(astronaut.shape), "UINT8")
    frame.set_data_from_numpy(astronaut)
    setting = tritonclient_grpc.InferInput(name, [1], dtype)
    setting.set_data_from_numpy(np.array([value], dtype=contract.NUMPY_DTYPES[dtype]))
    with pytest.raises(InferenceServerException) as info:
        raw.infer(contract.FACE_ANALYSIS, [frame, setting])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    for word in words:
        assert word in str(info.value), str(info.value)
    from omniface import _protocol as protocol

    assert isinstance(protocol.map_error(info.value), InvalidInput)
    assert client.analyze(astronaut).faces  # still serving


def test_the_sdk_refuses_bad_values_before_sending(client, astronaut) -> None:
    with pytest.raises(InvalidInput, match="max_faces"):
        client.analyze(astronaut, max_faces=contract.ATTRIBUTES_MAX_BATCH + 1)
    with pytest.raises(InvalidInput, match="det_size"):
        client.analyze(astronaut, det_size="huge")


def test_mixed_sizes_in_flight_at_once(client, astronaut, crowd) -> None:
    """The detector's dynamic batcher only merges requests of one canvas size; frames of
    every size at once all come back, each as when sent alone."""
    jobs = [(frame, size) for frame in (astronaut, crowd, astronaut[:300]) for size in (320, 640, 960, "native")]
    alone = [client.analyze(frame, det_size=size) for frame, size in jobs]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda job: client.analyze(job[0], det_size=job[1]), jobs * 2))
    for got, want in zip(together, alone * 2):
        assert got.detection_size == want.detection_size and len(got.faces) == len(want.faces)
        for a, b in zip(got.faces, want.faces):
            assert a.score == pytest.approx(b.score, abs=1e-3)
            assert np.allclose(a.box.as_tuple(), b.box.as_tuple(), atol=0.1)


async def test_async_client_takes_the_same_settings(triton_server, astronaut) -> None:
    from omniface import Client
    from omniface.aio import AsyncClient

    async with AsyncClient(triton_server.grpc_url, timeout=120) as client:
        got = await client.analyze(astronaut, det_size=320, max_faces=1)
        batch = await client.analyze_batch([astronaut] * 3, concurrency=2, score_threshold=0.0, max_faces=2)
    with Client(triton_server.grpc_url, timeout=120) as sync:
        assert got == sync.analyze(astronaut, det_size=320, max_faces=1)
        assert [len(r.faces) for r in batch] == [2, 2, 2]
