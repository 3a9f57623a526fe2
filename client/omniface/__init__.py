"""omniface: multi-task face analysis served on NVIDIA Triton.

The base install is the SDK: ``Client`` / ``AsyncClient`` send frames to a Triton server
running the omniface model repository and return typed, per-face results. Heavy parts
(torch, onnxruntime, the embedded server) live in extras and are imported lazily.

>>> import omniface
>>> with omniface.Client("127.0.0.1:8001") as client:
...     for face in client.analyze("photo.jpg").faces:
...         print(face.box, face.age, face.gender, face.expression)

The public names below are imported on first access, so ``import omniface`` stays
light (no gRPC, no numpy) until the SDK is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # clients
    "Client": "omniface.client",
    "AsyncClient": "omniface.aio",
    # results
    "FrameResult": "omniface.types",
    "Face": "omniface.types",
    "FaceAttributes": "omniface.types",
    "Box": "omniface.types",
    "Point": "omniface.types",
    "HeadPose": "omniface.types",
    "ScoreMap": "omniface.types",
    # errors
    "OmnifaceError": "omniface.errors",
    "InvalidInput": "omniface.errors",
    "ServerUnavailable": "omniface.errors",
    "Timeout": "omniface.errors",
    "ContractMismatch": "omniface.errors",
    "ServerError": "omniface.errors",
    "MissingDependency": "omniface.errors",
    # drawing
    "annotate": "omniface.visualize",
    # the contract version this SDK speaks
    "CONTRACT_VERSION": "omniface.contract",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from omniface.aio import AsyncClient
    from omniface.client import Client
    from omniface.contract import CONTRACT_VERSION
    from omniface.errors import (
        ContractMismatch,
        InvalidInput,
        MissingDependency,
        OmnifaceError,
        ServerError,
        ServerUnavailable,
        Timeout,
    )
    from omniface.types import Box, Face, FaceAttributes, FrameResult, HeadPose, Point, ScoreMap
    from omniface.visualize import annotate


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'omniface' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
