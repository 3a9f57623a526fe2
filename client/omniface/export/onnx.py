"""Export ``OmniFaceNet`` to the two ONNX graphs the repository serves, and check them.

* ``detector``: UINT8 ``[N, H, W, 3]`` RGB (any H, W multiples of 32) -> sigmoid scores,
  box distances and landmark offsets for ``L(H, W)`` locations (``contract.MODELS["detector"]``).
* ``attributes``: UINT8 ``[N, 112, 112, 3]`` RGB aligned crops -> one tensor per task
  output (``contract.attribute_outputs(tasks)``).

Both graphs normalise inside: cast to float, ``(x - PIXEL_MEAN) * PIXEL_SCALE``,
NHWC -> NCHW. Names, dtypes and shapes come from ``omniface.contract`` and are verified
after export by ``check_against_contract``; ``parity`` compares ONNX Runtime with PyTorch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from omniface import contract
from omniface.errors import ContractMismatch, require
from omniface.runtime import make_session, time_session

torch = require("torch", "train")
onnx = require("onnx", "train")
np = require("numpy", "train")

from omniface.nn.model import OmniFaceNet, coral_age  # noqa: E402  (after the torch check)

OPSET = 17
BATCH_DIM = "batch"
SPATIAL_DIMS = ("height", "width")
LOCATIONS_DIM = "locations"

ONNX_DTYPES: dict[str, int] = {
    "UINT8": onnx.TensorProto.UINT8,
    "INT32": onnx.TensorProto.INT32,
    "INT64": onnx.TensorProto.INT64,
    "FP16": onnx.TensorProto.FLOAT16,
    "FP32": onnx.TensorProto.FLOAT,
    "BYTES": onnx.TensorProto.STRING,
}
"""Contract (Triton) datatype -> ONNX element type."""


def _normalise(images):
    """UINT8 NHWC RGB -> normalised float NCHW (transposed while still 1 byte/elem)."""
    x = images.permute(0, 3, 1, 2).to(torch.float32)
    return (x - contract.PIXEL_MEAN) * contract.PIXEL_SCALE


class DetectorGraph(torch.nn.Module):
    """What the detector graph computes: uint8 frames -> (scores, boxes, landmarks)."""

    def __init__(self, net: OmniFaceNet):
        super().__init__()
        self.net = net

    def forward(self, image):
        out = self.net.detect(_normalise(image))
        return torch.sigmoid(out["score_logits"]), out["boxes"], out["landmarks"]


class AttributesGraph(torch.nn.Module):
    """What the attributes graph computes: uint8 crops -> the contract's attribute
    outputs, in ``contract.attribute_outputs(net.tasks)`` order."""

    def __init__(self, net: OmniFaceNet):
        super().__init__()
        self.net = net
        self.output_names = tuple(t.name for t in contract.attribute_outputs(net.tasks))

    def forward(self, crops):
        return decode_attributes(self.net.attributes(_normalise(crops)), self.output_names)


def decode_attributes(raw: dict, output_names) -> tuple:
    """The heads' raw outputs (``OmniFaceNet.read_heads``) -> the contract's attribute
    outputs named ``output_names``, as the attributes graph computes them."""
    out = {}
    if "age_logits" in raw:
        age, age_std = coral_age(raw["age_logits"])
        out[contract.AGE] = age.unsqueeze(1)
        out[contract.AGE_STD] = age_std.unsqueeze(1)
    if "gender_logit" in raw:
        out[contract.GENDER] = torch.sigmoid(raw["gender_logit"]).unsqueeze(1)
    if "expression_logits" in raw:
        out[contract.EXPRESSION] = torch.softmax(raw["expression_logits"], dim=1)
    if "smile_logit" in raw:
        out[contract.SMILE] = torch.sigmoid(raw["smile_logit"]).unsqueeze(1)
    if "head_pose" in raw:
        out[contract.HEAD_POSE] = raw["head_pose"]
    if "glasses_logit" in raw:
        out[contract.GLASSES] = torch.sigmoid(raw["glasses_logit"]).unsqueeze(1)
    if "au_logits" in raw:
        out[contract.ACTION_UNIT_PROBS] = torch.sigmoid(raw["au_logits"])
    return tuple(out[name] for name in output_names)


def graph_for(net: OmniFaceNet, model_name: str) -> torch.nn.Module:
    """The wrapper module whose forward is the named graph (``detector`` or ``attributes``)."""
    if model_name == contract.DETECTOR:
        return DetectorGraph(net)
    if model_name == contract.ATTRIBUTES:
        return AttributesGraph(net)
    raise ValueError(f"no ONNX graph for model {model_name!r}; expected {contract.DETECTOR!r} or {contract.ATTRIBUTES!r}")


def _example_input(spec: contract.ModelSpec, batch: int = 2):
    """Random uint8 input; variable (-1) frame dims take the training canvas's size."""
    (tensor,) = spec.inputs
    frame = iter((contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH))
    dims = tuple(next(frame) if d == -1 else d for d in tensor.dims)
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, *dims), dtype=torch.uint8, generator=gen)


def _dynamic_axes(spec: contract.ModelSpec) -> dict[str, dict[int, str]]:
    """The batch axis of every tensor, and each variable (-1) contract dim: the frame's
    height and width on the input, the location count on the outputs."""
    axes: dict[str, dict[int, str]] = {}
    for tensors, names in ((spec.inputs, SPATIAL_DIMS), (spec.outputs, (LOCATIONS_DIM,))):
        for tensor in tensors:
            variable = [axis for axis, d in enumerate(tensor.dims, start=1) if d == -1]
            axes[tensor.name] = {0: BATCH_DIM, **{axis: names[min(i, len(names) - 1)] for i, axis in enumerate(variable)}}
    return axes


def _declare_output_shapes(model, dynamic_axes: dict[str, dict[int, str]]):
    """Replace the exporter's declared output shapes with ONNX shape inference's.

    The TorchScript exporter loses static dims after a Resize with a dynamic batch and
    declares e.g. ``['batch', 'Concatboxes_dim_1', ...]``; ONNX's own shape inference
    recovers the real ones. The axes exported as dynamic keep their names (``batch``,
    ``locations``). Nothing is copied from the contract: ``check_against_contract``
    verifies the result."""
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    del model.graph.value_info[:]
    # data_prop: the head's reshape targets are computed from the input's shape (batch and
    # location count vary); propagating the constant parts keeps their last dims static.
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    by_name = {v.name: v for v in inferred.graph.output}
    for out in model.graph.output:
        shape = by_name[out.name].type.tensor_type.shape
        out.type.tensor_type.shape.CopyFrom(shape)
        dims = out.type.tensor_type.shape.dim
        for axis, name in dynamic_axes.get(out.name, {}).items():
            if axis < len(dims):
                dims[axis].Clear()
                dims[axis].dim_param = name
    return model


def export_graph(net: OmniFaceNet, model_name: str, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Export one graph of ``net`` to ``path`` with the contract's tensor names and a
    dynamic batch axis, then run the ONNX checker and ``check_against_contract``."""
    spec = contract.build_models(net.tasks)[model_name]
    wrapper = graph_for(net, model_name)
    input_names = [t.name for t in spec.inputs]
    output_names = [t.name for t in spec.outputs]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript-exporter deprecation / tracer chatter
            torch.onnx.export(
                wrapper,
                (_example_input(spec),),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=_dynamic_axes(spec),
                do_constant_folding=True,
                export_params=True,
            )
    finally:
        net.train(was_training)

    model = _declare_output_shapes(onnx.load(str(path)), _dynamic_axes(spec))
    model.doc_string = spec.description
    model.producer_name = "omniface"
    meta = {
        contract.CONTRACT_VERSION_PARAMETER: contract.CONTRACT_VERSION,
        "tasks": ",".join(net.tasks),
        "width": str(net.width),
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    check_against_contract(path, spec)
    return path


def export_all(net: OmniFaceNet, out_dir: str | os.PathLike, version: int = 1) -> dict[str, Path]:
    """Write ``<out_dir>/detector/<version>/model.onnx`` and
    ``<out_dir>/attributes/<version>/model.onnx``; returns their paths by model name."""
    out_dir = Path(out_dir)
    return {
        name: export_graph(net, name, out_dir / name / str(version) / "model.onnx")
        for name in (contract.DETECTOR, contract.ATTRIBUTES)
    }


# --------------------------------------------------------------------------------------
# Verification.
# --------------------------------------------------------------------------------------


def _dims(value_info) -> list[int | str | None]:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def _check_tensors(kind: str, actual, expected, batched: bool, problems: list[str]) -> None:
    names = [v.name for v in actual]
    want = [t.name for t in expected]
    if names != want:
        problems.append(f"{kind} names are {names}, the contract says {want}")
    by_name = {v.name: v for v in actual}
    for spec in expected:
        value = by_name.get(spec.name)
        if value is None:
            continue
        elem = value.type.tensor_type.elem_type
        if elem != ONNX_DTYPES[spec.dtype]:
            problems.append(
                f"{kind} {spec.name!r} has dtype {onnx.TensorProto.DataType.Name(elem)}, the contract says {spec.dtype}"
            )
        dims = _dims(value)
        want_dims = ([BATCH_DIM] if batched else []) + list(spec.dims)
        if len(dims) != len(want_dims):
            problems.append(f"{kind} {spec.name!r} has shape {dims}, the contract says {want_dims}")
            continue
        if batched and isinstance(dims[0], int):
            problems.append(f"{kind} {spec.name!r} has a fixed batch dimension {dims[0]}, the contract needs a dynamic one")
        for axis, (got, exp) in enumerate(zip(dims[batched:], spec.dims), start=int(batched)):
            if exp != -1 and got != exp:
                problems.append(f"{kind} {spec.name!r} dim {axis} is {got}, the contract says {exp} (shape {dims})")
            elif exp == -1 and isinstance(got, int):
                problems.append(f"{kind} {spec.name!r} dim {axis} is fixed at {got}, the contract needs a variable "
                                f"size (shape {dims}); a detector exported before contract 1.1: "
                                "python build/make_detector_dynamic.py")


def check_against_contract(onnx_path: str | os.PathLike, model_spec: contract.ModelSpec) -> None:
    """Raise ``ContractMismatch`` listing every difference between the ONNX graph's
    inputs/outputs (names, order, dtypes, dims after the batch axis, dynamic batch)
    and ``model_spec``; return None when they agree."""
    path = Path(onnx_path)
    if not path.is_file():
        raise ContractMismatch(f"{path}: no such ONNX file; export it with build/export_onnx.py")
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    problems: list[str] = []
    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != OPSET:
        problems.append(f"default-domain opset is {opsets.get('')}, expected {OPSET}")
    batched = model_spec.max_batch_size > 0
    _check_tensors("input", inputs, model_spec.inputs, batched, problems)
    _check_tensors("output", list(graph.output), model_spec.outputs, batched, problems)
    if problems:
        raise ContractMismatch(
            f"{path} does not match contract model {model_spec.name!r} (contract {contract.CONTRACT_VERSION}):\n  - "
            + "\n  - ".join(problems)
            + "\nRe-export it with build/export_onnx.py, or bump the contract if the change is intended."
        )


def parity_report(net: OmniFaceNet, onnx_path: str | os.PathLike, images, threads: int = 2) -> dict[str, float]:
    """Max |ONNX Runtime - PyTorch| per output name, on UINT8 NHWC ``images`` (frames
    for the detector graph, crops for the attributes graph), PyTorch in eval mode."""
    session = make_session(onnx_path, threads=threads)
    (inp,) = session.get_inputs()
    if inp.name == contract.DETECTOR_IMAGE:
        model_name = contract.DETECTOR
    elif inp.name == contract.CROPS:
        model_name = contract.ATTRIBUTES
    else:
        raise ValueError(f"{onnx_path}: unknown graph input {inp.name!r}")
    images = np.ascontiguousarray(images, dtype=np.uint8)
    names = [o.name for o in session.get_outputs()]
    got = session.run(names, {inp.name: images})

    wrapper = graph_for(net, model_name)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            ref = wrapper(torch.from_numpy(images.copy()))
    finally:
        net.train(was_training)
    if model_name == contract.DETECTOR:
        ref_names = [contract.DETECTOR_SCORES, contract.DETECTOR_BOXES, contract.DETECTOR_LANDMARKS]
    else:
        ref_names = list(wrapper.output_names)
    ref_by_name = dict(zip(ref_names, ref))
    report = {}
    for name, value in zip(names, got):
        expected = ref_by_name[name].numpy()
        if value.shape != expected.shape:
            raise ContractMismatch(f"{onnx_path}: output {name!r} has shape {value.shape}, PyTorch gives {expected.shape}")
        report[name] = float(np.max(np.abs(value.astype(np.float64) - expected))) if value.size else 0.0
    return report


def parity(net: OmniFaceNet, onnx_path: str | os.PathLike, images, threads: int = 2) -> float:
    """Largest |ONNX Runtime - PyTorch| over all outputs (see ``parity_report``)."""
    return max(parity_report(net, onnx_path, images, threads).values())


def benchmark(onnx_path: str | os.PathLike, batch: int = 1, threads: int = 2, warmup: int = 5, runs: int = 30) -> dict:
    """Latency of one ``session.run`` on random UINT8 input of ``batch`` rows:
    ``{"median_ms", "p90_ms", "min_ms", "per_item_ms"}`` (per_item = median / batch)."""
    session = make_session(onnx_path, threads=threads)
    (inp,) = session.get_inputs()
    shape = [batch, *inp.shape[1:]]
    x = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    timing = time_session(session, {inp.name: x}, runs=runs, warmup=warmup)
    return {**timing, "per_item_ms": timing["median_ms"] / batch}
