"""The GPU code of the python-backend steps, exercised on CPU with torch: the torch
alignment reproduces Pillow's, and the Triton adapter passes GPU tensors (DLPack) in
and torch tensors out. On a GPU machine tests/gpu runs the same code on CUDA."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from omniface import contract  # noqa: E402
from omniface.processing import align  # noqa: E402
from omniface.serving import gpu  # noqa: E402

pytestmark = pytest.mark.model


def faces_on(image: np.ndarray, scales, rng) -> np.ndarray:
    """Template landmarks scaled, rotated and placed well inside ``image``."""
    h, w = image.shape[:2]
    out = []
    for scale in scales:
        angle = rng.uniform(-0.4, 0.4)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = (align.ALIGNMENT_TEMPLATE - 56) @ rot.T * scale
        margin = 80 * scale + 2
        centre = rng.uniform([margin, margin], [w - margin, h - margin])
        out.append(pts + centre)
    return np.array(out)


@pytest.mark.parametrize("scales", [(1.0, 1.3, 0.8), (3.0, 5.5), (0.6,)])
def test_torch_alignment_matches_pillow(astronaut: np.ndarray, scales) -> None:
    """Same crops as align.align_faces, to rounding: up-scales, mild and strong
    down-scales (the latter box-reduced first)."""
    image = np.ascontiguousarray(np.tile(astronaut, (2, 2, 1)))  # 1024x1024: room for big faces
    landmarks = faces_on(image, scales, np.random.default_rng(len(scales)))
    ref = align.align_faces(image, landmarks).astype(np.int16)
    got = gpu.align_faces_torch(image, landmarks, device="cpu")
    assert got.dtype == torch.uint8 and tuple(got.shape) == ref.shape
    diff = np.abs(got.numpy().astype(np.int16) - ref)
    inner = diff[:, 2:-2, 2:-2]  # Pillow and grid_sample may treat the outermost half pixel differently
    assert inner.mean() < 0.2, inner.mean()  # ~0.0005 without box reduction, ~0.15 with (Pillow rounds its boxes)
    assert inner.max() <= 1


def test_torch_alignment_blanks_garbage_and_pads(astronaut: np.ndarray) -> None:
    landmarks = np.stack([faces_on(astronaut, (1.0,), np.random.default_rng(0))[0],
                          np.full((5, 2), np.nan), np.zeros((5, 2))])
    crops = gpu.align_faces_torch(astronaut, landmarks)
    assert crops[0].float().mean() > 10 and not crops[1].any() and crops.shape[0] == 3
    assert tuple(gpu.align_faces_torch(astronaut, np.zeros((0, 5, 2))).shape) == (0, 112, 112, 3)
    padded = gpu.pad_rows(torch.zeros((0, 112, 112, 3), dtype=torch.uint8), 1)
    assert tuple(padded.shape) == (1, 112, 112, 3)


# --------------------------------------------------------------------------------------
# The Triton adapter with a stand-in triton_python_backend_utils.
# --------------------------------------------------------------------------------------


def fake_pb_utils() -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, value, on_gpu=False):
            self._name, self.value, self.on_gpu = name, value, on_gpu

        def name(self):
            return self._name

        def is_cpu(self):
            return not self.on_gpu

        def as_numpy(self):
            if self.on_gpu:
                raise RuntimeError("as_numpy() on a GPU tensor")
            return self.value

        def to_dlpack(self):
            return torch.utils.dlpack.to_dlpack(torch.from_numpy(self.value))

        @classmethod
        def from_dlpack(cls, name, capsule):
            return cls(name, torch.utils.dlpack.from_dlpack(capsule).numpy(), on_gpu=True)

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None):
            self.outputs, self.error = list(output_tensors), error

    class TritonError:
        INVALID_ARG, INTERNAL = 1, 2

        def __init__(self, message, code=None):
            self.message, self.code = message, code

    class Request:
        def __init__(self, tensors):
            self.tensors = tensors

    pb.Tensor, pb.InferenceResponse, pb.TritonError, pb.Request = Tensor, InferenceResponse, TritonError, Request
    pb.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    return pb


def test_adapter_takes_gpu_tensors_and_returns_torch_outputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pb = fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    adapter = importlib.reload(importlib.import_module("omniface.serving.triton_python"))
    spec = contract.MODELS[contract.POSTPROCESS]

    class TorchCropsStep:  # a GPU step: keeps GPU inputs as torch tensors, returns a torch output
        batched = False
        gpu_inputs = True

        def __call__(self, inputs):
            assert isinstance(inputs[contract.DETECTOR_SCORES], torch.Tensor)  # came in "on the GPU"
            assert isinstance(inputs[contract.FRAME_INFO], np.ndarray)  # came in on the host
            return {contract.FACE_COUNT: np.array([1], np.int32),
                    contract.FACE_BOXES: np.zeros((1, 4), np.float32),
                    contract.FACE_SCORES: np.zeros((1,), np.float32),
                    contract.FACE_LANDMARKS: np.zeros((1, 5, 2), np.float32),
                    contract.CROPS: torch.full((1, 112, 112, 3), 7, dtype=torch.uint8)}

    seen = {}

    def make_step(name, parameters, model_dir, device_id=0):
        seen.update(name=name, device_id=device_id, device=parameters.get("device"))
        return TorchCropsStep()

    monkeypatch.setattr(adapter, "make_step", make_step)
    config = {"input": [{"name": t.name} for t in spec.inputs], "output": [{"name": t.name} for t in spec.outputs],
              "parameters": {"device": {"string_value": "cuda"}}}
    model = adapter.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(tmp_path), "model_version": "1",
                      "model_name": contract.POSTPROCESS, "model_instance_kind": "GPU", "model_instance_device_id": "1"})
    assert seen == {"name": contract.POSTPROCESS, "device_id": 1, "device": "cuda"}
    locations = contract.detector_locations()
    request = pb.Request({
        contract.DETECTOR_SCORES: pb.Tensor(contract.DETECTOR_SCORES, np.zeros((1, locations), np.float32), on_gpu=True),
        contract.DETECTOR_BOXES: pb.Tensor(contract.DETECTOR_BOXES, np.zeros((1, locations, 4), np.float32), on_gpu=True),
        contract.DETECTOR_LANDMARKS: pb.Tensor(contract.DETECTOR_LANDMARKS, np.zeros((1, locations, 10), np.float32),
                                               on_gpu=True),
        contract.SOURCE_IMAGE: pb.Tensor(contract.SOURCE_IMAGE, np.zeros((8, 8, 3), np.uint8)),
        contract.FRAME_INFO: pb.Tensor(contract.FRAME_INFO, np.ones(6, np.float32)),
    })
    (response,) = model.execute([request])
    assert response.error is None
    crops = {t.name(): t for t in response.outputs}[contract.CROPS]
    assert crops.on_gpu and crops.value.shape == (1, 112, 112, 3) and (crops.value == 7).all()  # via DLPack
    assert not {t.name(): t for t in response.outputs}[contract.FACE_COUNT].on_gpu
    # a host step gets host copies of GPU inputs
    model.keep_gpu_inputs = False
    value = model._inputs(request)[contract.DETECTOR_SCORES]
    assert isinstance(value, np.ndarray) and value.shape == (1, locations)


def test_postprocess_refuses_an_unknown_device() -> None:
    from omniface.serving.steps import PostprocessStep

    with pytest.raises(ValueError, match="device"):
        PostprocessStep({"device": "tpu"})
    if not torch.cuda.is_available():
        from omniface.errors import MissingDependency

        with pytest.raises(MissingDependency, match="CUDA"):
            PostprocessStep({"device": "cuda"})
