"""TensorRT optimization profiles, derived from the contract.

A TensorRT engine with a dynamic batch axis serves only the shapes its optimization
profile covers, and Triton refuses to load a ``tensorrt_plan`` whose profile does not
reach the config's ``max_batch_size``. So both are computed here from the same
``ModelSpec``: the GPU repository's configs (``omniface.repository``) and the engines
(``omniface.engines.build``) cannot disagree.

* ``detector``: 1..``DETECTOR_MAX_BATCH`` frames of any height and width from
  ``DETECTOR_MIN_SIDE`` to ``DETECTOR_MAX_SIDE`` (the image tensor's ``sizes`` in the
  contract), tuned (``opt``) for a full batch of 4:3 frames at the default ``det_size``
  (``DETECTOR_OPT_SIZE``), which is what the dynamic batcher forms under load;
* ``attributes``: 1..``ATTRIBUTES_MAX_BATCH`` aligned crops, tuned for the face cap
  (``max_faces`` of postprocess: the largest batch one frame sends). The cap must fit
  in the profile, or a crowded frame would be refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from omniface import contract
from omniface.contract import ModelSpec

ENGINE_MODELS: tuple[str, ...] = (contract.DETECTOR, contract.ATTRIBUTES)
"""The repository's models that become TensorRT engines on the GPU target."""


@dataclass(frozen=True)
class InputProfile:
    """min/opt/max shapes of one engine input, batch axis included."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Mapping) -> InputProfile:
        return cls(str(data["name"]), tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))


@dataclass(frozen=True)
class EngineProfile:
    """The single optimization profile of one model's engine."""

    model: str
    inputs: tuple[InputProfile, ...]

    @property
    def max_batch(self) -> int:
        return min(p.max[0] for p in self.inputs)

    @property
    def opt_batch(self) -> int:
        return min(p.opt[0] for p in self.inputs)

    def to_dict(self) -> dict:
        return {"model": self.model, "inputs": [p.to_dict() for p in self.inputs]}

    @classmethod
    def from_dict(cls, data: Mapping) -> EngineProfile:
        return cls(str(data["model"]), tuple(InputProfile.from_dict(p) for p in data["inputs"]))


def face_cap(models: Mapping[str, ModelSpec]) -> int:
    """``max_faces`` as the postprocess step is configured (the rows one frame sends)."""
    post = models.get(contract.POSTPROCESS)
    if post is None:
        return contract.MAX_FACES_DEFAULT
    return int(float(post.parameters.get("max_faces", contract.MAX_FACES_DEFAULT)))


def engine_profile(spec: ModelSpec, opt_batch: int | None = None) -> EngineProfile:
    """The profile of one batching model: batch 1..``max_batch_size``, each variable dim
    over the (min, opt, max) the contract declares for it (``TensorSpec.sizes``), the
    static dims as they are, tuned for ``opt_batch`` (default: ``max_batch_size``)."""
    if spec.max_batch_size <= 0:
        raise ValueError(f"model {spec.name!r} does not batch (max_batch_size 0); it cannot get a batch profile")
    top = spec.max_batch_size
    opt = top if opt_batch is None else int(opt_batch)
    if not 1 <= opt <= top:
        raise ValueError(f"{spec.name}: opt batch {opt} is outside 1..{top} (the contract's max_batch_size)")
    inputs = []
    for tensor in spec.inputs:
        variable = sum(d < 0 for d in tensor.dims)
        if variable != len(tensor.sizes):
            raise ValueError(
                f"{spec.name}.{tensor.name} has variable dims {tensor.dims} but the contract declares "
                f"(min, opt, max) sizes for {len(tensor.sizes)} of them (TensorSpec.sizes): an engine needs a range "
                "for each"
            )
        shapes = []
        for which in range(3):  # min, opt, max
            ranges = iter(tensor.sizes)
            shapes.append(tuple(next(ranges)[which] if d < 0 else d for d in tensor.dims))
        inputs.append(InputProfile(tensor.name, (1, *shapes[0]), (opt, *shapes[1]), (top, *shapes[2])))
    return EngineProfile(spec.name, tuple(inputs))


def engine_profiles(
    models: Mapping[str, ModelSpec] | None = None,
    opt_batches: Mapping[str, int] | None = None,
) -> dict[str, EngineProfile]:
    """Profiles of the detector and attributes engines for a repository's models.

    Raises ``ValueError`` when the face cap exceeds the attributes' max batch: one
    frame's crops would not fit in the engine."""
    models = contract.MODELS if models is None else models
    opt_batches = dict(opt_batches or {})
    cap = face_cap(models)
    attributes = models[contract.ATTRIBUTES]
    if cap > attributes.max_batch_size:
        raise ValueError(
            f"postprocess max_faces={cap} exceeds the attributes max batch {attributes.max_batch_size}: "
            "one frame's crops would not fit in the engine; lower max_faces or raise ATTRIBUTES_MAX_BATCH"
        )
    opt_batches.setdefault(contract.ATTRIBUTES, max(1, cap))
    return {name: engine_profile(models[name], opt_batches.get(name)) for name in ENGINE_MODELS}
