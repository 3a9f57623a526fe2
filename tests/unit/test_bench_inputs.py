"""perf_analyzer input-data JSON: names, shapes and bytes from the contract (no server)."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from omniface import contract, repository
from omniface.bench import inputs


@pytest.fixture(scope="module")
def image() -> inputs.BenchImage:
    rng = np.random.default_rng(0)
    return inputs.from_pixels("noise", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


def test_raw_entry_is_the_rgb_pixels(image: inputs.BenchImage) -> None:
    entry = inputs.tensor_entry(image, "raw")
    assert list(entry) == [contract.IMAGE_RAW]
    tensor = entry[contract.IMAGE_RAW]
    assert tensor["shape"] == [48, 64, 3]
    assert base64.b64decode(tensor["b64"]) == image.pixels.tobytes()


def test_encoded_entry_is_a_serialised_bytes_tensor(image: inputs.BenchImage) -> None:
    tensor = inputs.tensor_entry(image, "encoded")[contract.IMAGE_BYTES]
    assert tensor["shape"] == list(contract.MODELS[contract.FACE_ANALYSIS].input(contract.IMAGE_BYTES).dims)
    raw = base64.b64decode(tensor["b64"])
    (length,) = struct.unpack("<I", raw[:4])
    assert length == len(raw) - 4 and raw[4:] == image.encoded and raw[4:6] == b"\xff\xd8"  # a JPEG


def test_pixels_are_what_the_server_decodes(image: inputs.BenchImage) -> None:
    from omniface.processing.image import decode_image

    assert np.array_equal(decode_image(image.encoded), image.pixels)


def test_serialize_bytes_tensor() -> None:
    assert inputs.serialize_bytes_tensor([b"ab", b""]) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


def test_write_input_data_round_trips(tmp_path: Path, image: inputs.BenchImage) -> None:
    path = inputs.write_input_data(tmp_path / "sub" / "raw.json", [image, image], "raw")
    data = json.loads(path.read_text())
    assert len(data["data"]) == 2 and all(contract.IMAGE_RAW in step for step in data["data"])
    with pytest.raises(ValueError):
        inputs.input_data([], "raw")
    with pytest.raises(ValueError):
        inputs.tensor_entry(image, "yuv")  # type: ignore[arg-type]


def test_names_follow_the_served_models(image: inputs.BenchImage) -> None:
    models = repository.variant_models(required_input=contract.IMAGE_RAW)
    assert list(inputs.tensor_entry(image, "raw", models)) == [contract.IMAGE_RAW]
    with pytest.raises(KeyError):
        inputs.tensor_entry(image, "encoded", models)  # that variant has no IMAGE_BYTES


def test_shapes_are_checked_against_the_contract() -> None:
    spec = contract.MODELS[contract.FACE_ANALYSIS].input(contract.IMAGE_RAW)
    with pytest.raises(ValueError, match="dims"):
        inputs._check(spec, [4, 4, 4], "UINT8")
    with pytest.raises(ValueError, match="UINT8"):
        inputs._check(spec, [4, 4, 3], "BYTES")


def test_pipeline_inputs_match_the_wire_inputs(image: inputs.BenchImage) -> None:
    raw = inputs.pipeline_inputs(image, "raw")[contract.IMAGE_RAW]
    assert raw.dtype == np.uint8 and raw.shape == image.shape
    encoded = inputs.pipeline_inputs(image, "encoded")[contract.IMAGE_BYTES]
    assert encoded.shape == (1,) and encoded[0] == image.encoded


def test_sample_images_are_real_frames() -> None:
    pytest.importorskip("skimage")
    astronaut, crowd = inputs.sample_images(["astronaut", "crowd_20"])
    assert astronaut.shape == (512, 512, 3) and crowd.shape[2] == 3
    with pytest.raises(KeyError):
        inputs.sample_images(["nobody"])


def test_settings_travel_as_their_contract_tensors(image: inputs.BenchImage) -> None:
    entry = inputs.tensor_entry(image, "raw", settings={contract.DET_SIZE: 960, contract.SCORE_THRESHOLD: 0.25})
    assert list(entry) == [contract.IMAGE_RAW, contract.DET_SIZE, contract.SCORE_THRESHOLD]
    det = entry[contract.DET_SIZE]
    assert det["shape"] == [1] and np.frombuffer(base64.b64decode(det["b64"]), np.int32).tolist() == [960]
    threshold = np.frombuffer(base64.b64decode(entry[contract.SCORE_THRESHOLD]["b64"]), np.float32)
    assert threshold.tolist() == [0.25]
    local = inputs.pipeline_inputs(image, "raw", {contract.DET_SIZE: 960})
    assert local[contract.DET_SIZE].dtype == np.int32 and local[contract.DET_SIZE].tolist() == [960]
    with pytest.raises(ValueError, match="det_size"):
        inputs.tensor_entry(image, "raw", settings={contract.DET_SIZE: 5000})
    with pytest.raises(KeyError):
        inputs.tensor_entry(image, "raw", settings={"no_such_setting": 1})
