"""The SDK's wire protocol without a server: request tensors, response parsing,
the contract check, error mapping, and the clients' retry/timeout shell over fakes."""

from __future__ import annotations

import asyncio
import io
import struct
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from omniface import _protocol as protocol
from omniface import contract
from omniface.errors import (
    ContractMismatch,
    InvalidInput,
    OmnifaceError,
    ServerError,
    ServerUnavailable,
    Timeout,
)
from omniface.types import FaceAttributes, FrameResult, HeadPose

ROOT = Path(__file__).resolve().parents[2]
ENSEMBLE = contract.MODELS[contract.FACE_ANALYSIS]


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def tensor(infer_input) -> tuple[str, str, list[int]]:
    message = infer_input._get_tensor()
    return message.name, message.datatype, list(message.shape)


def bytes_payload(infer_input) -> bytes:
    """The single element of a serialised BYTES [1] tensor (4-byte length + data)."""
    raw = infer_input._get_content()
    (length,) = struct.unpack("<I", raw[:4])
    assert len(raw) == 4 + length
    return raw[4:]


@pytest.fixture
def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [grpcclient, aioclient], ids=["grpc", "aio"])
def test_path_and_bytes_are_sent_encoded(tmp_path: Path, frame: np.ndarray, module) -> None:
    data = png_bytes(frame)
    path = tmp_path / "frame.png"
    path.write_bytes(data)
    for source in (str(path), path, data, bytearray(data), memoryview(data)):
        (infer_input,) = protocol.build_frame_inputs(source, "RGB", module)
        assert tensor(infer_input) == (contract.IMAGE_BYTES, ENSEMBLE.input(contract.IMAGE_BYTES).dtype, [1])
        assert bytes_payload(infer_input) == data


@pytest.mark.parametrize("module", [grpcclient, aioclient], ids=["grpc", "aio"])
def test_rgb_array_is_sent_raw(frame: np.ndarray, module) -> None:
    (infer_input,) = protocol.build_frame_inputs(frame, "RGB", module)
    assert tensor(infer_input) == (contract.IMAGE_RAW, ENSEMBLE.input(contract.IMAGE_RAW).dtype, [37, 53, 3])
    assert infer_input._get_content() == frame.tobytes()


def test_bgr_array_is_flipped_to_rgb(frame: np.ndarray) -> None:
    bgr = np.ascontiguousarray(frame[..., ::-1])
    (infer_input,) = protocol.build_frame_inputs(bgr, "bgr", grpcclient)
    assert infer_input._get_content() == frame.tobytes()


def test_non_contiguous_array_is_sent(frame: np.ndarray) -> None:
    view = frame[::2, ::3]
    (infer_input,) = protocol.build_frame_inputs(view, "RGB", grpcclient)
    assert tensor(infer_input)[2] == list(view.shape)
    assert infer_input._get_content() == np.ascontiguousarray(view).tobytes()


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1)])
def test_grayscale_array_is_replicated(shape: tuple[int, ...]) -> None:
    gray = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    (infer_input,) = protocol.build_frame_inputs(gray, "RGB", grpcclient)
    assert tensor(infer_input) == (contract.IMAGE_RAW, "UINT8", [20, 30, 3])
    expected = np.repeat(gray.reshape(20, 30, 1), 3, axis=2)
    assert infer_input._get_content() == expected.tobytes()


def test_pil_image_is_accepted(frame: np.ndarray) -> None:
    from PIL import Image

    (infer_input,) = protocol.build_frame_inputs(Image.fromarray(frame), "BGR", grpcclient)
    assert infer_input._get_content() == frame.tobytes()  # a PIL image is RGB whatever color_order says


@pytest.mark.parametrize(
    "bad, match",
    [
        ("/does/not/exist.png", "does not exist"),
        (b"", "empty"),
        (np.zeros((4, 4, 3), dtype=np.float32), "uint8"),
        (np.zeros((4, 4, 2), dtype=np.uint8), "shape"),
        (np.zeros((2, 4, 4, 3), dtype=np.uint8), "shape"),
        ([1, 2, 3], "cannot analyse a list"),
        (42, "cannot analyse a int"),
    ],
)
def test_bad_frames_raise_invalid_input(bad, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        protocol.build_frame_inputs(bad, "RGB", grpcclient)


def test_directory_and_bad_color_order(tmp_path: Path, frame: np.ndarray) -> None:
    with pytest.raises(InvalidInput, match="directory"):
        protocol.build_frame_inputs(tmp_path, "RGB", grpcclient)
    with pytest.raises(InvalidInput, match="color_order"):
        protocol.build_frame_inputs(frame, "HSV", grpcclient)


def test_requested_outputs_are_the_ensemble_outputs() -> None:
    assert protocol.frame_output_names() == tuple(t.name for t in ENSEMBLE.outputs)
    with_glasses = protocol.frame_output_names((*contract.DEFAULT_TASKS, "glasses"))
    assert contract.GLASSES in with_glasses and contract.GLASSES not in protocol.frame_output_names()
    outputs = protocol.requested_outputs(protocol.frame_output_names(), grpcclient)
    assert [o._get_tensor().name for o in outputs] == list(protocol.frame_output_names())
    attrs = protocol.attribute_output_names()
    assert attrs == tuple(t.name for t in contract.MODELS[contract.FACE_ATTRIBUTES].outputs)


def test_crops_are_resized_batched_and_chunked() -> None:
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in [(112, 112), (50, 80), (200, 150), (112, 112), (9, 9)]]
    chunks = protocol.build_crop_inputs(crops, grpcclient, max_batch=2)
    assert [rows for _, rows in chunks] == [2, 2, 1]
    for inputs, rows in chunks:
        (infer_input,) = inputs
        assert tensor(infer_input) == (contract.CROPS, "UINT8", [rows, contract.CROP_SIZE, contract.CROP_SIZE, 3])
    # an already 112x112 crop is sent untouched
    first = np.frombuffer(chunks[0][0][0]._get_content(), dtype=np.uint8).reshape(2, 112, 112, 3)
    assert np.array_equal(first[0], crops[0])
    # default chunking follows the attributes model's max batch
    many = protocol.build_crop_inputs(np.zeros((contract.ATTRIBUTES_MAX_BATCH + 1, 112, 112, 3), np.uint8), grpcclient)
    assert [rows for _, rows in many] == [contract.ATTRIBUTES_MAX_BATCH, 1]
    assert protocol.build_crop_inputs([], grpcclient) == []


def test_bgr_crops_and_bad_crops() -> None:
    crop = np.random.default_rng(2).integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    ((infer_input,), _), = protocol.build_crop_inputs([crop[..., ::-1]], grpcclient, "BGR")
    assert infer_input._get_content() == crop.tobytes()
    with pytest.raises(InvalidInput, match="crop 1"):
        protocol.build_crop_inputs([crop, np.zeros((5, 5), np.float64)], grpcclient)
    with pytest.raises(InvalidInput, match="crop 0"):
        protocol.build_crop_inputs(["face.png"], grpcclient)
    with pytest.raises(InvalidInput):
        protocol.build_crop_inputs(crop, grpcclient)  # one 3-D array is not a batch
    with pytest.raises(InvalidInput):
        protocol.build_crop_inputs("face.png", grpcclient)


# ----------------------------------------------------------------------------------
# Responses
# ----------------------------------------------------------------------------------


def frame_info(height: int, width: int) -> np.ndarray:
    values = {"height": height, "width": width, "scale": 1.0, "pad_x": 0.0, "pad_y": 0.0, "source_scale": 1.0,
              "orientation": 1, "detector_height": 480, "detector_width": 640}
    return np.array([values[f] for f in contract.FRAME_INFO_FIELDS], dtype=np.float32)


def synthetic_outputs(count: int, rows: int, tasks=contract.DEFAULT_TASKS, height: int = 480, width: int = 640) -> dict:
    """What the ensemble sends: ``rows`` >= max(count, 1) rows, ``count`` real."""
    rng = np.random.default_rng(count * 10 + rows)
    boxes = np.array([[10 + 50 * i, 20, 60 + 50 * i, 90] for i in range(rows)], dtype=np.float32)
    outputs = {
        contract.FACE_COUNT: np.array([count], dtype=np.int32),
        contract.FACE_BOXES: boxes,
        contract.FACE_SCORES: np.linspace(0.99, 0.6, rows, dtype=np.float32),
        contract.FACE_LANDMARKS: rng.uniform(0, 100, size=(rows, contract.NUM_LANDMARKS, 2)).astype(np.float32),
        contract.FRAME_INFO: frame_info(height, width),
    }
    for spec in contract.attribute_outputs(tuple(tasks)):
        outputs[spec.name] = rng.uniform(0, 1, size=(rows, *spec.dims)).astype(np.float32)
    return outputs


def test_parse_no_face_ignores_the_padded_row() -> None:
    result = protocol.parse_frame_result(synthetic_outputs(count=0, rows=1, height=300, width=400))
    assert result == FrameResult(width=400, height=300, faces=(), orientation=1, detection_size=(640, 480))


def test_parse_a_contract_1_0_frame_info() -> None:
    outputs = synthetic_outputs(count=0, rows=1, height=300, width=400)
    outputs[contract.FRAME_INFO] = outputs[contract.FRAME_INFO][: contract.FRAME_INFO_FIELDS_1_0]
    result = protocol.parse_frame_result(outputs)
    assert result == FrameResult(width=400, height=300, faces=())
    assert result.orientation is None and result.detection_size is None


def test_parse_two_faces() -> None:
    outputs = synthetic_outputs(count=2, rows=3)  # one extra padded row is ignored too
    outputs[contract.GENDER][:, 0] = [0.8, 0.3, 0.5]
    outputs[contract.SMILE][:, 0] = [0.1, 0.9, 0.5]
    outputs[contract.AGE][:, 0] = [31.5, 7.0, 0]
    outputs[contract.EXPRESSION][:] = 0.01
    outputs[contract.EXPRESSION][0, contract.EXPRESSIONS.index("happy")] = 0.94
    outputs[contract.EXPRESSION][1, contract.EXPRESSIONS.index("sad")] = 0.94
    outputs[contract.HEAD_POSE][:] = [[10.0, -5.0, 2.5]] * 3
    result = protocol.parse_frame_result(outputs)
    assert (result.width, result.height, len(result.faces)) == (640, 480, 2)
    first, second = result.faces
    assert first.box.as_tuple() == (10.0, 20.0, 60.0, 90.0) and second.box.x1 == 60.0
    assert first.score == pytest.approx(0.99)
    assert np.allclose([(p.x, p.y) for p in first.landmarks], outputs[contract.FACE_LANDMARKS][0])
    assert first.landmark("nose") == first.landmarks[contract.LANDMARK_NAMES.index("nose")]
    assert (first.gender, first.gender_score) == ("female", pytest.approx(0.8))
    assert (second.gender, second.gender_score) == ("male", pytest.approx(0.7))
    assert (first.smile, second.smile) == (False, True)
    assert first.smile_score == pytest.approx(0.1)
    assert first.age == pytest.approx(31.5) and second.age_std is not None
    assert (first.expression, second.expression) == ("happy", "sad")
    assert list(first.expression_scores) == list(contract.EXPRESSIONS)
    assert first.expression_score == pytest.approx(0.94)
    assert first.head_pose == HeadPose(yaw=10.0, pitch=-5.0, roll=2.5)
    assert first.glasses is None and first.glasses_score is None and first.action_units is None
    for face in result.faces:  # plain Python numbers, not numpy scalars
        assert type(face.score) is float and type(face.box.x1) is float and type(face.age) is float
        assert type(face.smile) is bool


def test_missing_optional_tasks_are_none_and_extra_tasks_are_parsed() -> None:
    bare = synthetic_outputs(count=1, rows=1, tasks=())
    face = protocol.parse_frame_result(bare).faces[0]
    for name in ("age", "age_std", "gender", "gender_score", "expression", "expression_scores",
                 "smile", "smile_score", "head_pose", "glasses", "glasses_score", "action_units"):
        assert getattr(face, name) is None, name
    full = synthetic_outputs(count=1, rows=1, tasks=tuple(t.name for t in contract.TASKS))
    face = protocol.parse_frame_result(full).faces[0]
    assert isinstance(face.glasses, bool) and face.glasses_score is not None
    assert list(face.action_units) == list(contract.ACTION_UNITS)


def test_malformed_responses_raise_server_error() -> None:
    outputs = synthetic_outputs(count=3, rows=2)
    with pytest.raises(ServerError, match="malformed"):
        protocol.parse_frame_result(outputs)
    outputs = synthetic_outputs(count=1, rows=1)
    del outputs[contract.FACE_BOXES]
    with pytest.raises(ServerError, match=contract.FACE_BOXES):
        protocol.parse_frame_result(outputs)


def test_parse_face_attributes() -> None:
    outputs = {spec.name: np.full((4, *spec.dims), 0.75, np.float32) for spec in contract.attribute_outputs()}
    attributes = protocol.parse_face_attributes(outputs, 4)
    assert len(attributes) == 4 and all(type(a) is FaceAttributes for a in attributes)
    assert attributes[0].gender == "female" and attributes[0].smile is True
    assert protocol.parse_face_attributes(outputs, 0) == []


class FakeResult:
    def __init__(self, outputs: dict) -> None:
        self.outputs = outputs

    def as_numpy(self, name: str):
        return self.outputs.get(name)


def test_outputs_of_skips_absent_tensors() -> None:
    outputs = synthetic_outputs(count=1, rows=1, tasks=("age",))
    got = protocol.outputs_of(FakeResult(outputs), protocol.frame_output_names())
    assert set(got) == set(outputs)


# ----------------------------------------------------------------------------------
# Contract check
# ----------------------------------------------------------------------------------


def params(version: str | None, **extra: str) -> dict:
    values = dict(extra)
    if version is not None:
        values[contract.CONTRACT_VERSION_PARAMETER] = version
    return {k: {"string_value": v} for k, v in values.items()}


def bump(version: str, part: int) -> str:
    numbers = [int(x) for x in version.split(".")]
    numbers[part] += 1
    return ".".join(map(str, numbers))


def test_contract_same_and_minor_differences_pass() -> None:
    assert protocol.check_contract(params(contract.CONTRACT_VERSION)) == contract.CONTRACT_VERSION
    assert protocol.check_contract(params(bump(contract.CONTRACT_VERSION, 1))) == bump(contract.CONTRACT_VERSION, 1)
    assert protocol.check_contract(params(bump(contract.CONTRACT_VERSION, 2)))
    assert protocol.check_contract({contract.CONTRACT_VERSION_PARAMETER: contract.CONTRACT_VERSION})  # plain strings


def test_contract_major_difference_is_refused() -> None:
    newer = bump(contract.CONTRACT_VERSION, 0)
    with pytest.raises(ContractMismatch) as info:
        protocol.check_contract(params(newer))
    message = str(info.value)
    assert newer in message and contract.CONTRACT_VERSION in message and "upgrade the SDK" in message
    older = "0.9.0"
    with pytest.raises(ContractMismatch, match="upgrade the server"):
        protocol.check_contract(params(older))
    with pytest.raises(ContractMismatch):
        protocol.check_contract(params("banana"))


def test_contract_missing_parameter_is_refused() -> None:
    with pytest.raises(ContractMismatch, match="not an omniface repository"):
        protocol.check_contract(params(None, tasks="age"))
    with pytest.raises(ContractMismatch):
        protocol.check_contract({})


def test_model_info_reads_tasks() -> None:
    config = {"config": {"name": "face_analysis", "parameters": params(contract.CONTRACT_VERSION, tasks="smile,age,future_task")}}
    info = protocol.model_info(config, contract.FACE_ANALYSIS)
    assert info.tasks == ("age", "smile") and info.contract_version == contract.CONTRACT_VERSION
    assert protocol.model_info({"config": {}}, "x", check=False).tasks == contract.DEFAULT_TASKS
    with pytest.raises(ContractMismatch):
        protocol.model_info({"config": {}}, "x")


def test_committed_ensemble_declares_this_contract() -> None:
    text = (ROOT / "model_repository" / contract.FACE_ANALYSIS / "config.pbtxt").read_text()
    assert contract.CONTRACT_VERSION_PARAMETER in text and f'"{contract.CONTRACT_VERSION}"' in text


# ----------------------------------------------------------------------------------
# Error mapping
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, status, expected",
    [
        ("failed to connect to all addresses", "StatusCode.UNAVAILABLE", ServerUnavailable),
        ("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED", Timeout),
        ("unexpected shape for input 'IMAGE_RAW'", "StatusCode.INVALID_ARGUMENT", InvalidInput),
        ("in ensemble 'face_analysis', omniface: invalid input: cannot decode the image", "StatusCode.INVALID_ARGUMENT", InvalidInput),
        ("omniface: invalid input: frame too large", "StatusCode.INTERNAL", InvalidInput),
        ("Request for unknown model: 'face_analysis' is not found", "StatusCode.NOT_FOUND", ServerUnavailable),
        ("Request for unknown model: 'face_analysis' has no available versions", "StatusCode.UNAVAILABLE", ServerUnavailable),
        ("omniface: internal error: boom", "StatusCode.INTERNAL", ServerError),
        ("something odd", None, ServerError),
    ],
)
def test_map_error(message: str, status: str | None, expected: type) -> None:
    error = protocol.map_error(InferenceServerException(message, status=status), url="h:1", timeout=2.0)
    assert type(error) is expected
    assert isinstance(error, OmnifaceError)


def test_map_error_messages_name_the_fix() -> None:
    down = protocol.map_error(InferenceServerException("refused", status="StatusCode.UNAVAILABLE"), url="h:1")
    assert "omniface serve" in str(down) and "h:1" in str(down)
    missing = protocol.map_error(InferenceServerException("Request for unknown model: 'x' is not found", status="StatusCode.NOT_FOUND"))
    assert "omniface serve" in str(missing)
    slow = protocol.map_error(InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED"), timeout=0.5)
    assert "0.5 s" in str(slow) and "timeout" in str(slow)
    bad = protocol.map_error(InferenceServerException("omniface: invalid input: cannot decode", status="StatusCode.INVALID_ARGUMENT"))
    assert "cannot decode" in str(bad) and "omniface: invalid input" not in str(bad)


def test_only_outages_are_retryable() -> None:
    assert protocol.is_retryable(InferenceServerException("x", status="StatusCode.UNAVAILABLE"))
    for status in ("StatusCode.DEADLINE_EXCEEDED", "StatusCode.INVALID_ARGUMENT", "StatusCode.INTERNAL", None):
        assert not protocol.is_retryable(InferenceServerException("x", status=status))


def test_normalize_url() -> None:
    assert protocol.normalize_url("localhost:8001") == ("localhost:8001", False)
    assert protocol.normalize_url("grpc://h:1") == ("h:1", False)
    assert protocol.normalize_url("grpcs://h:1/") == ("h:1", True)
    with pytest.raises(InvalidInput, match="gRPC"):
        protocol.normalize_url("http://h:8000")
    with pytest.raises(InvalidInput):
        protocol.normalize_url("")


# ----------------------------------------------------------------------------------
# The clients' I/O shell over a fake tritonclient
# ----------------------------------------------------------------------------------


class FakeTriton:
    """Stands in for tritonclient's InferenceServerClient: scripted failures, then a
    canned response; records calls."""

    def __init__(self, failures: list[InferenceServerException] | None = None, version: str = contract.CONTRACT_VERSION,
                 count: int = 1) -> None:
        self.failures = list(failures or [])
        self.version = version
        self.count = count
        self.calls: list[tuple[str, dict]] = []

    def _maybe_fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    def get_model_config(self, name, as_json=False, client_timeout=None):
        self.calls.append(("config", {"name": name, "client_timeout": client_timeout}))
        self._maybe_fail()
        return {"config": {"name": name, "parameters": params(self.version, tasks=",".join(contract.DEFAULT_TASKS))}}

    def infer(self, model_name, inputs, outputs=None, client_timeout=None, **_):
        self.calls.append(("infer", {"model": model_name, "client_timeout": client_timeout,
                                     "outputs": [o._get_tensor().name for o in outputs or []],
                                     "inputs": [i._get_tensor().name for i in inputs]}))
        self._maybe_fail()
        if model_name == contract.FACE_ATTRIBUTES:
            rows = list(inputs[0]._get_tensor().shape)[0]
            return FakeResult({s.name: np.full((rows, *s.dims), 0.6, np.float32) for s in contract.attribute_outputs()})
        return FakeResult(synthetic_outputs(count=self.count, rows=max(self.count, 1)))

    def is_server_live(self, client_timeout=None):
        self._maybe_fail()
        return True

    is_server_ready = is_server_live

    def is_model_ready(self, name, client_timeout=None):
        self._maybe_fail()
        return True

    def close(self):
        self.calls.append(("close", {}))


class AsyncFakeTriton(FakeTriton):
    async def get_model_config(self, *args, **kwargs):
        return FakeTriton.get_model_config(self, *args, **kwargs)

    async def infer(self, *args, **kwargs):
        await asyncio.sleep(0)
        return FakeTriton.infer(self, *args, **kwargs)

    async def is_server_live(self, client_timeout=None):
        return FakeTriton.is_server_live(self, client_timeout)

    is_server_ready = is_server_live

    async def is_model_ready(self, name, client_timeout=None):
        return FakeTriton.is_model_ready(self, name, client_timeout)

    async def close(self):
        FakeTriton.close(self)


def unavailable() -> InferenceServerException:
    return InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")


def sync_client(fake: FakeTriton, **kwargs):
    from omniface.client import Client

    client = Client("127.0.0.1:1", backoff=0.0, **kwargs)
    client._triton.close()
    client._triton = fake
    return client


def test_client_retries_outages_then_succeeds(frame: np.ndarray) -> None:
    fake = FakeTriton([unavailable(), unavailable()])
    with sync_client(fake, retries=2) as client:
        result = client.analyze(frame)
    assert len(result.faces) == 1 and result.width == 640
    kinds = [kind for kind, _ in fake.calls]
    assert kinds == ["config", "config", "config", "infer", "close"]


def test_client_gives_up_after_retries(frame: np.ndarray) -> None:
    fake = FakeTriton([unavailable()] * 5)
    client = sync_client(fake, retries=2)
    with pytest.raises(ServerUnavailable, match="omniface serve"):
        client.analyze(frame)
    assert len(fake.calls) == 3


def test_client_never_retries_bad_input_or_timeouts(frame: np.ndarray) -> None:
    bad = InferenceServerException("omniface: invalid input: cannot decode", status="StatusCode.INVALID_ARGUMENT")
    fake = FakeTriton()
    client = sync_client(fake, retries=3)
    client._model(contract.FACE_ANALYSIS)
    fake.failures = [bad, bad]
    with pytest.raises(InvalidInput, match="cannot decode"):
        client.analyze(b"not an image")
    assert [k for k, _ in fake.calls].count("infer") == 1
    fake.failures = [InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED")] * 2
    with pytest.raises(Timeout):
        client.analyze(frame, timeout=0.25)
    assert [k for k, _ in fake.calls].count("infer") == 2
    assert fake.calls[-1][1]["client_timeout"] == 0.25


def test_client_checks_the_contract_once(frame: np.ndarray) -> None:
    fake = FakeTriton()
    client = sync_client(fake, timeout=7.0)
    client.analyze(frame)
    client.analyze(frame)
    kinds = [k for k, _ in fake.calls]
    assert kinds.count("config") == 1 and kinds.count("infer") == 2
    infer = fake.calls[1][1]
    assert infer["client_timeout"] == 7.0 and infer["inputs"] == [contract.IMAGE_RAW]
    assert infer["outputs"] == list(protocol.frame_output_names())
    with pytest.raises(ContractMismatch):
        sync_client(FakeTriton(version="99.0.0")).analyze(frame)
    assert sync_client(FakeTriton(version="99.0.0"), check_contract=False).analyze(frame).width == 640


def test_client_bad_input_fails_before_any_call() -> None:
    fake = FakeTriton()
    with pytest.raises(InvalidInput):
        sync_client(fake).analyze("/no/such/file.jpg")
    assert fake.calls == []


def test_client_batch_keeps_order(frame: np.ndarray) -> None:
    fake = FakeTriton()
    client = sync_client(fake)
    frames = [frame[: 10 + i] for i in range(9)]
    assert client.analyze_batch(frames, concurrency=3) == [client.analyze(f) for f in frames]
    assert client.analyze_batch(iter(frames), concurrency=1) == client.analyze_batch(frames, concurrency=4)
    assert client.analyze_batch([], concurrency=4) == []
    with pytest.raises(InvalidInput):
        client.analyze_batch(frames, concurrency=0)
    with pytest.raises(InvalidInput):
        client.analyze_batch([frame, "/no/such/file.jpg", frame], concurrency=2)


def test_client_analyze_faces_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTriton()
    client = sync_client(fake)
    monkeypatch.setattr(contract, "ATTRIBUTES_MAX_BATCH", contract.ATTRIBUTES_MAX_BATCH)  # untouched default
    crops = np.zeros((contract.ATTRIBUTES_MAX_BATCH + 2, 112, 112, 3), np.uint8)
    attributes = client.analyze_faces(crops)
    assert len(attributes) == len(crops) and attributes[0].gender == "female"
    assert [k for k, _ in fake.calls].count("infer") == 2
    assert client.analyze_faces([]) == []


def test_client_is_ready_never_raises() -> None:
    assert sync_client(FakeTriton()).is_ready()
    assert not sync_client(FakeTriton([unavailable()])).is_ready()
    closed = sync_client(FakeTriton())
    closed.close()
    assert not closed.is_ready()
    with pytest.raises(ServerUnavailable, match="closed"):
        closed.analyze(b"x")


def test_client_rejects_bad_settings() -> None:
    from omniface.client import Client

    for kwargs in ({"timeout": 0}, {"retries": -1}, {"backoff": -1}, {"color_order": "XYZ"}):
        with pytest.raises(InvalidInput):
            Client("127.0.0.1:1", **kwargs)


def test_client_against_a_closed_port_is_unavailable(frame: np.ndarray) -> None:
    from omniface.client import Client
    from omniface.server import free_port

    with Client(f"127.0.0.1:{free_port()}", retries=1, backoff=0.0, timeout=5.0) as client:
        assert client.is_ready() is False
        with pytest.raises(ServerUnavailable, match="omniface serve"):
            client.analyze(frame)


async def test_async_client_matches_sync(frame: np.ndarray) -> None:
    from omniface.aio import AsyncClient

    sync = sync_client(FakeTriton())
    fake = AsyncFakeTriton([unavailable()])
    async with AsyncClient("127.0.0.1:1", backoff=0.0) as client:
        client._triton = fake
        assert await client.is_ready() is False  # the scripted outage: is_ready does not raise
        frames = [frame[: 10 + i] for i in range(7)]
        assert await client.analyze(frame) == sync.analyze(frame)
        assert await client.analyze_batch(frames, concurrency=3) == sync.analyze_batch(frames, concurrency=1)
        assert await client.analyze_batch(iter(frames), concurrency=1) == sync.analyze_batch(frames)
        assert await client.analyze_faces([frame]) == sync.analyze_faces([frame])
        assert await client.is_ready()
        with pytest.raises(InvalidInput):
            await client.analyze_batch([frame, "/no/such.png"], concurrency=2)
    assert fake.calls[-1][0] == "close"


async def test_async_client_retries_and_maps_errors(frame: np.ndarray) -> None:
    from omniface.aio import AsyncClient

    client = AsyncClient("127.0.0.1:1", retries=1, backoff=0.0)
    client._triton = AsyncFakeTriton([unavailable(), unavailable()])
    with pytest.raises(ServerUnavailable):
        await client.analyze(frame)
    client._triton = AsyncFakeTriton([unavailable()])
    assert (await client.analyze(frame)).width == 640
    await client.close()
    with pytest.raises(ServerUnavailable, match="closed"):
        await client.analyze(frame)


async def test_async_client_against_a_closed_port(frame: np.ndarray) -> None:
    from omniface.aio import AsyncClient
    from omniface.server import free_port

    async with AsyncClient(f"127.0.0.1:{free_port()}", retries=0, timeout=5.0) as client:
        assert await client.is_ready() is False
        with pytest.raises(ServerUnavailable):
            await client.analyze(frame)


# ----------------------------------------------------------------------------------
# Per-request detection settings
# ----------------------------------------------------------------------------------


def settings_sent(infer_inputs) -> dict[str, float]:
    """``{name: value}`` of the setting tensors among a request's inputs."""
    sent = {}
    for infer_input in infer_inputs:
        name, datatype, shape = tensor(infer_input)
        if name in contract.SETTINGS_BY_NAME:
            spec = contract.SETTINGS_BY_NAME[name]
            assert (datatype, shape) == (spec.dtype, [1]), name
            dtype = np.dtype(contract.NUMPY_DTYPES[datatype])
            sent[name] = np.frombuffer(infer_input._get_content(), dtype=dtype)[0].item()
    return sent


def test_settings_become_one_optional_input_each() -> None:
    settings = protocol.detection_settings(score_threshold=0.25, max_faces=5, min_face_size=24, det_size="native")
    assert settings == {contract.SCORE_THRESHOLD: 0.25, contract.MAX_FACES: 5, contract.MIN_FACE_SIZE: 24.0,
                        contract.DET_SIZE: contract.DET_SIZE_NATIVE}
    inputs = protocol.build_settings_inputs(settings, grpcclient)
    assert settings_sent(inputs) == settings
    assert protocol.detection_settings() == {}  # nothing given: nothing sent, the server's values apply
    assert protocol.detection_settings(det_size=960, score_threshold=1) == {contract.DET_SIZE: 960,
                                                                             contract.SCORE_THRESHOLD: 1.0}


@pytest.mark.parametrize(("settings", "match"), [
    ({"score_threshold": 1.01}, "score_threshold must be between 0 and 1"),
    ({"score_threshold": -0.1}, "score_threshold"),
    ({"score_threshold": float("nan")}, "finite"),
    ({"score_threshold": "0.5"}, "a number"),
    ({"max_faces": 0}, "max_faces must be between 1 and 128"),
    ({"max_faces": contract.ATTRIBUTES_MAX_BATCH + 1}, "max_faces"),
    ({"max_faces": 2.5}, "an integer"),
    ({"max_faces": True}, "an integer"),
    ({"min_face_size": -1}, "min_face_size must be >= 0"),
    ({"min_face_size": float("inf")}, "finite"),
    ({"det_size": 16}, "det_size must be between 32 and 1920"),
    ({"det_size": 4000}, "det_size"),
    ({"det_size": "full"}, "det_size must be 'native' or a long side"),
])
def test_bad_settings_are_refused_before_sending(settings: dict, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        protocol.detection_settings(**settings)


def test_settings_against_a_contract_1_0_server_are_refused_clearly() -> None:
    old = protocol.ModelInfo(contract.FACE_ANALYSIS, "1.0.0", contract.DEFAULT_TASKS)
    protocol.check_settings_supported(old, {})  # without settings an old server is fine
    with pytest.raises(ContractMismatch, match=r"contract 1\.0\.0.*max_faces.*re-render"):
        protocol.check_settings_supported(old, {contract.MAX_FACES: 5})
    protocol.check_settings_supported(protocol.ModelInfo(contract.FACE_ANALYSIS, "1.1.0", ()), {contract.MAX_FACES: 5})
    protocol.check_settings_supported(protocol.ModelInfo(contract.FACE_ANALYSIS, None, ()), {contract.MAX_FACES: 5})


def test_clients_send_the_settings_and_only_those(frame: np.ndarray) -> None:
    fake = FakeTriton()
    client = sync_client(fake)
    client.analyze(frame, max_faces=3, det_size=960)
    infer = [c for k, c in fake.calls if k == "infer"]
    assert infer[-1]["inputs"] == [contract.IMAGE_RAW, contract.MAX_FACES, contract.DET_SIZE]
    client.analyze(frame)
    assert [c for k, c in fake.calls if k == "infer"][-1]["inputs"] == [contract.IMAGE_RAW]
    client.analyze_batch([frame, frame], concurrency=2, score_threshold=0.9)
    assert [c["inputs"] for k, c in fake.calls if k == "infer"][-2:] == [[contract.IMAGE_RAW, contract.SCORE_THRESHOLD]] * 2
    calls = len(fake.calls)
    with pytest.raises(InvalidInput, match="max_faces"):
        client.analyze_batch([frame, "/no/such.png"], max_faces=0)
    assert len(fake.calls) == calls  # refused before any frame is read or sent
    with pytest.raises(ContractMismatch, match="1.0.0"):
        sync_client(FakeTriton(version="1.0.0")).analyze(frame, min_face_size=10)
    assert sync_client(FakeTriton(version="1.0.0")).analyze(frame).width == 640  # plain requests still work


async def test_async_client_sends_the_same_settings(frame: np.ndarray) -> None:
    from omniface.aio import AsyncClient

    fake = AsyncFakeTriton()
    async with AsyncClient("127.0.0.1:1", backoff=0.0) as client:
        client._triton = fake
        await client.analyze(frame, score_threshold=0.3, min_face_size=12)
        await client.analyze_batch([frame], det_size="native")
        with pytest.raises(InvalidInput, match="det_size"):
            await client.analyze_batch([frame], det_size=7)
        old = AsyncFakeTriton(version="1.0.0")
        client._triton, client._models = old, {}
        with pytest.raises(ContractMismatch):
            await client.analyze(frame, max_faces=2)
    inputs = [c["inputs"] for k, c in fake.calls if k == "infer"]
    assert inputs == [[contract.IMAGE_RAW, contract.SCORE_THRESHOLD, contract.MIN_FACE_SIZE],
                      [contract.IMAGE_RAW, contract.DET_SIZE]]
