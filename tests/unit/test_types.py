"""Result types: immutable, hashable, JSON-ready; and a light ``import omniface``."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

import omniface
from omniface import contract
from omniface.types import Box, Face, FaceAttributes, FrameResult, HeadPose, Point, ScoreMap


def make_face(**overrides) -> Face:
    values = dict(
        box=Box(10.0, 20.0, 110.0, 140.0),
        score=0.97,
        landmarks=tuple(Point(30.0 + 10 * i, 60.0 + i) for i in range(contract.NUM_LANDMARKS)),
        age=31.4,
        age_std=4.2,
        gender="female",
        gender_score=0.91,
        expression="happy",
        expression_scores=ScoreMap({e: (0.94 if e == "happy" else 0.01) for e in contract.EXPRESSIONS}),
        smile=True,
        smile_score=0.88,
        head_pose=HeadPose(12.0, -3.0, 1.5),
    )
    values.update(overrides)
    return Face(**values)


def test_box_geometry() -> None:
    box = Box(10.0, 20.0, 110.0, 140.0)
    assert (box.width, box.height, box.area) == (100.0, 120.0, 12000.0)
    assert box.center == Point(60.0, 80.0)
    assert box.as_tuple() == (10.0, 20.0, 110.0, 140.0)


@pytest.mark.parametrize(
    "obj, field",
    [
        (Box(0, 0, 1, 1), "x1"),
        (Point(1, 2), "x"),
        (HeadPose(1, 2, 3), "yaw"),
        (FaceAttributes(age=3.0), "age"),
        (make_face(), "score"),
        (make_face(), "age"),
        (FrameResult(10, 10, ()), "faces"),
    ],
)
def test_everything_is_frozen(obj, field: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, 5)
    with pytest.raises((AttributeError, TypeError)):
        obj.new_attribute = 1  # slots: no stray attributes either


def test_score_maps_are_read_only_and_hashable() -> None:
    scores = ScoreMap([("a", 0.25), ("b", 0.75)])
    assert scores == {"a": 0.25, "b": 0.75} and list(scores) == ["a", "b"]
    assert scores.top() == ("b", 0.75)
    with pytest.raises(TypeError):
        scores["a"] = 1.0  # type: ignore[index]
    assert hash(scores) == hash(ScoreMap({"a": 0.25, "b": 0.75}))
    assert pickle.loads(pickle.dumps(scores)) == scores
    face = make_face()
    assert hash(face) == hash(make_face())  # usable as a dict key / in sets
    assert pickle.loads(pickle.dumps(face)) == face


def test_face_shares_the_attribute_fields() -> None:
    face = make_face()
    attribute_fields = [f.name for f in dataclasses.fields(FaceAttributes)]
    assert set(attribute_fields) < {f.name for f in dataclasses.fields(Face)}
    assert isinstance(face, FaceAttributes)
    attributes = face.attributes
    assert type(attributes) is FaceAttributes
    assert all(getattr(attributes, n) == getattr(face, n) for n in attribute_fields)
    assert face.expression_score == pytest.approx(0.94)
    assert face.landmark("right_eye") == face.landmarks[1]
    assert FaceAttributes().expression_score is None
    with pytest.raises(TypeError):
        Face(Box(0, 0, 1, 1), 0.5, ())  # keyword-only: no positional mix-ups


def test_to_dict_is_json_serialisable() -> None:
    result = FrameResult(width=640, height=480, faces=(
        make_face(),
        make_face(age=None, age_std=None, gender=None, gender_score=None, expression=None,
                  expression_scores=None, smile=None, smile_score=None, head_pose=None),
        make_face(glasses=False, glasses_score=0.1,
                  action_units=ScoreMap({au: 0.5 for au in contract.ACTION_UNITS})),
    ))
    data = result.to_dict()
    decoded = json.loads(json.dumps(data))
    assert decoded == data
    assert (decoded["width"], decoded["height"], len(decoded["faces"])) == (640, 480, 3)
    first = decoded["faces"][0]
    assert first["box"] == {"x1": 10.0, "y1": 20.0, "x2": 110.0, "y2": 140.0}
    assert list(first["landmarks"]) == list(contract.LANDMARK_NAMES)
    assert first["landmarks"]["left_eye"] == [30.0, 60.0]
    assert first["head_pose"] == {"yaw": 12.0, "pitch": -3.0, "roll": 1.5}
    assert first["expression_scores"]["happy"] == 0.94
    assert decoded["faces"][1]["age"] is None and decoded["faces"][1]["head_pose"] is None
    assert decoded["faces"][2]["action_units"]["AU12"] == 0.5
    assert json.loads(json.dumps(FaceAttributes(age=3.0).to_dict()))["age"] == 3.0


def test_repr_leads_with_the_box_and_skips_missing_attributes() -> None:
    text = repr(make_face(glasses=None))
    assert text.startswith("Face(box=Box(") and "age=31.4" in text and "glasses" not in text


def test_public_api_is_exported_lazily() -> None:
    for name in ("Client", "AsyncClient", "FrameResult", "Face", "FaceAttributes", "Box", "Point", "HeadPose",
                 "InvalidInput", "ServerUnavailable", "Timeout", "ContractMismatch", "ServerError", "annotate"):
        assert name in omniface.__all__ and getattr(omniface, name) is not None
    assert omniface.__version__ == "0.1.0"
    assert omniface.CONTRACT_VERSION == contract.CONTRACT_VERSION
    with pytest.raises(AttributeError):
        omniface.no_such_thing  # noqa: B018


def test_import_omniface_stays_light() -> None:
    code = ("import sys, omniface; heavy = [m for m in ('numpy', 'grpc', 'tritonclient', 'PIL') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_numpy_scalars_do_not_leak_into_json() -> None:
    face = make_face(score=float(np.float32(0.5)))
    assert json.dumps(face.to_dict())
