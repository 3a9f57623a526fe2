"""perf_analyzer input-data JSON from real images, derived from the tensor contract.

perf_analyzer reads ``{"data": [step, step, ...]}`` and cycles through the steps, one
per request. Each step maps the ensemble's input names to a tensor: here always
``{"b64": ..., "shape": [...]}``, base64 of the tensor's raw content:

- ``encoded``: ``IMAGE_BYTES``, BYTES ``[1]``: Triton's serialised string tensor, a
  4-byte little-endian length and then the encoded file (JPEG by default);
- ``raw``: ``IMAGE_RAW``, UINT8 ``[H, W, 3]`` RGB, row-major;
- and, when given, per-request detection settings (``contract.DETECTION_SETTINGS``, e.g.
  ``det_size``), each its ``[1]`` optional input.

Names, dtypes and shapes come from ``contract.MODELS[FACE_ANALYSIS]`` and every tensor
is checked against its spec, so the files cannot drift from what the server declares.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from omniface import contract

InputKind = Literal["encoded", "raw"]
INPUT_KINDS: tuple[str, ...] = ("encoded", "raw")
KIND_TENSOR: dict[str, str] = {"encoded": contract.IMAGE_BYTES, "raw": contract.IMAGE_RAW}


@dataclass(frozen=True)
class BenchImage:
    """One real image: its RGB pixels and its encoded bytes (the same picture)."""

    name: str
    pixels: np.ndarray
    encoded: bytes

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)


def encode(pixels: np.ndarray, image_format: str = "JPEG", quality: int = 90) -> bytes:
    """Encode an RGB uint8 array (JPEG quality ``quality`` by default; PNG, WebP, BMP too)."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {"quality": quality} if image_format.upper() in ("JPEG", "WEBP") else {}
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").save(buffer, format=image_format.upper(), **options)
    return buffer.getvalue()


def from_pixels(name: str, pixels: np.ndarray, image_format: str = "JPEG", quality: int = 90) -> BenchImage:
    """A ``BenchImage`` from pixels; ``pixels`` become what the server decodes from the
    encoded bytes, so raw and encoded requests carry the very same picture."""
    from omniface.processing.image import decode_image

    data = encode(pixels, image_format, quality)
    return BenchImage(name, decode_image(data), data)


def from_file(path: str | Path) -> BenchImage:
    """A ``BenchImage`` from an image file: its bytes as they are, pixels decoded by the
    server's own decoder (EXIF orientation applied)."""
    from omniface.processing.image import decode_image

    data = Path(path).read_bytes()
    return BenchImage(Path(path).stem, decode_image(data), data)


def sample_images(names: Sequence[str] | None = None, image_format: str = "JPEG") -> list[BenchImage]:
    """The project's sample frames (public domain, from scikit-image), by name:
    ``astronaut`` (one face), ``group_of_6``, ``crowd_20`` (20 faces, 960x776),
    ``crowd_20_large`` (the same at 1920x1552) and ``coffee_no_face``."""
    from omniface import samples

    makers = {
        "astronaut": samples.astronaut,
        "group_of_6": lambda: samples.face_grid(6, tile=200),
        "crowd_20": lambda: samples.face_grid(20),
        "crowd_20_large": lambda: samples.face_grid(20, tile=320),  # 1920x1552: native is the 1920 cap
        "coffee_no_face": samples.no_face,
    }
    chosen = list(makers) if names is None else list(names)
    unknown = [n for n in chosen if n not in makers]
    if unknown:
        raise KeyError(f"unknown sample images {unknown}; known: {list(makers)}")
    return [from_pixels(n, makers[n](), image_format) for n in chosen]


def serialize_bytes_tensor(items: Sequence[bytes]) -> bytes:
    """Triton's wire form of a BYTES tensor: per element, uint32 LE length + bytes."""
    return b"".join(struct.pack("<I", len(item)) + bytes(item) for item in items)


def _check(spec: contract.TensorSpec, shape: Sequence[int], dtype: str) -> None:
    if spec.dtype != dtype:
        raise ValueError(f"{spec.name}: the contract says {spec.dtype}, this writer produces {dtype}")
    if len(shape) != len(spec.dims) or any(d != -1 and d != s for d, s in zip(spec.dims, shape)):
        raise ValueError(f"{spec.name}: shape {list(shape)} does not fit the contract's dims {list(spec.dims)}")


def setting_entries(settings: Mapping[str, float] | None, models: Mapping[str, contract.ModelSpec] | None = None) -> dict:
    """perf_analyzer tensors of per-request settings (``{name: value}``), dtype and shape
    from the ensemble's declaration; an unknown name or a bad value raises."""
    ensemble = (contract.MODELS if models is None else models)[contract.FACE_ANALYSIS]
    entries = {}
    for name, value in (settings or {}).items():
        spec = ensemble.input(name)  # KeyError: not an input of this ensemble
        problem = contract.SETTINGS_BY_NAME[name].problem(float(value))
        if problem:
            raise ValueError(problem)
        array = np.array([value], dtype=contract.NUMPY_DTYPES[spec.dtype])
        _check(spec, list(array.shape), spec.dtype)
        entries[name] = {"b64": base64.b64encode(array.tobytes()).decode("ascii"), "shape": list(array.shape)}
    return entries


def tensor_entry(image: BenchImage, kind: InputKind, models: Mapping[str, contract.ModelSpec] | None = None,
                 settings: Mapping[str, float] | None = None) -> dict:
    """One perf_analyzer step: ``{tensor name: {"b64": ..., "shape": [...]}}``, the frame
    and the ``settings`` given."""
    models = contract.MODELS if models is None else models
    ensemble = models[contract.FACE_ANALYSIS]
    if kind == "encoded":
        spec = ensemble.input(contract.IMAGE_BYTES)
        shape = [1]
        _check(spec, shape, "BYTES")
        content = serialize_bytes_tensor([image.encoded])
    elif kind == "raw":
        spec = ensemble.input(contract.IMAGE_RAW)
        pixels = np.ascontiguousarray(image.pixels, dtype=np.uint8)
        shape = list(pixels.shape)
        _check(spec, shape, "UINT8")
        content = pixels.tobytes()
    else:
        raise ValueError(f"input kind must be one of {INPUT_KINDS}, got {kind!r}")
    return {spec.name: {"b64": base64.b64encode(content).decode("ascii"), "shape": shape},
            **setting_entries(settings, models)}


def input_data(images: Sequence[BenchImage], kind: InputKind, models: Mapping[str, contract.ModelSpec] | None = None,
               settings: Mapping[str, float] | None = None) -> dict:
    """The whole input-data document: one step per image, cycled by perf_analyzer."""
    if not images:
        raise ValueError("no images to write")
    return {"data": [tensor_entry(image, kind, models, settings) for image in images]}


def write_input_data(path: str | Path, images: Sequence[BenchImage], kind: InputKind,
                     models: Mapping[str, contract.ModelSpec] | None = None,
                     settings: Mapping[str, float] | None = None) -> Path:
    """Write the input-data JSON for ``images`` as ``kind`` tensors (and ``settings``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(input_data(images, kind, models, settings)))
    return path


def pipeline_inputs(image: BenchImage, kind: InputKind, settings: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
    """The same request as ``tensor_entry`` for ``LocalPipeline.run`` (the in-process path)."""
    extra = {name: np.array([value], dtype=contract.NUMPY_DTYPES[contract.SETTINGS_BY_NAME[name].dtype])
             for name, value in (settings or {}).items()}
    if kind == "encoded":
        return {contract.IMAGE_BYTES: np.array([image.encoded], dtype=np.object_), **extra}
    if kind == "raw":
        return {contract.IMAGE_RAW: np.ascontiguousarray(image.pixels, dtype=np.uint8), **extra}
    raise ValueError(f"input kind must be one of {INPUT_KINDS}, got {kind!r}")
