"""The pipeline steps as plain callables: numpy dict in, numpy dict out.

Each step is built once (graphs loaded, settings parsed) and then called per request,
so the Triton adapter, the in-process pipeline and the tests run the very same code.
Steps raise ``InvalidInput`` for bad requests; the adapter turns that into a Triton
error for that request alone and the server keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from omniface import contract
from omniface.errors import InvalidInput
from omniface.processing import align, detection, image

Tensors = dict[str, np.ndarray]


class Step(Protocol):
    """A pipeline step. ``batched`` steps take and return tensors whose first axis is the
    batch (requests are concatenated); the others see one request at a time."""

    batched: bool

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors: ...


def _float_parameter(parameters: Mapping[str, str], key: str, default: float) -> float:
    value = parameters.get(key, default)
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"model parameter {key!r} must be a number, got {value!r}") from exc


def _default_setting(parameters: Mapping[str, str], name: str, default: float) -> float:
    """A setting's server default (its config parameter), checked as a request's value
    would be: a repository with a bad default fails at load, not on every request."""
    value = _float_parameter(parameters, name, default)
    problem = contract.SETTINGS_BY_NAME[name].problem(value)
    if problem:
        raise ValueError(f"model parameter {name!r}: {problem}")
    return value


def request_setting(inputs: Mapping[str, np.ndarray], name: str, default: float) -> float:
    """A per-request setting (``contract.DETECTION_SETTINGS``) from the request's optional
    input, else ``default`` (the server's configured value). ``InvalidInput`` names the
    setting and its valid range when the request's value is out of it."""
    value = inputs.get(name)
    if value is None:
        return default
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise InvalidInput(f"{name} must hold exactly one value, got {flat.size}")
    if flat.dtype.kind not in "iuf":
        raise InvalidInput(f"{name} must be a number, got dtype {flat.dtype}")
    number = float(flat[0])
    problem = contract.SETTINGS_BY_NAME[name].problem(number)
    if problem:
        raise InvalidInput(problem)
    return number


class PreprocessStep:
    """Decode one frame, keep a size-capped source copy, letterbox it for the detector."""

    batched = False

    def __init__(self, parameters: Mapping[str, str] | None = None) -> None:
        parameters = parameters or {}
        self.max_source_side = int(_float_parameter(parameters, "max_source_side", contract.MAX_SOURCE_SIDE_DEFAULT))
        try:
            self.det_size = image.parse_det_size(parameters.get(contract.DET_SIZE, str(contract.DET_SIZE_DEFAULT)))
        except InvalidInput as exc:
            raise ValueError(f"model parameter {contract.DET_SIZE!r}: {exc}") from exc

    def frame_from_inputs(self, inputs: Mapping[str, np.ndarray]) -> image.DecodedFrame:
        """The request's frame, upright (an encoded image's EXIF orientation applied)."""
        encoded = inputs.get(contract.IMAGE_BYTES)
        raw = inputs.get(contract.IMAGE_RAW)
        if (encoded is None) == (raw is None):
            raise InvalidInput(
                f"send exactly one of {contract.IMAGE_BYTES} (encoded image) or "
                f"{contract.IMAGE_RAW} (uint8 HxWx3 RGB); got {'both' if raw is not None else 'neither'}"
            )
        if raw is not None:
            return image.DecodedFrame(image.as_rgb_frame(raw, "RGB"))
        flat = np.asarray(encoded).reshape(-1)
        if flat.size != 1:
            raise InvalidInput(f"{contract.IMAGE_BYTES} must hold exactly one encoded image, got {flat.size}")
        data = flat[0]
        if isinstance(data, str):
            data = data.encode("latin-1")
        return image.decode_frame(bytes(data))

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        det_size = int(request_setting(inputs, contract.DET_SIZE, self.det_size))  # before the decoding work
        decoded = self.frame_from_inputs(inputs)
        height, width = decoded.pixels.shape[:2]
        source, source_scale = image.cap_source(decoded.pixels, self.max_source_side)
        letterboxed, box = image.fit_detector(source, det_size)
        frame_info = np.array(
            [height, width, box.scale * source_scale, box.pad_x, box.pad_y, source_scale, decoded.orientation,
             *letterboxed.shape[:2]], dtype=np.float32
        )
        return {
            contract.DETECTOR_IMAGE: letterboxed[np.newaxis],
            contract.SOURCE_IMAGE: np.ascontiguousarray(source),
            contract.FRAME_INFO: frame_info,
        }


GRAPH_RUNTIMES = ("onnxruntime", "torch")
"""Who executes a graph step: ONNX Runtime (the CPU default; its CUDA provider with
onnxruntime-gpu) or ``omniface.serving.torch_graph`` (the same ONNX graph on torch, for
GPU machines with torch CUDA but no onnxruntime-gpu or TensorRT)."""


class OnnxGraphStep:
    """One of the network graphs (detector, attributes), executed by ONNX Runtime (CPU,
    or its CUDA provider with ``device="cuda"``) or by torch (``runtime="torch"``, FP32 or
    FP16, optionally replayed as CUDA graphs). The GPU runtimes are for measurements on
    the embedded server; NVIDIA's container serves the graphs as TensorRT engines."""

    batched = True

    def __init__(self, spec: contract.ModelSpec, onnx_path: Path, threads: int = 1, device: str = "cpu",
                 device_id: int = 0, runtime: str = "onnxruntime", precision: str = "fp32",
                 cuda_graphs: bool = False) -> None:
        if not Path(onnx_path).is_file():
            raise FileNotFoundError(
                f"{onnx_path} not found: export the network with `python build/export_onnx.py` "
                "or point the repository at a folder that holds the trained model"
            )
        if device not in ("cpu", "cuda"):
            raise ValueError(f"model parameter 'device' must be 'cpu' or 'cuda', got {device!r}")
        if runtime not in GRAPH_RUNTIMES:
            raise ValueError(f"model parameter 'runtime' must be one of {GRAPH_RUNTIMES}, got {runtime!r}")
        if runtime == "onnxruntime" and precision != "fp32":
            raise ValueError("ONNX Runtime runs the graph as exported: give it an FP16 graph (onnx_file) "
                             "instead of precision, or use runtime 'torch'")
        self.spec = spec
        self.output_names = [t.name for t in spec.outputs]
        self.runtime = runtime
        if runtime == "torch":
            from omniface.serving.gpu import device_name
            from omniface.serving.torch_graph import TorchGraph

            self.graph = TorchGraph(onnx_path, device=device_name(device, device_id), precision=precision,
                                    cuda_graphs=cuda_graphs)
            missing = sorted(set(self.output_names) - set(self.graph.output_names))
            if missing:
                raise ValueError(f"{onnx_path} lacks the contract's outputs {missing}")
        elif device == "cpu":
            from omniface.runtime import make_session

            self.session = make_session(onnx_path, threads=threads)
        else:
            from omniface.serving.gpu import ort_cuda_session

            self.session = ort_cuda_session(onnx_path, device_id=device_id, threads=threads)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        feeds = {t.name: np.ascontiguousarray(inputs[t.name]) for t in self.spec.inputs}
        if self.runtime == "torch":
            values = self.graph(feeds)
            return {name: values[name] for name in self.output_names}
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values))


class PostprocessStep:
    """Decode detections, NMS, cap faces, align crops; pads to one row when no face.

    With ``device: cuda`` (the gpu target) the crops are warped on the GPU with torch
    (``omniface.serving.gpu``) and returned as a GPU tensor; inputs may then be GPU
    tensors too (``gpu_inputs``): the detector outputs are small and are decoded on the
    host."""

    batched = False

    def __init__(self, parameters: Mapping[str, str] | None = None, device_id: int = 0) -> None:
        parameters = parameters or {}
        self.score_threshold = _default_setting(parameters, contract.SCORE_THRESHOLD, contract.SCORE_THRESHOLD_DEFAULT)
        self.nms_iou = _float_parameter(parameters, "nms_iou", contract.NMS_IOU_DEFAULT)
        self.max_faces = int(_default_setting(parameters, contract.MAX_FACES, contract.MAX_FACES_DEFAULT))
        self.min_face_size = _default_setting(parameters, contract.MIN_FACE_SIZE, contract.MIN_FACE_SIZE_DEFAULT)
        device = parameters.get("device", "cpu")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"model parameter 'device' must be 'cpu' or 'cuda', got {device!r}")
        self.device = None
        self.gpu_inputs = device != "cpu"
        if self.gpu_inputs:
            from omniface.serving import gpu

            gpu.require_torch(device)
            self.device = gpu.device_name(device, device_id)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        if self.gpu_inputs:
            from omniface.serving.gpu import to_numpy

            host = {k: to_numpy(v) for k, v in inputs.items() if k != contract.SOURCE_IMAGE}
        else:
            host = inputs
        score_threshold = request_setting(host, contract.SCORE_THRESHOLD, self.score_threshold)
        max_faces = int(request_setting(host, contract.MAX_FACES, self.max_faces))
        min_face_size = request_setting(host, contract.MIN_FACE_SIZE, self.min_face_size)
        info = dict(zip(contract.FRAME_INFO_FIELDS, np.asarray(host[contract.FRAME_INFO], dtype=np.float64).tolist()))
        box = image.Letterbox(scale=info["scale"], pad_x=info["pad_x"], pad_y=info["pad_y"])
        faces = detection.detect_faces(
            host[contract.DETECTOR_SCORES][0],
            host[contract.DETECTOR_BOXES][0],
            host[contract.DETECTOR_LANDMARKS][0],
            box,
            int(info["height"]),
            int(info["width"]),
            score_threshold,
            self.nms_iou,
            max_faces,
            int(info["detector_height"]),
            int(info["detector_width"]),
            min_face_size=min_face_size,
        )
        source = inputs[contract.SOURCE_IMAGE]
        points = faces.landmarks * np.float32(info["source_scale"])
        count = len(faces.scores)
        rows = max(count, 1)  # Triton refuses an empty batch into the attributes model.
        if self.device is not None:
            from omniface.serving import gpu

            crops = gpu.pad_rows(gpu.align_faces_torch(source, points, contract.CROP_SIZE, self.device), rows)
        else:
            crops = _pad_rows(align.align_faces(source, points, contract.CROP_SIZE), rows)
        return {
            contract.FACE_COUNT: np.array([count], dtype=np.int32),
            contract.FACE_BOXES: _pad_rows(faces.boxes, rows),
            contract.FACE_SCORES: _pad_rows(faces.scores, rows),
            contract.FACE_LANDMARKS: _pad_rows(faces.landmarks, rows),
            contract.CROPS: crops,
        }


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """Pad the first axis with zeros up to ``rows`` (only ever from 0 to 1)."""
    if len(array) >= rows:
        return np.ascontiguousarray(array)
    padded = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    padded[: len(array)] = array
    return padded


class FusedStep:
    """Consecutive ensemble steps in one process (``omniface.repository.fuse_steps``):
    the same step objects, wired as the ensemble wires them, so the frames between them
    never cross a process boundary. Each sub-step gets its own ``<model>.<key>``
    parameters and its own model folder (``<repository>/<model>/<version>``), where its
    graph lies."""

    batched = False

    def __init__(self, parameters: Mapping[str, str], model_dir: Path, device_id: int = 0) -> None:
        plan = json.loads(parameters[contract.FUSED_STEPS_PARAMETER])
        model_dir = Path(model_dir)
        repo_root, version = model_dir.parent.parent, model_dir.name
        self.wiring = tuple(contract.EnsembleStep(sub["model"], sub["input_map"], sub["output_map"]) for sub in plan["steps"])
        self.steps: dict[str, Step] = {}
        for step in self.wiring:
            prefix = f"{step.model_name}."
            own = {k[len(prefix):]: v for k, v in parameters.items() if k.startswith(prefix)}
            # A sub-model left out of the repository has its graph in this model's own
            # folder; the others (and an in-process pipeline on a plain repository) in theirs.
            embedded = model_dir / step.model_name
            folder = embedded if embedded.is_dir() else repo_root / step.model_name / version
            self.steps[step.model_name] = make_step(step.model_name, own, folder, device_id=device_id)
        self.outputs: dict[str, str] = plan["outputs"]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        scope = run_wired(self.steps, self.wiring, inputs)
        return {local: scope[tensor] for local, tensor in self.outputs.items()}


def run_wired(steps: Mapping[str, Step], wiring, inputs: Mapping[str, np.ndarray]) -> Tensors:
    """Run ``contract.EnsembleStep``s in order as Triton's ensemble scheduler does: each
    step takes its inputs from the scope and puts its outputs back under their scope
    names. Returns the whole scope. Shared by ``FusedStep`` and ``LocalPipeline``."""
    scope: dict[str, np.ndarray] = dict(inputs)
    for step in wiring:
        step_inputs = {name: scope[tensor] for name, tensor in step.input_map.items() if tensor in scope}
        outputs = steps[step.model_name](step_inputs)
        scope.update({tensor: outputs[name] for name, tensor in step.output_map.items()})
    return scope


def make_step(model_name: str, parameters: Mapping[str, str], model_dir: Path, device_id: int = 0) -> Step:
    """Build the step a repository model runs, from its name, config parameters and
    version folder (where the ONNX graph lies); ``device_id`` is the GPU of a KIND_GPU
    instance (steps with parameter ``device: cuda``)."""
    if contract.FUSED_STEPS_PARAMETER in parameters:
        return FusedStep(parameters, model_dir, device_id=device_id)
    if model_name == contract.PREPROCESS:
        return PreprocessStep(parameters)
    if model_name == contract.POSTPROCESS:
        return PostprocessStep(parameters, device_id=device_id)
    if model_name in (contract.DETECTOR, contract.ATTRIBUTES):
        tasks = tuple(t for t in parameters.get("tasks", ",".join(contract.DEFAULT_TASKS)).split(",") if t)
        spec = contract.build_models(tasks=tasks)[model_name]
        onnx_file = parameters.get("onnx_file", "model.onnx")
        threads = int(_float_parameter(parameters, "intra_op_threads", 1))
        return OnnxGraphStep(spec, Path(model_dir) / onnx_file, threads=threads,
                             device=parameters.get("device", "cpu"), device_id=device_id,
                             runtime=parameters.get("runtime", "onnxruntime"),
                             precision=parameters.get("precision", "fp32"),
                             cuda_graphs=parameters.get("cuda_graphs", "false").lower() in ("1", "true", "yes"))
    raise ValueError(f"no omniface step is called {model_name!r}; known: {sorted(contract.MODELS)}")
