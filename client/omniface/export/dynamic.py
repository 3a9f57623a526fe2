"""Graph surgery: give an exported detector graph a variable input height and width.

The detector graph exported before contract 1.1 takes UINT8 ``[N, 480, 640, 3]`` and
flattens each level's feature map with a ``Reshape`` to a constant shape such as
``[-1, 4800]`` (the cell count at 480x640 baked in as a Python int). Everything else in
it (convolutions, nearest x2 ``Resize`` by scales, concatenation) is size-agnostic, so
the graph becomes fully convolutional by

* declaring the input's height and width symbolic (``height``, ``width``),
* rewriting each head ``Reshape`` target ``[-1, cells, (k)]`` to ``[0, -1, (k)]``: keep
  the batch axis, let the cell count follow the input (the same result whenever axis 0
  is the batch, which it is for every head tensor),
* declaring the outputs' location axis symbolic (``locations``) and re-inferring the
  intermediate shapes.

Why surgery rather than a re-export: the committed graph's PyTorch checkpoint is not in
the repository. ``build/make_detector_dynamic.py`` runs this on the committed graph and
checks it against the static one; ``OmniFaceNet.detect`` now exports dynamic graphs
directly, so future exports need none of it. Only ``onnx`` is needed here.
"""

from __future__ import annotations

import copy

import numpy as np

from omniface import contract
from omniface.errors import require

onnx = require("onnx", "train")
numpy_helper = onnx.numpy_helper

HEIGHT_DIM = "height"
WIDTH_DIM = "width"
LOCATIONS_DIM = "locations"


def _constant_values(graph) -> dict[str, tuple[object, np.ndarray]]:
    """``{tensor name: (owner, value)}`` for Constant nodes and initializers."""
    values: dict[str, tuple[object, np.ndarray]] = {}
    for init in graph.initializer:
        values[init.name] = (init, numpy_helper.to_array(init))
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = (node, numpy_helper.to_array(node.attribute[0].t))
    return values


def _set_constant(owner, value: np.ndarray) -> None:
    """Overwrite a Constant node's value or an initializer in place."""
    if isinstance(owner, onnx.NodeProto):
        owner.attribute[0].t.CopyFrom(numpy_helper.from_array(value))
    else:
        owner.CopyFrom(numpy_helper.from_array(value, owner.name))


def _static_reshapes(graph) -> list[tuple[object, np.ndarray]]:
    """Reshape nodes whose target is a constant ``[-1, cells, ...]`` (cells > 0): the
    per-level flattening of the head, with the cell count baked in."""
    constants = _constant_values(graph)
    found = []
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        owner, value = constants[node.input[1]]
        if value.ndim == 1 and len(value) >= 2 and value[0] == -1 and value[1] > 0:
            found.append((owner, value))
    return found


def input_hw(model) -> tuple[int | str | None, int | str | None]:
    """The detector input's height and width: ints when fixed, names when symbolic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims[1:3])


def is_dynamic_hw(model) -> bool:
    """Whether the graph takes any height and width (symbolic input dims, no static head reshapes)."""
    return all(isinstance(d, str) for d in input_hw(model)) and not _static_reshapes(model.graph)


def make_dynamic_hw(model):
    """A copy of a static-size detector graph that takes ``[N, height, width, 3]`` and
    emits ``[N, locations, ...]``; see the module docstring. Raises ``ValueError`` when the
    graph is not the detector layout this knows (NHWC input, per-level head reshapes)."""
    model = copy.deepcopy(model)
    graph = model.graph
    if len(graph.input) != 1 or graph.input[0].name != contract.DETECTOR_IMAGE:
        raise ValueError(f"not a detector graph: inputs {[i.name for i in graph.input]}, expected [{contract.DETECTOR_IMAGE!r}]")
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[3].HasField("dim_value") or dims[3].dim_value != 3:
        raise ValueError(f"detector input must be [N, H, W, 3]; got {input_hw(model)}")
    reshapes = _static_reshapes(graph)
    expected = 3 * len(contract.DETECTOR_STRIDES)  # scores, boxes, landmarks per level
    if len(reshapes) != expected and not is_dynamic_hw(model):
        raise ValueError(f"expected {expected} static head reshapes (3 outputs x {len(contract.DETECTOR_STRIDES)} "
                         f"levels), found {len(reshapes)}: not the layout this surgery knows")
    for owner, value in reshapes:
        _set_constant(owner, np.array([0, -1, *value[2:]], dtype=value.dtype))
    for axis, name in ((1, HEIGHT_DIM), (2, WIDTH_DIM)):
        dims[axis].Clear()
        dims[axis].dim_param = name
    for out in graph.output:
        out_dims = out.type.tensor_type.shape.dim
        if len(out_dims) >= 2:
            out_dims[1].Clear()
            out_dims[1].dim_param = LOCATIONS_DIM
    del graph.value_info[:]  # the old intermediate shapes are all 480x640
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    del model.graph.value_info[:]  # keep the file as the exporter writes it: I/O shapes only
    onnx.checker.check_model(model, full_check=True)
    return model


def set_metadata(model, **entries: str) -> None:
    """Set (add or replace) ``metadata_props`` entries."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update(entries)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
