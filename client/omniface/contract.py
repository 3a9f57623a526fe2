"""The tensor contract: the one place where omniface names its models and tensors.

Everything that crosses a process boundary is declared here, as typed data: the
Triton model configs (``omniface.repository`` renders them), the ensemble wiring,
the ONNX input/output names (``omniface.export``), the SDK's request building and
result parsing, and perf_analyzer input files. A test re-renders the committed
``config.pbtxt`` files from this module and fails on any drift, so a tensor name
is typed once, here.

Bump ``CONTRACT_VERSION`` whenever a name, dtype, shape or meaning changes: the SDK
refuses to talk to a server whose ensemble declares another major version. A minor
version adds what an older SDK can ignore (1.1: the optional per-request detection
settings, three more ``frame_info`` fields, a detector of variable input size); the SDK
refuses to *use* such an addition against a server of an older minor version, with
``ContractMismatch`` saying so, and otherwise talks to it as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CONTRACT_VERSION = "1.1.0"
"""Semantic version of this contract; published as a model-config parameter."""

CONTRACT_VERSION_PARAMETER = "omniface_contract_version"
"""Name of the config.pbtxt parameter that carries ``CONTRACT_VERSION``."""
FUSED_STEPS_PARAMETER = "fused_steps"
"""Parameter of a fused model (``omniface.repository.fuse_steps``): JSON
``{"steps": [{"model", "input_map", "output_map"}, ...], "outputs": {name: tensor}}``
over the fused model's own tensor scope."""

INVALID_INPUT_PREFIX = "omniface: invalid input:"
"""Server-side steps start the message of a bad-request error with this; the SDK maps
such errors (wherever Triton puts them in its own message) to ``InvalidInput``."""

# --------------------------------------------------------------------------------------
# Geometry shared by the network, the pre/post-processing and the configs.
# --------------------------------------------------------------------------------------

DETECTOR_INPUT_HEIGHT = 480
DETECTOR_INPUT_WIDTH = 640
"""The canvas the network is trained on (frames letterboxed to VGA, landscape); also the
size TensorRT tunes the detector engine for (its profile's ``opt`` shape). Serving takes
any size: see ``DETECTOR_MAX_SIDE`` and ``DET_SIZE_DEFAULT``."""

DETECTOR_STRIDES: tuple[int, ...] = (8, 16, 32)
"""Anchor-free detection levels; one prediction per feature-map cell per stride."""

DETECTOR_SIZE_MULTIPLE = max(DETECTOR_STRIDES)
DETECTOR_MIN_SIDE = DETECTOR_SIZE_MULTIPLE
DETECTOR_MAX_SIDE = 1920
"""The detector graph takes any height and width that are multiples of
``DETECTOR_SIZE_MULTIPLE`` (every level's cells then tile the frame exactly), from
``DETECTOR_MIN_SIDE`` up to ``DETECTOR_MAX_SIDE`` on each side. Preprocess resizes a frame
to ``det_size`` (its long side) and pads it up to such a canvas; the same entries give the
TensorRT profile (``omniface.engines.profiles``)."""

DET_SIZE_NATIVE = 0
"""``det_size`` on the wire for "native": detect at the frame's own resolution (its long
side capped at ``DETECTOR_MAX_SIDE``), no resizing."""
DET_SIZE_NATIVE_NAME = "native"
"""How the SDK, the CLI and config parameters spell ``DET_SIZE_NATIVE``."""

DET_SIZE_DEFAULT = 640
"""The server's default ``det_size``: the long side frames are resized to for detection
when a request does not say. Chosen from measured AP and cost per size
(docs/performance.md, "Detection size")."""

DETECTOR_OPT_SIZE = (-(-DET_SIZE_DEFAULT * 3 // 4 // DETECTOR_SIZE_MULTIPLE) * DETECTOR_SIZE_MULTIPLE, DET_SIZE_DEFAULT)
"""(height, width) of a 4:3 landscape frame at the default ``det_size``: what the
TensorRT profile tunes the detector for, between the ``DETECTOR_MIN_SIDE`` and
``DETECTOR_MAX_SIDE`` it must cover."""

NUM_LANDMARKS = 5
"""Left eye, right eye, nose tip, left mouth corner, right mouth corner (image left/right
as seen by the viewer, the RetinaFace / InsightFace order)."""

LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

LANDMARK_FLIP_ORDER: tuple[int, ...] = (1, 0, 2, 4, 3)
"""Index permutation that keeps landmark semantics after a horizontal flip."""

CROP_SIZE = 112
"""Aligned face crops are CROP_SIZE x CROP_SIZE RGB (the ArcFace 112 template)."""

ALIGNMENT_TEMPLATE_112: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
"""Where the 5 landmarks land in a 112x112 aligned crop (InsightFace's arcface_dst)."""

PIXEL_MEAN = 127.5
PIXEL_SCALE = 1.0 / 128.0
"""Both graphs take UINT8 RGB and normalise inside the graph: (x - mean) * scale."""

MAX_FACES_DEFAULT = 64
"""Faces kept per frame after NMS (highest scores first); a postprocess setting."""

SCORE_THRESHOLD_DEFAULT = 0.5
NMS_IOU_DEFAULT = 0.4
MIN_FACE_SIZE_DEFAULT = 0.0
"""Faces whose box's longer side is shorter than this (original pixels) are dropped; 0 keeps all."""
MAX_SOURCE_SIDE_DEFAULT = 1920
"""Frames larger than this (longest side) are downscaled once in preprocess; face
crops are cut from that copy and coordinates are still reported in original pixels."""

MAX_FRAME_PIXELS = 8192 * 8192
"""Frames with more pixels are refused with a clear error instead of exhausting memory."""

MAX_ENCODED_BYTES = 64 * 1024 * 1024
"""Encoded images larger than this are refused (gRPC's default limit is lower anyway)."""


def detector_locations(height: int = DETECTOR_INPUT_HEIGHT, width: int = DETECTOR_INPUT_WIDTH) -> int:
    """Number of anchor points the detector emits for an input size: the sum of all
    feature-map cells (it follows the input: 6,300 at 480x640, 21 at 32x32)."""
    return sum((height // s) * (width // s) for s in DETECTOR_STRIDES)


# --------------------------------------------------------------------------------------
# Label spaces: class names and their order, units and ranges.
# --------------------------------------------------------------------------------------

EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
"""FER2013's seven classes, in FER2013's index order."""

GENDERS: tuple[str, ...] = ("male", "female")
"""UTKFace's coding: 0 male, 1 female. The network outputs P(female)."""

AGE_MIN = 1
AGE_MAX = 100
"""CORAL ordinal regression over integer ages AGE_MIN..AGE_MAX: AGE_MAX - AGE_MIN binary
rank tasks 'age > k'; age = AGE_MIN + sum of their probabilities."""

AGE_RANKS = AGE_MAX - AGE_MIN

HEAD_POSE_ANGLES: tuple[str, ...] = ("yaw", "pitch", "roll")
"""Degrees. GENKI-4K's sign convention: yaw > 0 turns to the subject's left."""

ACTION_UNITS: tuple[str, ...] = ("AU01", "AU02", "AU04", "AU06", "AU07", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24")
"""FACS action units the AU head predicts (BP4D's 12); no real labels exist here."""


@dataclass(frozen=True)
class Task:
    """One attribute task: what the head predicts, in which units, and whether the
    default (shipped) model carries it."""

    name: str
    kind: Literal["ordinal", "binary", "categorical", "regression", "multilabel"]
    outputs: tuple[str, ...]
    description: str
    in_default_model: bool = True


TASKS: tuple[Task, ...] = (
    Task("age", "ordinal", ("age", "age_std"), "age in years (CORAL expectation) and its standard deviation"),
    Task("gender", "binary", ("gender",), "probability that the face is female"),
    Task("expression", "categorical", ("expression",), "softmax over EXPRESSIONS"),
    Task("smile", "binary", ("smile",), "probability of a smile"),
    Task("head_pose", "regression", ("head_pose",), "yaw, pitch, roll in degrees"),
    Task("glasses", "binary", ("glasses",), "probability of eyeglasses (no real labels: not in the default model)", False),
    Task("action_units", "multilabel", ("action_units",), "per-AU activation probability (no real labels: not in the default model)", False),
)

TASKS_BY_NAME: dict[str, Task] = {t.name: t for t in TASKS}

DEFAULT_TASKS: tuple[str, ...] = tuple(t.name for t in TASKS if t.in_default_model)


# --------------------------------------------------------------------------------------
# Tensor and model specifications.
# --------------------------------------------------------------------------------------

DType = Literal["UINT8", "INT32", "INT64", "FP16", "FP32", "BYTES"]

NUMPY_DTYPES: dict[str, str] = {
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "BYTES": "object",
}
"""Triton datatype -> numpy dtype name (kept as strings so this module imports nothing)."""


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as Triton sees it: ``dims`` exclude the batch dimension when the owning
    model batches (max_batch_size > 0); -1 marks a variable dimension."""

    name: str
    dtype: DType
    dims: tuple[int, ...]
    description: str = ""
    optional: bool = False
    sizes: tuple[tuple[int, int, int], ...] = ()
    """(min, opt, max) of each variable (-1) dim, in order, for a tensor that an engine
    with optimisation profiles takes (``omniface.engines.profiles``)."""


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble: ``input_map``/``output_map`` go from the step model's
    tensor names to the ensemble-scope tensor names."""

    model_name: str
    input_map: dict[str, str]
    output_map: dict[str, str]


@dataclass(frozen=True)
class ModelSpec:
    """One model of the repository. ``backend`` is "python" for python-backend steps,
    "onnx" for the network graphs (served by a python adapter over ONNX Runtime on
    CPU, or as ``tensorrt_plan`` on GPU), and "ensemble" for pipelines."""

    name: str
    backend: Literal["python", "onnx", "ensemble"]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    description: str = ""
    dynamic_batching: bool = False
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    instance_count: int = 1
    parameters: dict[str, str] = field(default_factory=dict)
    steps: tuple[EnsembleStep, ...] = ()

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, self.name)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, self.name)


def _by_name(tensors: tuple[TensorSpec, ...], name: str, model: str) -> TensorSpec:
    for tensor in tensors:
        if tensor.name == name:
            return tensor
    raise KeyError(f"model {model!r} has no tensor {name!r}")


# --------------------------------------------------------------------------------------
# Tensor names. Everything else refers to these constants, never to string literals.
# --------------------------------------------------------------------------------------

IMAGE_BYTES = "IMAGE_BYTES"
"""Encoded frame (JPEG, PNG, WebP, BMP): BYTES, shape [1]."""
IMAGE_RAW = "IMAGE_RAW"
"""Decoded frame: UINT8, shape [H, W, 3], RGB order."""

DETECTOR_IMAGE = "image"
"""Detector graph input: UINT8 [N, H, W, 3] RGB, the frame resized and padded to H x W
(multiples of DETECTOR_SIZE_MULTIPLE, at most DETECTOR_MAX_SIDE)."""
DETECTOR_SCORES = "scores"
DETECTOR_BOXES = "boxes"
DETECTOR_LANDMARKS = "landmarks"

SOURCE_IMAGE = "source_image"
FRAME_INFO = "frame_info"
FRAME_INFO_FIELDS: tuple[str, ...] = (
    "height", "width", "scale", "pad_x", "pad_y", "source_scale", "orientation", "detector_height", "detector_width",
)
"""frame_info layout: the frame's height and width (upright: after its EXIF orientation),
letterbox scale (detector px per original px), letterbox padding (detector px),
source_scale (source px per original px), the EXIF orientation applied (1-8; 1 for raw
frames and images without the tag), and the detector canvas the frame was resized and
padded to. Contract 1.0 had the first six; fields are only ever appended."""
FRAME_INFO_FIELDS_1_0 = 6
"""How many ``frame_info`` fields a contract 1.0 server sends."""

CROPS = "crops"
"""Attributes graph input: UINT8 [N, CROP_SIZE, CROP_SIZE, 3] RGB aligned faces."""

FACE_COUNT = "face_count"
FACE_BOXES = "face_boxes"
FACE_SCORES = "face_scores"
FACE_LANDMARKS = "face_landmarks"
FACE_CROPS = "face_crops"

# Attribute outputs are named after the task outputs above.
AGE = "age"
AGE_STD = "age_std"
GENDER = "gender"
EXPRESSION = "expression"
SMILE = "smile"
HEAD_POSE = "head_pose"
GLASSES = "glasses"
ACTION_UNIT_PROBS = "action_units"

ATTRIBUTE_OUTPUT_SPECS: dict[str, TensorSpec] = {
    AGE: TensorSpec(AGE, "FP32", (1,), "years"),
    AGE_STD: TensorSpec(AGE_STD, "FP32", (1,), "years, standard deviation of the CORAL age distribution"),
    GENDER: TensorSpec(GENDER, "FP32", (1,), "P(female)"),
    EXPRESSION: TensorSpec(EXPRESSION, "FP32", (len(EXPRESSIONS),), "softmax over EXPRESSIONS"),
    SMILE: TensorSpec(SMILE, "FP32", (1,), "P(smile)"),
    HEAD_POSE: TensorSpec(HEAD_POSE, "FP32", (len(HEAD_POSE_ANGLES),), "yaw, pitch, roll in degrees"),
    GLASSES: TensorSpec(GLASSES, "FP32", (1,), "P(eyeglasses)"),
    ACTION_UNIT_PROBS: TensorSpec(ACTION_UNIT_PROBS, "FP32", (len(ACTION_UNITS),), "P(AU active) per ACTION_UNITS"),
}


def attribute_outputs(tasks: tuple[str, ...] = DEFAULT_TASKS) -> tuple[TensorSpec, ...]:
    """Output tensors of the attributes graph for a task list, in TASKS order."""
    unknown = set(tasks) - set(TASKS_BY_NAME)
    if unknown:
        raise KeyError(f"unknown tasks {sorted(unknown)}; known: {[t.name for t in TASKS]}")
    return tuple(ATTRIBUTE_OUTPUT_SPECS[o] for t in TASKS if t.name in tasks for o in t.outputs)


# --------------------------------------------------------------------------------------
# The models of the repository.
# --------------------------------------------------------------------------------------

PREPROCESS = "preprocess"
DETECTOR = "detector"
POSTPROCESS = "postprocess"
ATTRIBUTES = "attributes"
FACE_ANALYSIS = "face_analysis"
"""The ensemble: frame in, per-face results out."""
FACE_ATTRIBUTES = ATTRIBUTES
"""The second entry point: attributes alone on aligned crops the user already has."""

DETECTOR_MAX_BATCH = 8
ATTRIBUTES_MAX_BATCH = 128

# --------------------------------------------------------------------------------------
# Per-request detection settings.
# --------------------------------------------------------------------------------------

SCORE_THRESHOLD = "score_threshold"
MAX_FACES = "max_faces"
MIN_FACE_SIZE = "min_face_size"
DET_SIZE = "det_size"


@dataclass(frozen=True)
class Setting:
    """A detection setting a request may override: an optional ``[1]`` input of the
    ``face_analysis`` ensemble named ``name``, routed to ``step``, whose config parameter
    of the same name is the server's default. A value is valid in ``minimum..maximum``
    (``maximum`` None: no upper bound) or when it is one of ``special``."""

    name: str
    dtype: Literal["INT32", "FP32"]
    step: str
    minimum: float
    maximum: float | None
    description: str
    special: tuple[int, ...] = ()

    @property
    def tensor(self) -> TensorSpec:
        return TensorSpec(self.name, self.dtype, (1,), self.description, optional=True)

    def problem(self, value: float) -> str | None:
        """Why ``value`` is not valid for this setting (None when it is)."""
        if value in self.special:
            return None
        if value != value or value in (float("inf"), float("-inf")):
            return f"{self.name} must be a finite number, got {value}"
        if self.dtype == "INT32" and value != int(value):
            return f"{self.name} must be an integer, got {value}"
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            upper = "" if self.maximum is None else f" and {self.maximum:g}"
            either = f" (or {', '.join(str(s) for s in self.special)})" if self.special else ""
            bound = f"between {self.minimum:g}{upper}" if upper else f">= {self.minimum:g}"
            return f"{self.name} must be {bound}{either}, got {value:g}: {self.description}"
        return None


DETECTION_SETTINGS: tuple[Setting, ...] = (
    Setting(SCORE_THRESHOLD, "FP32", POSTPROCESS, 0.0, 1.0,
            "faces whose detection score is not above it are dropped"),
    Setting(MAX_FACES, "INT32", POSTPROCESS, 1, ATTRIBUTES_MAX_BATCH,
            "at most this many faces per frame, highest scores first (up to the attributes model's batch limit)"),
    Setting(MIN_FACE_SIZE, "FP32", POSTPROCESS, 0.0, None,
            "faces whose box's longer side is shorter than this many pixels of the frame are dropped"),
    Setting(DET_SIZE, "INT32", PREPROCESS, DETECTOR_MIN_SIDE, DETECTOR_MAX_SIDE,
            f"the long side, in pixels, the frame is resized to for detection ({DET_SIZE_NATIVE} = "
            f"{DET_SIZE_NATIVE_NAME}: the frame's own size, capped at {DETECTOR_MAX_SIDE})",
            special=(DET_SIZE_NATIVE,)),
)
"""Every per-request setting, in the order the SDK takes them."""

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in DETECTION_SETTINGS}
SETTINGS_SINCE = "1.1.0"
"""The contract version that introduced the per-request settings."""


def setting_inputs(step: str) -> tuple[TensorSpec, ...]:
    """The optional setting inputs of one step."""
    return tuple(s.tensor for s in DETECTION_SETTINGS if s.step == step)


def build_models(
    tasks: tuple[str, ...] = DEFAULT_TASKS,
    max_faces: int = MAX_FACES_DEFAULT,
) -> dict[str, ModelSpec]:
    """All models of the repository, keyed by name, for a task list and face cap."""
    attr_outputs = attribute_outputs(tasks)
    version = {CONTRACT_VERSION_PARAMETER: CONTRACT_VERSION}

    preprocess = ModelSpec(
        name=PREPROCESS,
        backend="python",
        description="Decode one frame (encoded bytes or raw RGB), letterbox it for the detector, "
        "keep a size-capped source copy for alignment, and record the coordinate mapping.",
        inputs=(
            TensorSpec(IMAGE_BYTES, "BYTES", (1,), "encoded JPEG/PNG/WebP/BMP/GIF", optional=True),
            TensorSpec(IMAGE_RAW, "UINT8", (-1, -1, 3), "decoded RGB frame", optional=True),
            *setting_inputs(PREPROCESS),
        ),
        outputs=(
            TensorSpec(DETECTOR_IMAGE, "UINT8", (1, -1, -1, 3)),
            TensorSpec(SOURCE_IMAGE, "UINT8", (-1, -1, 3)),
            TensorSpec(FRAME_INFO, "FP32", (len(FRAME_INFO_FIELDS),)),
        ),
        parameters={"max_source_side": str(MAX_SOURCE_SIDE_DEFAULT), DET_SIZE: str(DET_SIZE_DEFAULT), **version},
    )
    detector = ModelSpec(
        name=DETECTOR,
        backend="onnx",
        description="The detection graph: raw per-location face score, box distances and landmarks.",
        max_batch_size=DETECTOR_MAX_BATCH,
        dynamic_batching=True,
        max_queue_delay_us=0,
        inputs=(TensorSpec(DETECTOR_IMAGE, "UINT8", (-1, -1, 3), "H, W multiples of DETECTOR_SIZE_MULTIPLE",
                           sizes=tuple((DETECTOR_MIN_SIDE, opt, DETECTOR_MAX_SIDE) for opt in DETECTOR_OPT_SIZE)),),
        outputs=(
            TensorSpec(DETECTOR_SCORES, "FP32", (-1,), "sigmoid face score per location (detector_locations(H, W))"),
            TensorSpec(DETECTOR_BOXES, "FP32", (-1, 4), "left/top/right/bottom distances, in stride units"),
            TensorSpec(DETECTOR_LANDMARKS, "FP32", (-1, 2 * NUM_LANDMARKS), "landmark offsets from the cell centre, in stride units"),
        ),
        parameters=dict(version),
    )
    postprocess = ModelSpec(
        name=POSTPROCESS,
        backend="python",
        description="Decode detections, threshold, NMS, cap faces, and align each face to a crop. "
        "Always emits at least one crop row so the attributes step never sees an empty batch; "
        "face_count says how many rows are real.",
        inputs=(
            TensorSpec(DETECTOR_SCORES, "FP32", (1, -1)),
            TensorSpec(DETECTOR_BOXES, "FP32", (1, -1, 4)),
            TensorSpec(DETECTOR_LANDMARKS, "FP32", (1, -1, 2 * NUM_LANDMARKS)),
            TensorSpec(SOURCE_IMAGE, "UINT8", (-1, -1, 3)),
            TensorSpec(FRAME_INFO, "FP32", (len(FRAME_INFO_FIELDS),)),
            *setting_inputs(POSTPROCESS),
        ),
        outputs=(
            TensorSpec(FACE_COUNT, "INT32", (1,), "number of real faces (rows beyond it are padding)"),
            TensorSpec(FACE_BOXES, "FP32", (-1, 4), "x1, y1, x2, y2 in original pixels"),
            TensorSpec(FACE_SCORES, "FP32", (-1,), "detection confidence"),
            TensorSpec(FACE_LANDMARKS, "FP32", (-1, NUM_LANDMARKS, 2), "x, y in original pixels"),
            TensorSpec(CROPS, "UINT8", (-1, CROP_SIZE, CROP_SIZE, 3), "aligned face crops"),
        ),
        parameters={
            SCORE_THRESHOLD: str(SCORE_THRESHOLD_DEFAULT),
            "nms_iou": str(NMS_IOU_DEFAULT),
            MAX_FACES: str(max_faces),
            MIN_FACE_SIZE: str(MIN_FACE_SIZE_DEFAULT),
            **version,
        },
    )
    attributes = ModelSpec(
        name=ATTRIBUTES,
        backend="onnx",
        description="The attribute graph on aligned crops; dynamic batching merges crops of concurrent frames. "
        "Also the attributes-only entry point.",
        max_batch_size=ATTRIBUTES_MAX_BATCH,
        dynamic_batching=True,
        max_queue_delay_us=0,
        inputs=(TensorSpec(CROPS, "UINT8", (CROP_SIZE, CROP_SIZE, 3)),),
        outputs=attr_outputs,
        parameters={"tasks": ",".join(tasks), **version},
    )
    ensemble_outputs = (
        TensorSpec(FACE_COUNT, "INT32", (1,)),
        TensorSpec(FACE_BOXES, "FP32", (-1, 4)),
        TensorSpec(FACE_SCORES, "FP32", (-1,)),
        TensorSpec(FACE_LANDMARKS, "FP32", (-1, NUM_LANDMARKS, 2)),
        TensorSpec(FRAME_INFO, "FP32", (len(FRAME_INFO_FIELDS),)),
        *(TensorSpec(t.name, t.dtype, (-1, *t.dims), t.description) for t in attr_outputs),
    )
    face_analysis = ModelSpec(
        name=FACE_ANALYSIS,
        backend="ensemble",
        description="Frame in, per-face boxes, landmarks and attributes out; optional per-request "
        "detection settings (DETECTION_SETTINGS) override the steps' configured values.",
        inputs=(*preprocess.inputs[:2], *(s.tensor for s in DETECTION_SETTINGS)),
        outputs=ensemble_outputs,
        parameters={"tasks": ",".join(tasks), **version},
        steps=(
            EnsembleStep(PREPROCESS, {IMAGE_BYTES: IMAGE_BYTES, IMAGE_RAW: IMAGE_RAW, **_settings_map(PREPROCESS)},
                         {DETECTOR_IMAGE: "_letterboxed", SOURCE_IMAGE: "_source", FRAME_INFO: FRAME_INFO}),
            EnsembleStep(DETECTOR, {DETECTOR_IMAGE: "_letterboxed"},
                         {DETECTOR_SCORES: "_scores", DETECTOR_BOXES: "_boxes", DETECTOR_LANDMARKS: "_landmarks"}),
            EnsembleStep(POSTPROCESS,
                         {DETECTOR_SCORES: "_scores", DETECTOR_BOXES: "_boxes", DETECTOR_LANDMARKS: "_landmarks",
                          SOURCE_IMAGE: "_source", FRAME_INFO: FRAME_INFO, **_settings_map(POSTPROCESS)},
                         {FACE_COUNT: FACE_COUNT, FACE_BOXES: FACE_BOXES, FACE_SCORES: FACE_SCORES,
                          FACE_LANDMARKS: FACE_LANDMARKS, CROPS: "_crops"}),
            EnsembleStep(ATTRIBUTES, {CROPS: "_crops"}, {t.name: t.name for t in attr_outputs}),
        ),
    )
    return {m.name: m for m in (preprocess, detector, postprocess, attributes, face_analysis)}


def _settings_map(step: str) -> dict[str, str]:
    """Ensemble input_map entries of a step's settings (same name on both sides)."""
    return {s.name: s.name for s in DETECTION_SETTINGS if s.step == step}


MODELS: dict[str, ModelSpec] = build_models()
"""The default repository's models."""
