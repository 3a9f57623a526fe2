"""Explicit INT8 quantization of the omniface graphs (Q/DQ ONNX), calibrated on real
faces, and its evaluation on CPU.

TensorRT 10 deprecates implicit INT8 calibration (and 11 removes it): an INT8 engine is
built from a graph that says where to quantize, with ``QuantizeLinear`` /
``DequantizeLinear`` pairs and their scales. ONNX Runtime's static quantization makes
that graph: it runs the FP32 graph over calibration images, collects activation ranges
and inserts Q/DQ pairs with TensorRT's conventions (signed INT8, symmetric activations
and weights, per-channel weight scales). The same Q/DQ graph also runs on ONNX
Runtime's CPU provider, so it is a CPU option too; ``evaluate`` measures its speed and
how far its outputs drift from the FP32 graph.

Calibration data, real images in their published layouts under the data root
(``$OMNIFACE_DATA``, else ``../shared/data``; see ``omniface.data.paths``):

* attributes: UTKFace ``crop_part1`` crops, mapped onto the 112 template by the fixed
  similarity of ``omniface.data.faces`` (resized to 112 when that module is absent);
* detector: WIDER FACE train images, letterboxed to the detector input exactly as
  preprocess does.

Calibration draws from the train split, evaluation from the held-out split
(``omniface.data.paths.in_split``, a pure function of the file name). Without the data,
NASA's astronaut portrait (scikit-image, public domain) with simple variations stands
in, and the result says so.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniface import contract
from omniface.errors import require
from omniface.processing import image as image_ops

QDQ_OP_TYPES: tuple[str, ...] = ("Conv", "Gemm", "MatMul")
"""Ops whose inputs get Q/DQ pairs in the TensorRT flavour: the convolutions and dense
layers, where INT8 pays (TensorRT fuses the activations after them). Element-wise ops,
the CORAL age sum and the softmax stay FP32."""

FLAVORS: dict[str, dict] = {
    # What TensorRT takes: signed INT8, symmetric activations and weights (zero point 0),
    # biases left in float (TensorRT fuses them; it has no INT32 DequantizeLinear).
    "tensorrt": {"activation": "int8", "symmetric_activations": True, "op_types": QDQ_OP_TYPES,
                 "quantize_bias": False},
    # What ONNX Runtime's x86 kernels are fastest with (U8S8): asymmetric uint8 activations,
    # every op ORT can quantize, so Q/DQ pairs fold into its integer kernels.
    "cpu": {"activation": "uint8", "symmetric_activations": False, "op_types": None, "quantize_bias": True},
}
"""Q/DQ flavours: ``tensorrt`` (``model.qdq.onnx``, input of INT8 engines) and ``cpu``
(``model.qdq-cpu.onnx``, for ONNX Runtime's CPU provider)."""

FLAVOR_FILENAMES = {"tensorrt": "model.qdq.onnx", "cpu": "model.qdq-cpu.onnx"}

CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy")
DEFAULT_METHOD = "percentile"
DEFAULT_CALIBRATION = {contract.DETECTOR: 48, contract.ATTRIBUTES: 256}
DEFAULT_EVALUATION = {contract.DETECTOR: 16, contract.ATTRIBUTES: 128}
VAL_FRACTION = 0.12
SPLIT_SEED = 0


# --------------------------------------------------------------------------------------
# Real images for calibration and evaluation.
# --------------------------------------------------------------------------------------


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root (``omniface.data.paths.data_root``: argument, ``$OMNIFACE_DATA``,
    or ``../shared/data`` next to the checkout)."""
    try:
        from omniface.data.paths import data_root as _data_root
    except ImportError:  # the training-data package is optional here
        value = root or os.environ.get("OMNIFACE_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
        return Path(value).expanduser()
    return _data_root(root)


def _in_split(name: str, split: str) -> bool:
    try:
        from omniface.data.paths import in_split
    except ImportError:
        if split == "all":
            return True
        digest = hashlib.sha1(f"{SPLIT_SEED}:{name}".encode()).digest()
        is_val = int.from_bytes(digest[:8], "big") / 2.0**64 < VAL_FRACTION
        return is_val if split == "val" else not is_val
    return in_split(name, split, VAL_FRACTION, SPLIT_SEED)


def _pick(paths: Sequence[Path], split: str, count: int) -> list[Path]:
    """``count`` files of ``split``, spread over the set in a fixed order (by name hash),
    so a small sample is not one event or one age group."""
    chosen = [p for p in paths if _in_split(p.name, split)]
    chosen.sort(key=lambda p: hashlib.sha1(p.name.encode()).digest())
    return chosen[:count]


def _load_rgb(path: Path) -> np.ndarray:
    return image_ops.decode_image(path.read_bytes())


def _to_template(crop: np.ndarray, dataset: str) -> np.ndarray:
    """A data set's face-centred crop -> a 112 template crop (fixed similarity)."""
    try:
        from omniface.data.faces import crop_to_template
        from omniface.processing.align import warp_affine
    except ImportError:
        return image_ops.resize_crop(crop, contract.CROP_SIZE)
    matrix = crop_to_template(dataset, crop.shape[1], crop.shape[0])
    return warp_affine(crop, matrix, contract.CROP_SIZE)


def image_files(model_name: str, split: str, count: int, root: str | os.PathLike | None = None) -> list[Path]:
    """The real image files a graph is calibrated (train) or measured (val) on:
    WIDER FACE photos for the detector, UTKFace crops for the attributes; [] without
    the data. Shared by ``real_frames``/``real_crops``, the GPU tests and the GPU kit."""
    if model_name == contract.DETECTOR:
        folder = data_root(root) / "widerface" / "train" / "images"
        candidates = sorted(folder.glob("*/*.jpg")) if folder.is_dir() else []
    elif model_name == contract.ATTRIBUTES:
        folder = data_root(root) / "utkface" / "crop_part1"
        candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg") if folder.is_dir() else []
    else:
        raise ValueError(f"no graph called {model_name!r}; expected {contract.DETECTOR!r} or {contract.ATTRIBUTES!r}")
    return _pick(candidates, split, count)


def real_crops(root: str | os.PathLike | None, split: str, count: int) -> np.ndarray | None:
    """UTKFace crops on the 112 template, [N, 112, 112, 3] uint8; None without the data."""
    files = image_files(contract.ATTRIBUTES, split, count, root)
    if not files:
        return None
    return np.stack([_to_template(_load_rgb(p), "utkface") for p in files])


def real_frames(root: str | os.PathLike | None, split: str, count: int) -> np.ndarray | None:
    """WIDER FACE images letterboxed to the detector input, [N, 480, 640, 3] uint8;
    None without the data."""
    files = image_files(contract.DETECTOR, split, count, root)
    if not files:
        return None
    return np.stack([letterboxed(_load_rgb(p)) for p in files])


def letterboxed(frame: np.ndarray) -> np.ndarray:
    return image_ops.letterbox(frame, contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH)[0]


ASTRONAUT_FACE = (150, 40, 330, 220)
"""x1, y1, x2, y2 of the face in scikit-image's 512x512 astronaut (roughly)."""


def astronaut_images(model_name: str, count: int, seed: int = 0) -> np.ndarray:
    """Stand-in images from the astronaut portrait: shifted, scaled, flipped and
    brightness-varied face crops (attributes) or frames (detector)."""
    data = require("skimage.data", "test")
    portrait = np.ascontiguousarray(data.astronaut())
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        if model_name == contract.ATTRIBUTES:
            x1, y1, x2, y2 = ASTRONAUT_FACE
            side = (x2 - x1) * rng.uniform(0.85, 1.15)
            cx, cy = (x1 + x2) / 2 + rng.uniform(-10, 10), (y1 + y2) / 2 + rng.uniform(-10, 10)
            box = [int(max(0, cx - side / 2)), int(max(0, cy - side / 2)), int(cx + side / 2), int(cy + side / 2)]
            img = image_ops.resize_crop(portrait[box[1]:box[3], box[0]:box[2]], contract.CROP_SIZE)
        else:
            scale = rng.uniform(0.4, 1.0)
            size = max(32, int(512 * scale))
            small = image_ops.resize_crop(portrait, size)
            canvas = np.full((512, 683, 3), rng.integers(0, 256), np.uint8)
            x, y = rng.integers(0, 683 - size + 1), rng.integers(0, 512 - size + 1)
            canvas[y:y + size, x:x + size] = small
            img = letterboxed(canvas)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        gain = rng.uniform(0.7, 1.3)
        out.append(np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    return np.stack(out)


@dataclass(frozen=True)
class ImageSet:
    """Images for one graph and where they came from."""

    images: np.ndarray
    source: str

    @property
    def real(self) -> bool:
        return not self.source.startswith("astronaut")


def image_set(model_name: str, split: str, count: int, root: str | os.PathLike | None = None,
              allow_fallback: bool = True) -> ImageSet:
    """``count`` real images for ``model_name``'s graph from ``split`` (train:
    calibration, val: evaluation); the astronaut stand-in when the data is absent."""
    if model_name == contract.ATTRIBUTES:
        images, source = real_crops(root, split, count), f"UTKFace crop_part1 ({split} split) on the 112 template"
    elif model_name == contract.DETECTOR:
        images, source = real_frames(root, split, count), f"WIDER FACE train images ({split} split), letterboxed"
    else:
        raise ValueError(f"no graph called {model_name!r}; expected {contract.DETECTOR!r} or {contract.ATTRIBUTES!r}")
    if images is not None:
        return ImageSet(images, f"{source}, {len(images)} images under {data_root(root)}")
    if not allow_fallback:
        raise FileNotFoundError(f"no calibration data for {model_name} under {data_root(root)}; set OMNIFACE_DATA")
    seed = 0 if split == "train" else 1
    return ImageSet(astronaut_images(model_name, count, seed), f"astronaut stand-in ({count} variations, seed {seed})")


def _calibration_reader(input_name: str, images: np.ndarray, batch: int):
    quantization = require("onnxruntime.quantization", "serve")

    class _Reader(quantization.CalibrationDataReader):
        """Feeds the images to ONNX Runtime's calibrator in batches."""

        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(
                [np.ascontiguousarray(images[i:i + batch]) for i in range(0, len(images), batch)]
            )

        def get_next(self):
            chunk = next(self._batches, None)
            return None if chunk is None else {input_name: chunk}

    return _Reader()


# --------------------------------------------------------------------------------------
# Quantization.
# --------------------------------------------------------------------------------------


def _clean_opsets(model) -> None:
    """Keep only the opset imports the nodes use (ONNX Runtime's pre-processing writes
    every domain it knows)."""
    used = {node.domain or "" for node in model.graph.node} | {""}
    keep = [o for o in model.opset_import if (o.domain or "") in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def quantize_graph(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    spec: contract.ModelSpec,
    images: np.ndarray,
    *,
    method: str = DEFAULT_METHOD,
    flavor: str = "tensorrt",
    batch: int = 8,
    op_types: Sequence[str] | None = None,
    exclude_nodes: Sequence[str] = (),
    per_channel: bool = True,
    source: str = "",
) -> Path:
    """Write the Q/DQ variant of ``onnx_path`` calibrated on ``images`` (uint8 NHWC as
    the graph takes them) to ``out_path``; check it against ``spec``; return the path.
    ``flavor`` (see ``FLAVORS``) sets the INT8 conventions; ``op_types`` overrides its
    ops (None: the flavour's)."""
    onnx = require("onnx", "train")
    quantization = require("onnxruntime.quantization", "serve")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from omniface.engines.precision import check_io

    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {sorted(FLAVORS)}, got {flavor!r}")
    settings = FLAVORS[flavor]
    op_types = settings["op_types"] if op_types is None else op_types
    activation = quantization.QuantType.QInt8 if settings["activation"] == "int8" else quantization.QuantType.QUInt8
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if len(images) == 0:
        raise ValueError("quantization needs at least one calibration image")
    methods = {
        "minmax": quantization.CalibrationMethod.MinMax,
        "percentile": quantization.CalibrationMethod.Percentile,
        "entropy": quantization.CalibrationMethod.Entropy,
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    original = onnx.load(os.fspath(onnx_path))
    check_io(original, spec, os.fspath(onnx_path))
    (input_spec,) = spec.inputs
    with tempfile.TemporaryDirectory(prefix="omniface-qdq-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and ONNX Runtime's basic (standard-op) graph optimisations.
        quant_pre_process(os.fspath(onnx_path), os.fspath(prepared), skip_symbolic_shape=True)
        quantization.quantize_static(
            os.fspath(prepared),
            os.fspath(Path(tmp) / "qdq.onnx"),
            _calibration_reader(input_spec.name, images, batch),
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=activation,
            weight_type=quantization.QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=None if op_types is None else list(op_types),
            nodes_to_exclude=list(exclude_nodes),
            calibrate_method=methods[method],
            extra_options={
                "ActivationSymmetric": settings["symmetric_activations"],
                "WeightSymmetric": True,
                "CalibMovingAverage": False,
                "CalibTensorRangeSymmetric": settings["symmetric_activations"],
                "QuantizeBias": settings["quantize_bias"],
            },
        )
        model = onnx.load(os.fspath(Path(tmp) / "qdq.onnx"))
    _clean_opsets(model)
    model.producer_name = original.producer_name or "omniface"
    model.doc_string = original.doc_string
    del model.metadata_props[:]
    props = {p.key: p.value for p in original.metadata_props}
    props.update({
        contract.CONTRACT_VERSION_PARAMETER: contract.CONTRACT_VERSION,  # check_io verifies this contract's interface
        "omniface_precision": f"int8-qdq-{flavor}",
        "omniface_calibration": f"{method}, {len(images)} images: {source}" if source else f"{method}, {len(images)} images",
    })
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    check_io(model, spec, os.fspath(out_path))
    onnx.save(model, os.fspath(out_path))
    return out_path


def count_qdq(onnx_path: str | os.PathLike) -> dict[str, int]:
    """How many QuantizeLinear / DequantizeLinear nodes a graph has."""
    onnx = require("onnx", "train")
    model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}


# --------------------------------------------------------------------------------------
# Evaluation on CPU.
# --------------------------------------------------------------------------------------


def _run_all(session, input_name: str, images: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    chunks = [session.run(names, {input_name: np.ascontiguousarray(images[i:i + batch])})
              for i in range(0, len(images), batch)]
    return {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(names)}


def _detections_agreement(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    """Faces found by FP32 (default threshold, NMS) that Q/DQ also finds at IoU >= 0.5."""
    from omniface.processing import detection

    box = image_ops.Letterbox(scale=1.0, pad_x=0.0, pad_y=0.0)
    h, w = contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH

    def faces(out, i):
        return detection.detect_faces(out[contract.DETECTOR_SCORES][i], out[contract.DETECTOR_BOXES][i],
                                      out[contract.DETECTOR_LANDMARKS][i], box, h, w,
                                      contract.SCORE_THRESHOLD_DEFAULT, contract.NMS_IOU_DEFAULT,
                                      contract.MAX_FACES_DEFAULT)

    total = matched = found = 0
    for i in range(len(ref[contract.DETECTOR_SCORES])):
        a, b = faces(ref, i).boxes, faces(got, i).boxes
        total += len(a)
        found += len(b)
        if len(a) and len(b):
            iou = _iou(a, b)
            matched += int((iou.max(axis=1) >= 0.5).sum())
    return {"fp32_faces": float(total), "qdq_faces": float(found),
            "faces_matched": float(matched / total) if total else float("nan")}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


@dataclass
class Evaluation:
    """FP32 vs Q/DQ on ONNX Runtime CPU for one graph."""

    model: str
    images: str
    count: int
    threads: int
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # batch -> {fp32, qdq, speedup}
    drift: dict[str, dict[str, float]] = field(default_factory=dict)  # output -> {max_abs, mean_abs}
    task_metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "images": self.images, "count": self.count, "threads": self.threads,
                "latency_ms": self.latency_ms, "drift": self.drift, "task_metrics": self.task_metrics}


def evaluate(
    fp32_path: str | os.PathLike,
    qdq_path: str | os.PathLike,
    model_name: str,
    images: ImageSet,
    *,
    threads: int = 2,
    batches: Sequence[int] | None = None,
    runs: int = 10,
) -> Evaluation:
    """Latency (median of ``runs`` session.run calls per batch size, ``threads`` intra-op
    threads; default batches 1 and a full detector batch / one frame's face cap) and
    output drift of the Q/DQ graph against FP32, on held-out images."""
    from omniface.runtime import make_session, time_session

    fp32 = make_session(fp32_path, threads=threads)
    qdq = make_session(qdq_path, threads=threads)
    (inp,) = fp32.get_inputs()
    data = np.ascontiguousarray(images.images)
    result = Evaluation(model_name, images.source, len(data), threads)
    ref = _run_all(fp32, inp.name, data, batch=8)
    got = _run_all(qdq, inp.name, data, batch=8)
    for name, value in ref.items():
        diff = np.abs(got[name].astype(np.float64) - value.astype(np.float64))
        result.drift[name] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
    if model_name == contract.ATTRIBUTES:
        m = result.task_metrics
        if contract.AGE in ref:
            m["age_mae_years"] = float(np.mean(np.abs(got[contract.AGE] - ref[contract.AGE])))
        if contract.EXPRESSION in ref:
            m["expression_argmax_agreement"] = float(np.mean(
                got[contract.EXPRESSION].argmax(1) == ref[contract.EXPRESSION].argmax(1)))
        for name in (contract.GENDER, contract.SMILE):
            if name in ref:
                m[f"{name}_decision_agreement"] = float(np.mean((got[name] > 0.5) == (ref[name] > 0.5)))
        if contract.HEAD_POSE in ref:
            m["head_pose_mae_degrees"] = float(np.mean(np.abs(got[contract.HEAD_POSE] - ref[contract.HEAD_POSE])))
    else:
        result.task_metrics.update(_detections_agreement(ref, got))
    if batches is None:
        top = contract.DETECTOR_MAX_BATCH if model_name == contract.DETECTOR else contract.MAX_FACES_DEFAULT
        batches = (1, top)
    for batch in batches:
        sample = np.ascontiguousarray(np.resize(data, (batch, *data.shape[1:])))
        a = time_session(fp32, {inp.name: sample}, runs)["median_ms"]
        b = time_session(qdq, {inp.name: sample}, runs)["median_ms"]
        result.latency_ms[str(batch)] = {"fp32": a, "qdq": b, "speedup": a / b if b else float("nan")}
    return result
