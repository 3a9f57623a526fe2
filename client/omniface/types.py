"""The SDK's result types: immutable, typed, JSON-ready.

Every coordinate is in the pixels of the frame the caller sent (the server maps its
letterboxed detections back), so a ``Box`` can index the caller's own array directly.
All instances are frozen dataclasses with ``__slots__``; mappings inside them are
read-only ``ScoreMap`` objects, so a result can be shared between threads, cached
and hashed. ``to_dict()`` gives plain ``float``/``int``/``str``/``list``/``dict``
values that ``json.dumps`` accepts as they are.

Attribute fields are ``None`` when the server's model does not carry the task (see
``omniface.contract.TASKS``: glasses and action units are not in the default model).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from omniface import contract

__all__ = ["Box", "Point", "HeadPose", "ScoreMap", "FaceAttributes", "Face", "FrameResult"]


class ScoreMap(Mapping[str, float]):
    """A read-only, hashable ``{label: score}`` mapping that keeps its label order.

    Compares equal to a ``dict`` with the same items."""

    __slots__ = ("_items", "_index")

    def __init__(self, items: Mapping[str, float] | Iterable[tuple[str, float]]) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: tuple[tuple[str, float], ...] = tuple((str(k), float(v)) for k, v in pairs)
        self._index: dict[str, float] = dict(self._items)

    def __getitem__(self, key: str) -> float:
        return self._index[key]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return "ScoreMap({" + ", ".join(f"{k!r}: {v:.4g}" for k, v in self._items) + "})"

    def __reduce__(self):
        return (ScoreMap, (self._items,))

    def top(self) -> tuple[str, float]:
        """The highest-scoring ``(label, score)``."""
        return max(self._items, key=lambda kv: kv[1])

    def to_dict(self) -> dict[str, float]:
        return dict(self._items)


@dataclass(frozen=True, slots=True)
class Point:
    """A pixel position in the original frame."""

    x: float
    y: float

    def to_dict(self) -> dict[str, float]:
        return {"x": self.x, "y": self.y}


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box ``(x1, y1)``-``(x2, y2)`` in original-frame pixels."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> Point:
        return Point((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def to_dict(self) -> dict[str, float]:
        return {"x1": self.x1, "y1": self.y1, "x2": self.x2, "y2": self.y2}


@dataclass(frozen=True, slots=True)
class HeadPose:
    """Head orientation in degrees (GENKI-4K convention: yaw > 0 turns to the subject's left)."""

    yaw: float
    pitch: float
    roll: float

    def to_dict(self) -> dict[str, float]:
        return {"yaw": self.yaw, "pitch": self.pitch, "roll": self.roll}


def _plain(value: Any) -> Any:
    """JSON-ready form of a field value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    raise TypeError(f"cannot serialise {type(value).__name__}")  # pragma: no cover - a bug


@dataclass(frozen=True, slots=True, kw_only=True)
class FaceAttributes:
    """What the attributes model says about one aligned face.

    - ``age`` / ``age_std``: years, the CORAL expectation and its standard deviation.
    - ``gender``: ``"male"`` or ``"female"``; ``gender_score`` is the confidence of the
      stated gender, ``max(p, 1 - p)`` with ``p = P(female)``.
    - ``expression``: the most likely of ``contract.EXPRESSIONS``;
      ``expression_scores`` holds the full softmax.
    - ``smile`` / ``glasses``: ``score >= 0.5``; ``smile_score`` / ``glasses_score`` are
      the probabilities ``P(smile)`` / ``P(glasses)``.
    - ``head_pose``: yaw, pitch, roll in degrees.
    - ``action_units``: ``{AU: P(active)}`` over ``contract.ACTION_UNITS``.
    """

    age: float | None = None
    age_std: float | None = None
    gender: str | None = None
    gender_score: float | None = None
    expression: str | None = None
    expression_scores: ScoreMap | None = None
    smile: bool | None = None
    smile_score: float | None = None
    head_pose: HeadPose | None = None
    glasses: bool | None = None
    glasses_score: float | None = None
    action_units: ScoreMap | None = None

    @property
    def expression_score(self) -> float | None:
        """Probability of the stated expression."""
        if self.expression is None or self.expression_scores is None:
            return None
        return self.expression_scores[self.expression]

    @property
    def attributes(self) -> FaceAttributes:
        """The attribute fields alone (for a ``Face``, without box, score and landmarks)."""
        if type(self) is FaceAttributes:
            return self
        return FaceAttributes(**{f.name: getattr(self, f.name) for f in fields(FaceAttributes)})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(FaceAttributes)}


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Face(FaceAttributes):
    """One detected face: where it is, how sure the detector is, its five landmarks (in
    ``contract.LANDMARK_NAMES`` order) and the ``FaceAttributes`` fields."""

    box: Box
    score: float
    landmarks: tuple[Point, ...]

    def __repr__(self) -> str:
        # Where first, then only the attributes the model produced.
        parts = [f"box={self.box!r}", f"score={self.score:.4g}", f"landmarks={self.landmarks!r}"]
        for f in fields(FaceAttributes):
            value = getattr(self, f.name)
            if value is not None:
                parts.append(f"{f.name}={value:.4g}" if isinstance(value, float) else f"{f.name}={value!r}")
        return "Face(" + ", ".join(parts) + ")"

    def landmark(self, name: str) -> Point:
        """A landmark by name (``"left_eye"``, ``"nose"``, ...)."""
        return self.landmarks[contract.LANDMARK_NAMES.index(name)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.box.to_dict(),
            "score": self.score,
            "landmarks": {name: [p.x, p.y] for name, p in zip(contract.LANDMARK_NAMES, self.landmarks)},
            **FaceAttributes.to_dict(self),
        }


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Everything found in one frame.

    ``width`` x ``height`` is the frame the coordinates refer to: the caller's array, or
    for an encoded image the upright picture a viewer shows, i.e. after its EXIF
    ``orientation`` (1-8, 1 = stored upright) was applied; a phone portrait stored
    sideways with orientation 6 or 8 is reported portrait, boxes and landmarks in it.
    ``detection_size`` is the ``(width, height)`` canvas the detector ran on (the frame
    resized to ``det_size`` and padded to multiples of 32). Both are None from a server of
    contract 1.0, which does not report them."""

    width: int
    height: int
    faces: tuple[Face, ...] = ()
    orientation: int | None = None
    detection_size: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "orientation": self.orientation,
                "detection_size": None if self.detection_size is None else list(self.detection_size),
                "faces": [f.to_dict() for f in self.faces]}
