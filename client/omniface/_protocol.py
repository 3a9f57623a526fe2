"""The wire protocol of the SDK: pure functions from ``omniface.contract``, no I/O.

``Client`` and ``AsyncClient`` share everything here and differ only in how they wait
for the network (the tritonclient/httpx split): building the request tensors of the
``face_analysis`` ensemble and of the ``attributes`` model, turning response tensors
into ``omniface.types`` results, checking the server's contract version, and mapping
tritonclient's ``InferenceServerException`` onto ``omniface.errors``.

Functions that build tensors take the tritonclient module (``tritonclient.grpc`` or
``tritonclient.grpc.aio``, which export the same ``InferInput`` and
``InferRequestedOutput``) so the one code path serves both clients.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Union

import numpy as np

from omniface import contract
from omniface.errors import (
    ContractMismatch,
    InvalidInput,
    OmnifaceError,
    ServerError,
    ServerUnavailable,
    Timeout,
)
from omniface.types import Box, Face, FaceAttributes, FrameResult, HeadPose, Point, ScoreMap

Frame = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray]
"""What ``analyze`` accepts: a path to an encoded image, the encoded bytes themselves,
or a decoded ``HxWx3`` (or ``HxW`` grayscale) uint8 array in the client's colour order.
PIL images are accepted too (converted to RGB)."""

INVALID_INPUT_PREFIX = contract.INVALID_INPUT_PREFIX

COLOR_ORDERS = ("RGB", "BGR")

SERVE_HINT = "start the server with `omniface serve` (or check the URL / --url, and ssl= if it serves TLS)"

# ----------------------------------------------------------------------------------
# Small validators shared by both clients.
# ----------------------------------------------------------------------------------


def normalize_color_order(color_order: str) -> str:
    order = str(color_order).upper()
    if order not in COLOR_ORDERS:
        raise InvalidInput(f"color_order must be one of {COLOR_ORDERS}, got {color_order!r}")
    return order


def normalize_url(url: str) -> tuple[str, bool]:
    """``host:port`` for tritonclient, and whether the URL asked for TLS (``grpcs://``)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"url must be a 'host:port' string such as '127.0.0.1:8001', got {url!r}")
    url = url.strip()
    secure = False
    for scheme, tls in (("grpcs://", True), ("grpc://", False)):
        if url.lower().startswith(scheme):
            url, secure = url[len(scheme):], tls
            break
    else:
        if "://" in url:
            raise InvalidInput(
                f"url {url!r}: omniface speaks gRPC; pass 'host:port' of the gRPC endpoint (default port 8001), "
                "not an http:// URL"
            )
    return url.rstrip("/"), secure


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_timeout(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidInput(f"timeout must be a positive number of seconds or None, got {value!r}")
    return float(value)


def backoff_delay(attempt: int, backoff: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential."""
    return backoff * (2.0 ** attempt)


# ----------------------------------------------------------------------------------
# What the server runs: contract version and task list, from a model config.
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What the SDK learnt from one model's config on the server."""

    name: str
    contract_version: str | None
    tasks: tuple[str, ...]


def _parameter(parameters: Mapping[str, Any], key: str) -> str | None:
    value = parameters.get(key)
    if value is None:
        return None
    if isinstance(value, Mapping):  # the JSON form: {"string_value": "..."}
        value = value.get("string_value")
    return None if value is None else str(value)


def _major(version: str) -> int:
    try:
        return int(version.strip().split(".")[0])
    except (ValueError, AttributeError) as exc:
        raise ContractMismatch(
            f"the server declares contract version {version!r}, which is not a semantic version; "
            "is this an omniface model repository?"
        ) from exc


def check_contract(model_config_parameters: Mapping[str, Any], model: str = contract.FACE_ANALYSIS) -> str:
    """Compare the server's ``omniface_contract_version`` with this SDK's.

    ``model_config_parameters`` is the ``parameters`` map of the model config as
    ``get_model_config(..., as_json=True)["config"]["parameters"]`` returns it (values
    ``{"string_value": ...}``; plain strings are accepted too). Returns the server's
    version; raises ``ContractMismatch`` when the major versions differ or the parameter
    is missing. Minor and patch differences are compatible by definition."""
    server = _parameter(model_config_parameters or {}, contract.CONTRACT_VERSION_PARAMETER)
    if not server:
        raise ContractMismatch(
            f"model {model!r} on the server declares no {contract.CONTRACT_VERSION_PARAMETER!r} parameter: "
            "not an omniface repository? Serve the omniface model repository (`omniface serve`) "
            "or pass check_contract=False to skip this check"
        )
    ours = contract.CONTRACT_VERSION
    if _major(server) != _major(ours):
        if _major(server) < _major(ours):
            fix = (f"upgrade the server's model repository to contract {_major(ours)}.x "
                   f"(re-render it with omniface {_sdk_version()}), or install an SDK for contract "
                   f"{_major(server)}.x")
        else:
            fix = f"upgrade the SDK (pip install -U omniface) to one that speaks contract {_major(server)}.x"
        raise ContractMismatch(
            f"the server's model {model!r} speaks omniface contract {server}, this SDK speaks {ours}: {fix}"
        )
    return server


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.1.0"`` -> ``(1, 1, 0)``; non-numeric parts count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in str(version).strip().split(".")[:3])


def check_settings_supported(info: ModelInfo, settings: Mapping[str, float]) -> None:
    """Refuse, before sending, per-request settings to a server whose contract predates
    them (it would answer "unexpected inference input"). A server whose version is
    unknown (``check_contract=False``) gets them as they are."""
    if not settings or info.contract_version is None:
        return
    if version_tuple(info.contract_version) < version_tuple(contract.SETTINGS_SINCE):
        raise ContractMismatch(
            f"the server's {info.name!r} speaks contract {info.contract_version}, which takes no per-request "
            f"detection settings ({', '.join(sorted(settings))}; they came with {contract.SETTINGS_SINCE}): "
            "re-render the server's repository with this omniface, or call without them (the server's "
            "configured values then apply)"
        )


def _sdk_version() -> str:
    from omniface import __version__

    return __version__


def tasks_from_parameters(model_config_parameters: Mapping[str, Any]) -> tuple[str, ...]:
    """The attribute tasks a model declares (its ``tasks`` parameter), in contract order.

    Tasks this SDK does not know (a newer minor contract) are ignored; no parameter
    means the default task list."""
    raw = _parameter(model_config_parameters or {}, "tasks")
    if raw is None:
        return contract.DEFAULT_TASKS
    declared = {t.strip() for t in raw.split(",") if t.strip()}
    return tuple(t.name for t in contract.TASKS if t.name in declared)


def model_info(model_config: Mapping[str, Any], name: str, check: bool = True) -> ModelInfo:
    """``ModelInfo`` from ``get_model_config(name, as_json=True)`` (with or without its
    ``"config"`` wrapper); checks the contract unless ``check`` is False."""
    config = model_config.get("config", model_config) if isinstance(model_config, Mapping) else {}
    parameters = config.get("parameters", {}) or {}
    version = check_contract(parameters, name) if check else _parameter(parameters, contract.CONTRACT_VERSION_PARAMETER)
    return ModelInfo(name=name, contract_version=version, tasks=tasks_from_parameters(parameters))


# ----------------------------------------------------------------------------------
# Requests.
# ----------------------------------------------------------------------------------


def _processing_image():
    from omniface.processing import image

    return image


def _input(module: ModuleType, spec: contract.TensorSpec, array: np.ndarray):
    infer_input = module.InferInput(spec.name, list(array.shape), spec.dtype)
    try:
        infer_input.set_data_from_numpy(array)
    except Exception as exc:  # tritonclient raises its own exception for dtype/shape slips
        raise InvalidInput(f"cannot encode {spec.name} ({array.dtype}, shape {array.shape}): {exc}") from exc
    return infer_input


def encoded_frame(data: bytes | bytearray | memoryview, source: str = "image bytes") -> np.ndarray:
    """The ``IMAGE_BYTES`` tensor value: one encoded image in a BYTES [1] array."""
    data = bytes(data)
    if not data:
        raise InvalidInput(f"{source} is empty; send a JPEG, PNG, WebP or BMP file")
    if len(data) > contract.MAX_ENCODED_BYTES:
        raise InvalidInput(
            f"{source} is {len(data) / 2**20:.1f} MiB; the limit is {contract.MAX_ENCODED_BYTES / 2**20:.0f} MiB "
            "(re-encode it as JPEG or downscale it)"
        )
    return np.array([data], dtype=np.object_)


def read_frame_file(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"image file {os.fspath(path)!r} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"{os.fspath(path)!r} is a directory, not an image file") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read image file {os.fspath(path)!r}: {exc.strerror or exc}") from None


def frame_array(frame: Any, color_order: str) -> np.ndarray:
    """A decoded frame as the contiguous RGB uint8 ``HxWx3`` array ``IMAGE_RAW`` takes."""
    if not isinstance(frame, np.ndarray) and hasattr(frame, "convert") and hasattr(frame, "mode"):
        frame, color_order = np.asarray(frame.convert("RGB")), "RGB"  # a PIL image
    rgb = _processing_image().as_rgb_frame(frame, normalize_color_order(color_order))
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def build_frame_inputs(frame: Frame, color_order: str, module: ModuleType) -> list:
    """The ``InferInput`` list of one ``face_analysis`` request.

    A path is read and sent encoded (``IMAGE_BYTES``), as are bytes; the server decodes
    them. An array (or PIL image) is validated and converted to RGB here and sent raw
    (``IMAGE_RAW``)."""
    spec = contract.MODELS[contract.FACE_ANALYSIS]
    if isinstance(frame, (str, os.PathLike)):
        return [_input(module, spec.input(contract.IMAGE_BYTES), encoded_frame(read_frame_file(frame), f"image file {os.fspath(frame)!r}"))]
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return [_input(module, spec.input(contract.IMAGE_BYTES), encoded_frame(frame))]
    if isinstance(frame, np.ndarray) or (hasattr(frame, "convert") and hasattr(frame, "mode")):
        return [_input(module, spec.input(contract.IMAGE_RAW), frame_array(frame, color_order))]
    raise InvalidInput(
        f"cannot analyse a {type(frame).__name__}: pass a file path, the encoded image bytes "
        "(JPEG/PNG/WebP/BMP), or a uint8 HxWx3 / HxW numpy array"
    )


def detection_settings(
    score_threshold: float | None = None,
    max_faces: int | None = None,
    min_face_size: float | None = None,
    det_size: int | str | None = None,
) -> dict[str, float]:
    """The per-request detection settings that were given (None: the server's configured
    value), checked as the server checks them, as ``{name: wire value}``.

    ``det_size`` is a long side in pixels or ``"native"`` (sent as ``DET_SIZE_NATIVE``)."""
    given = {contract.SCORE_THRESHOLD: score_threshold, contract.MAX_FACES: max_faces,
             contract.MIN_FACE_SIZE: min_face_size}
    settings: dict[str, float] = {}
    for name, value in given.items():
        if value is None:
            continue
        setting = contract.SETTINGS_BY_NAME[name]
        integral = setting.dtype == "INT32"
        kinds = (int, np.integer) if integral else (int, float, np.integer, np.floating)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise InvalidInput(f"{name} must be {'an integer' if integral else 'a number'}, got {value!r}")
        problem = setting.problem(float(value))
        if problem:
            raise InvalidInput(problem)
        settings[name] = int(value) if integral else float(value)
    if det_size is not None:
        settings[contract.DET_SIZE] = _processing_image().parse_det_size(det_size)
    return settings


def build_settings_inputs(settings: Mapping[str, float], module: ModuleType) -> list:
    """The ``InferInput``s of the settings ``detection_settings`` returned: one ``[1]``
    optional ensemble input each, dtype from the contract."""
    inputs = []
    for name, value in settings.items():
        spec = contract.SETTINGS_BY_NAME[name].tensor
        inputs.append(_input(module, spec, np.array([value], dtype=contract.NUMPY_DTYPES[spec.dtype])))
    return inputs


def frame_output_names(tasks: Sequence[str] = contract.DEFAULT_TASKS) -> tuple[str, ...]:
    """Every output of the ``face_analysis`` ensemble for a task list, contract order."""
    return tuple(t.name for t in contract.build_models(tuple(tasks))[contract.FACE_ANALYSIS].outputs)


def attribute_output_names(tasks: Sequence[str] = contract.DEFAULT_TASKS) -> tuple[str, ...]:
    return tuple(t.name for t in contract.attribute_outputs(tuple(tasks)))


def requested_outputs(names: Iterable[str], module: ModuleType) -> list:
    return [module.InferRequestedOutput(name) for name in names]


def crop_array(crop: Any, color_order: str) -> np.ndarray:
    """One face crop as the ``CROP_SIZE`` square RGB uint8 array the attributes model takes."""
    rgb = frame_array(crop, color_order)
    if rgb.shape[:2] != (contract.CROP_SIZE, contract.CROP_SIZE):
        rgb = _processing_image().resize_crop(rgb, contract.CROP_SIZE)
    rgb = np.asarray(rgb)
    expected = (contract.CROP_SIZE, contract.CROP_SIZE, 3)
    if rgb.shape != expected:  # pragma: no cover - resize_crop's contract
        raise InvalidInput(f"a face crop resized to {rgb.shape}, expected {expected}")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def build_crop_inputs(
    crops: Sequence[Any] | np.ndarray,
    module: ModuleType,
    color_order: str = "RGB",
    max_batch: int = contract.ATTRIBUTES_MAX_BATCH,
) -> list[tuple[list, int]]:
    """``(inputs, rows)`` per request to the ``attributes`` model: the crops resized to
    ``CROP_SIZE`` and stacked into UINT8 ``[N, 112, 112, 3]`` batches of at most
    ``max_batch`` (the model's ``max_batch_size``). No crops, no requests.

    ``crops`` is a sequence of arrays of any size (each an aligned face, in
    ``color_order``), or one ``[N, H, W, 3]`` array."""
    if isinstance(crops, np.ndarray):
        if crops.ndim != 4:
            raise InvalidInput(
                f"a crop batch array must be [N, H, W, 3], got shape {crops.shape}; "
                "pass a list to send crops of different sizes"
            )
        items = list(crops)
    elif isinstance(crops, (str, bytes, os.PathLike)) or not isinstance(crops, Iterable):
        raise InvalidInput("analyze_faces takes a list of face crops (uint8 HxWx3 arrays)")
    else:
        items = list(crops)
    prepared = []
    for index, crop in enumerate(items):
        if not isinstance(crop, np.ndarray) and not (hasattr(crop, "convert") and hasattr(crop, "mode")):
            raise InvalidInput(f"crop {index} is a {type(crop).__name__}; each crop must be a uint8 HxWx3 array")
        try:
            prepared.append(crop_array(crop, color_order))
        except InvalidInput as exc:
            raise InvalidInput(f"crop {index}: {exc}") from None
    spec = contract.MODELS[contract.FACE_ATTRIBUTES].input(contract.CROPS)
    chunks = []
    for start in range(0, len(prepared), max_batch):
        batch = np.stack(prepared[start:start + max_batch])
        chunks.append(([_input(module, spec, batch)], len(batch)))
    return chunks


# ----------------------------------------------------------------------------------
# Responses.
# ----------------------------------------------------------------------------------


def outputs_of(result: Any, names: Iterable[str]) -> dict[str, np.ndarray]:
    """``{name: array}`` of the outputs present in a tritonclient ``InferResult``."""
    arrays = {}
    for name in names:
        array = result.as_numpy(name)
        if array is not None:
            arrays[name] = array
    return arrays


def _required(outputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    try:
        return np.asarray(outputs[name])
    except KeyError:
        raise ServerError(
            f"the server's response lacks {name!r}; does it run the omniface repository of contract "
            f"{contract.CONTRACT_VERSION}?"
        ) from None


def _rows(array: np.ndarray, name: str, count: int) -> np.ndarray:
    """The first ``count`` rows of a per-face tensor as float64 [count, -1]."""
    array = np.asarray(array)
    if array.ndim == 0 or array.shape[0] < count:
        raise ServerError(f"malformed response: {name} has shape {array.shape} for {count} faces")
    width = int(np.prod(array.shape[1:], dtype=np.int64))
    return array[:count].reshape(count, width).astype(np.float64)


def parse_attribute_rows(outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, Any]]:
    """Per face, the ``FaceAttributes`` keyword arguments of the tensors present."""
    rows: list[dict[str, Any]] = [{} for _ in range(count)]
    if count == 0:
        return rows

    def present(name: str) -> np.ndarray | None:
        array = outputs.get(name)
        return None if array is None else _rows(array, name, count)

    if (age := present(contract.AGE)) is not None:
        for row, value in zip(rows, age[:, 0].tolist()):
            row["age"] = value
    if (age_std := present(contract.AGE_STD)) is not None:
        for row, value in zip(rows, age_std[:, 0].tolist()):
            row["age_std"] = value
    if (gender := present(contract.GENDER)) is not None:
        female = contract.GENDERS.index("female")
        for row, p in zip(rows, gender[:, 0].tolist()):
            row["gender"] = contract.GENDERS[female] if p >= 0.5 else contract.GENDERS[1 - female]
            row["gender_score"] = max(p, 1.0 - p)
    if (expression := present(contract.EXPRESSION)) is not None:
        labels = contract.EXPRESSIONS
        if expression.shape[1] != len(labels):
            raise ServerError(f"malformed response: {contract.EXPRESSION} has {expression.shape[1]} classes, expected {len(labels)}")
        for row, scores in zip(rows, expression.tolist()):
            best = max(range(len(labels)), key=scores.__getitem__)
            row["expression"] = labels[best]
            row["expression_scores"] = ScoreMap(zip(labels, scores))
    for name, flag, score in ((contract.SMILE, "smile", "smile_score"), (contract.GLASSES, "glasses", "glasses_score")):
        if (values := present(name)) is not None:
            for row, p in zip(rows, values[:, 0].tolist()):
                row[flag] = p >= 0.5
                row[score] = p
    if (pose := present(contract.HEAD_POSE)) is not None:
        if pose.shape[1] != len(contract.HEAD_POSE_ANGLES):
            raise ServerError(f"malformed response: {contract.HEAD_POSE} has shape {pose.shape}")
        for row, angles in zip(rows, pose.tolist()):
            row["head_pose"] = HeadPose(**dict(zip(contract.HEAD_POSE_ANGLES, angles)))
    if (units := present(contract.ACTION_UNIT_PROBS)) is not None:
        if units.shape[1] != len(contract.ACTION_UNITS):
            raise ServerError(f"malformed response: {contract.ACTION_UNIT_PROBS} has shape {units.shape}")
        for row, probs in zip(rows, units.tolist()):
            row["action_units"] = ScoreMap(zip(contract.ACTION_UNITS, probs))
    return rows


def parse_frame_result(outputs: Mapping[str, np.ndarray]) -> FrameResult:
    """A ``FrameResult`` from the ``face_analysis`` outputs.

    ``face_count`` says how many rows are real: the server always sends at least one
    (padded) row so the attributes step never sees an empty batch. ``frame_info``
    carries the original height and width. Attribute tensors that are absent (tasks the
    server's model lacks) leave their fields ``None``."""
    count_array = _required(outputs, contract.FACE_COUNT).reshape(-1)
    if count_array.size < 1 or int(count_array[0]) < 0:
        raise ServerError(f"malformed response: {contract.FACE_COUNT} = {count_array!r}")
    count = int(count_array[0])
    info = _required(outputs, contract.FRAME_INFO).reshape(-1)
    if info.size < contract.FRAME_INFO_FIELDS_1_0:
        raise ServerError(f"malformed response: {contract.FRAME_INFO} has {info.size} values")
    fields = dict(zip(contract.FRAME_INFO_FIELDS, info.tolist()))  # a 1.0 server sends the first six
    height, width = int(round(fields["height"])), int(round(fields["width"]))
    orientation = int(round(fields["orientation"])) if "orientation" in fields else None
    detection_size = (int(round(fields["detector_width"])), int(round(fields["detector_height"]))) \
        if "detector_width" in fields else None

    boxes = _rows(_required(outputs, contract.FACE_BOXES), contract.FACE_BOXES, count)
    scores = _rows(_required(outputs, contract.FACE_SCORES), contract.FACE_SCORES, count)
    landmarks = _rows(_required(outputs, contract.FACE_LANDMARKS), contract.FACE_LANDMARKS, count)
    if count and (boxes.shape[1] != 4 or landmarks.shape[1] != 2 * contract.NUM_LANDMARKS):
        raise ServerError(f"malformed response: boxes {boxes.shape}, landmarks {landmarks.shape}")
    attributes = parse_attribute_rows(outputs, count)
    faces = tuple(
        Face(
            box=Box(*box),
            score=score[0],
            landmarks=tuple(Point(points[2 * i], points[2 * i + 1]) for i in range(contract.NUM_LANDMARKS)),
            **attrs,
        )
        for box, score, points, attrs in zip(boxes.tolist(), scores.tolist(), landmarks.tolist(), attributes)
    )
    return FrameResult(width=width, height=height, faces=faces, orientation=orientation,
                       detection_size=detection_size)


def parse_face_attributes(outputs: Mapping[str, np.ndarray], count: int) -> list[FaceAttributes]:
    """``FaceAttributes`` per crop from the ``attributes`` model's outputs."""
    return [FaceAttributes(**row) for row in parse_attribute_rows(outputs, count)]


# ----------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------


def status_name(exc: Exception) -> str:
    """The gRPC status of a tritonclient exception without its prefix: "UNAVAILABLE",
    "DEADLINE_EXCEEDED", ... ("" when the client raised it itself)."""
    status = exc.status() if hasattr(exc, "status") else None
    return str(status or "").rsplit(".", 1)[-1].upper()


def _message(exc: Exception) -> str:
    message = exc.message() if hasattr(exc, "message") else None
    return str(message if message is not None else exc)


_MODEL_MISSING_MARKERS = ("unknown model", "is not ready", "not ready", "no available versions", "is not found")


def is_retryable(exc: Exception) -> bool:
    """Only an outage (gRPC UNAVAILABLE: nothing listening, server or model still
    loading) is worth retrying; bad inputs, timeouts and server errors are not."""
    return status_name(exc) == "UNAVAILABLE" and INVALID_INPUT_PREFIX not in _message(exc)


def map_error(exc: Exception, url: str | None = None, timeout: float | None = None) -> OmnifaceError:
    """The ``omniface.errors`` exception for a tritonclient ``InferenceServerException``."""
    if isinstance(exc, OmnifaceError):
        return exc
    status = status_name(exc)
    message = _message(exc)
    where = f" at {url}" if url else ""
    if INVALID_INPUT_PREFIX in message:
        detail = message.split(INVALID_INPUT_PREFIX, 1)[1].strip()
        return InvalidInput(f"the server refused the input: {detail}")
    if status == "DEADLINE_EXCEEDED":
        budget = f" within {timeout:g} s" if timeout else ""
        return Timeout(f"the server{where} did not answer{budget}; raise timeout= (CLI: --timeout) or lower the load")
    lowered = message.lower()
    if status == "NOT_FOUND" or any(marker in lowered for marker in _MODEL_MISSING_MARKERS):
        return ServerUnavailable(
            f"the server{where} answered but the omniface models are not available ({message}); "
            "serve the omniface model repository with `omniface serve`, or wait until its models are loaded"
        )
    if status == "UNAVAILABLE":
        return ServerUnavailable(f"no Triton server answered{where} ({message}); {SERVE_HINT}")
    if status == "INVALID_ARGUMENT":
        return InvalidInput(f"the server refused the request: {message}")
    if status == "UNAUTHENTICATED" or status == "PERMISSION_DENIED":
        return ServerError(f"the server{where} refused the credentials ({message}); check ssl / certificates")
    return ServerError(f"the server{where} failed: {exc}")
