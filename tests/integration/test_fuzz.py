"""Bounded fuzzing of the request path against the real server (Hypothesis).

Three families of requests, each a fixed number of derandomized examples (so CI runs
the same cases every time, in bounded time): mutated JPEG/PNG/WebP/GIF bytes, raw frames
of odd shapes and dtypes, and per-request settings of any value, dtype and shape. Each
request goes to the server through a plain tritonclient (the SDK's own checks cannot
hide a server bug), with a deadline. Every answer must be a well-formed result or a
refusal with gRPC INVALID_ARGUMENT, which the SDK maps to ``InvalidInput``; never an
internal error, a crash or a hang; and after each case the next good request is served.
The case count is printed (``-s``) and asserted."""

from __future__ import annotations

import io

import numpy as np
import pytest

from omniface import _protocol as protocol
from omniface import contract
from omniface.errors import InvalidInput

pytestmark = pytest.mark.integration

hypothesis = pytest.importorskip("hypothesis")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

DEADLINE_S = 60.0
EXAMPLES = {"encoded": 900, "raw": 600, "settings": 600}
"""Cases per family: ~2,100 in all, about a minute on 2 idle cores."""
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
NUMPY = {"UINT8": np.uint8, "INT8": np.int8, "UINT16": np.uint16, "INT32": np.int32, "INT64": np.int64,
         "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BOOL": np.bool_}
DTYPES = tuple(NUMPY)
counts: dict[str, int] = {}


@pytest.fixture(scope="module")
def raw(triton_server):
    return tritonclient_grpc.InferenceServerClient(triton_server.grpc_url)


@pytest.fixture(scope="module")
def seeds(astronaut) -> dict[str, bytes]:
    """Small real encodings to mutate (a 64x64 crop of the portrait, each format)."""
    from PIL import Image

    small = Image.fromarray(np.ascontiguousarray(astronaut[40:232:3, 150:342:3]))
    out = {}
    for fmt in FORMATS:
        buffer = io.BytesIO()
        small.save(buffer, fmt)
        out[fmt] = buffer.getvalue()
    return out


GOOD = np.zeros((48, 64, 3), np.uint8)


def tensor(name: str, datatype: str, value: np.ndarray):
    infer_input = tritonclient_grpc.InferInput(name, list(value.shape), datatype)
    infer_input.set_data_from_numpy(value)
    return infer_input


def send(raw, inputs: list) -> str:
    """``"ok"`` for a well-formed result, ``"refused"`` for INVALID_ARGUMENT; fails the
    test on anything else (an internal error, a timeout, a malformed response)."""
    names = protocol.frame_output_names()
    try:
        result = raw.infer(contract.FACE_ANALYSIS, inputs, client_timeout=DEADLINE_S)
    except InferenceServerException as exc:
        assert exc.status() == "StatusCode.INVALID_ARGUMENT", f"not a bad-input refusal: {exc}"
        assert isinstance(protocol.map_error(exc), InvalidInput)
        return "refused"
    frame = protocol.parse_frame_result(protocol.outputs_of(result, names))  # ServerError if malformed
    assert frame.width > 0 and frame.height > 0
    return "ok"


def still_serving(raw) -> None:
    assert send(raw, [tensor(contract.IMAGE_RAW, "UINT8", GOOD)]) == "ok"


def mutate(data: bytes, edits: list[tuple[int, int, int]], cut: int | None) -> bytes:
    """Apply (kind, position, value) edits: 0 flip a byte, 1 insert a byte, 2 delete a
    run, 3 duplicate a run; then optionally truncate."""
    buffer = bytearray(data)
    for kind, position, value in edits:
        if not buffer:
            break
        at = position % len(buffer)
        if kind == 0:
            buffer[at] ^= value or 1
        elif kind == 1:
            buffer.insert(at, value)
        elif kind == 2:
            del buffer[at:at + 1 + value % 64]
        else:
            buffer[at:at] = buffer[at:at + 1 + value % 256]
    return bytes(buffer[:cut] if cut is not None else buffer)


def count(family: str, outcome: str) -> None:
    counts[family] = counts.get(family, 0) + 1
    counts[f"{family}:{outcome}"] = counts.get(f"{family}:{outcome}", 0) + 1


def test_mutated_encoded_images(raw, seeds) -> None:
    @settings(FUZZ, max_examples=EXAMPLES["encoded"])
    @given(fmt=st.sampled_from(FORMATS),
           edits=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
           cut=st.none() | st.integers(0, 4096))
    def case(fmt: str, edits, cut) -> None:
        data = mutate(seeds[fmt], edits, cut)
        count("encoded", send(raw, [tensor(contract.IMAGE_BYTES, "BYTES", np.array([data], dtype=object))]))
        still_serving(raw)

    case()
    assert counts["encoded"] >= EXAMPLES["encoded"] and counts.get("encoded:refused", 0) > 0


def test_raw_frames_of_odd_shapes_and_dtypes(raw) -> None:
    frames = st.tuples(st.integers(0, 70), st.integers(0, 70), st.sampled_from([3, 3, 1, 4])).map(list)

    @settings(FUZZ, max_examples=EXAMPLES["raw"])
    @given(dtype=st.one_of(st.just("UINT8"), st.sampled_from(DTYPES)),  # half of them the declared dtype
           shape=st.one_of(frames, st.lists(st.integers(0, 70), min_size=0, max_size=4)),
           fill=st.integers(0, 255))
    def case(dtype: str, shape: list[int], fill: int) -> None:
        value = np.full(shape, fill).astype(NUMPY[dtype])
        count("raw", send(raw, [tensor(contract.IMAGE_RAW, dtype, value)]))
        still_serving(raw)

    case()
    assert counts["raw"] >= EXAMPLES["raw"] and counts.get("raw:ok", 0) > 0 and counts.get("raw:refused", 0) > 0


def test_settings_of_any_value_dtype_and_shape(raw) -> None:
    values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10**6, 10**6),
                       st.sampled_from([0, 1, 31, 32, 128, 129, 640, 1920, 1921]))

    @settings(FUZZ, max_examples=EXAMPLES["settings"])
    @given(chosen=st.dictionaries(st.sampled_from([s.name for s in contract.DETECTION_SETTINGS]),
                                  st.tuples(st.sampled_from(("declared", "FP32", "INT32", "FP64", "INT64")), values,
                                            st.sampled_from([(1,), (1,), (1,), (2,), (1, 1), (0,)])),
                                  min_size=1, max_size=4))
    def case(chosen) -> None:
        inputs = [tensor(contract.IMAGE_RAW, "UINT8", GOOD)]
        for name, (dtype, value, shape) in chosen.items():
            datatype = contract.SETTINGS_BY_NAME[name].dtype if dtype == "declared" else dtype
            with np.errstate(all="ignore"):  # out-of-range casts are part of the fuzz
                finite = np.isfinite(value) or datatype.startswith("FP")
                array = np.full(shape, value if finite else 0).astype(NUMPY[datatype])
            inputs.append(tensor(name, datatype, array))
        count("settings", send(raw, inputs))
        still_serving(raw)

    case()
    assert counts["settings"] >= EXAMPLES["settings"]
    assert counts.get("settings:ok", 0) > 0 and counts.get("settings:refused", 0) > 0


def test_fuzz_case_count() -> None:
    """Runs after the three families (file order): how many cases the server took."""
    total = sum(counts.get(family, 0) for family in EXAMPLES)
    print(f"\nfuzz cases against the real server: {total} ({counts})")
    if not total:
        pytest.skip("run with the three fuzz tests (this one only reports their count)")
    assert total >= sum(EXAMPLES.values())
