"""Which ONNX graph an engine is built from, per precision.

TensorRT builds *strongly typed* networks here: every tensor keeps the type the ONNX
graph gives it, and the builder flags that let TensorRT pick precisions itself
(``BuilderFlag.FP16``/``INT8``, deprecated in TensorRT 10 and gone in 11) are never
used. So the precision is chosen in the graph:

* ``fp32``: the exported ``model.onnx`` as it is;
* ``fp16``: ``model.onnx`` with weights and activations converted to float16 by ONNX
  Runtime's converter (``keep_io_types``: the UINT8 input and the FP32 outputs of the
  contract are kept; a few numerically delicate ops stay FP32 behind casts);
* ``int8``: the Q/DQ graph from ``omniface.quantize`` (explicit quantization,
  calibrated on real faces); tensors between Q/DQ pairs are INT8, the rest FP32.

The fp16 conversion is plain ONNX work: it runs, and is tested, without a GPU.
"""

from __future__ import annotations

import heapq
import os
from pathlib import Path

from omniface import contract
from omniface.errors import ContractMismatch, require

PRECISIONS: tuple[str, ...] = ("fp16", "fp32", "int8")
DEFAULT_PRECISION = "fp16"

QDQ_FILENAME = "model.qdq.onnx"
"""Where ``build/quantize.py`` writes a graph's Q/DQ variant (in its version folder)."""

DEFAULT_QDQ_DIR = Path("runs") / "quantized"
"""Default repository-shaped folder of the Q/DQ graphs (``<model>/1/model.qdq.onnx``)."""

ONNX_ELEM_TYPES = {"UINT8": 2, "FP32": 1, "FP16": 10, "INT32": 6, "INT64": 7}
"""Contract datatype -> onnx.TensorProto element type (the numbers are ONNX's own)."""


def check_io(model, spec: contract.ModelSpec, source: str = "graph") -> None:
    """Raise ``ContractMismatch`` unless the graph's inputs and outputs have the
    contract's names, order and dtypes (a light check that needs only ``onnx``;
    ``omniface.export.check_against_contract`` is the full one, with shapes)."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    problems = []
    for kind, actual, expected in (
        ("input", [v for v in graph.input if v.name not in initializers], spec.inputs),
        ("output", list(graph.output), spec.outputs),
    ):
        names = [v.name for v in actual]
        want = [t.name for t in expected]
        if names != want:
            problems.append(f"{kind} names {names}, the contract says {want}")
            continue
        for value, tensor in zip(actual, expected):
            elem = value.type.tensor_type.elem_type
            if elem != ONNX_ELEM_TYPES.get(tensor.dtype):
                problems.append(f"{kind} {tensor.name!r} has ONNX element type {elem}, the contract says {tensor.dtype}")
    if problems:
        raise ContractMismatch(f"{source} does not match contract model {spec.name!r}: " + "; ".join(problems))


def convert_to_fp16(onnx_path: str | os.PathLike, out_path: str | os.PathLike, spec: contract.ModelSpec) -> Path:
    """Write the float16 variant of ``onnx_path`` to ``out_path`` (I/O types kept) and
    check it still matches ``spec``."""
    onnx = require("onnx", "train")
    require("onnxruntime", "serve")
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = onnx.load(os.fspath(onnx_path))
    check_io(model, spec, os.fspath(onnx_path))
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    topological_sort(half.graph)  # the converter appends its casts; parsers read nodes in order
    half.producer_name = model.producer_name or "omniface"
    del half.metadata_props[:]
    for prop in model.metadata_props:
        half.metadata_props.add(key=prop.key, value=prop.value)
    half.metadata_props.add(key="omniface_precision", value="fp16")
    onnx.checker.check_model(half)
    check_io(half, spec, f"{onnx_path} converted to fp16")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, os.fspath(out_path))
    return out_path


def topological_sort(graph) -> None:
    """Reorder ``graph.node`` in place so every node follows its inputs' producers
    (stable: nodes keep their order where they can). Raises ValueError on a cycle."""
    nodes = list(graph.node)
    produced_by = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            produced_by[name] = index
    pending = [{produced_by[i] for i in node.input if i in produced_by and produced_by[i] != index}
               for index, node in enumerate(nodes)]
    users: dict[int, list[int]] = {}
    for index, deps in enumerate(pending):
        for dep in deps:
            users.setdefault(dep, []).append(index)
    ready = [i for i, deps in enumerate(pending) if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for user in users.get(index, ()):
            pending[user].discard(index)
            if not pending[user]:
                heapq.heappush(ready, user)
    if len(order) != len(nodes):
        raise ValueError("the graph has a cycle; it cannot be sorted")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def source_onnx(model_dir: str | os.PathLike, precision: str, qdq_dir: str | os.PathLike | None = None,
                model_name: str = "") -> Path:
    """The ONNX file an engine of ``precision`` starts from: ``model.onnx`` for fp32/fp16
    (fp16 is converted from it), the Q/DQ graph for int8. Raises FileNotFoundError with
    the command that makes a missing file."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model_dir = Path(model_dir)
    if precision == "int8":
        base = Path(qdq_dir) / model_name / "1" if qdq_dir else model_dir
        path = base / QDQ_FILENAME
        if not path.is_file():
            where = Path(qdq_dir) if qdq_dir else model_dir.parent.parent
            raise FileNotFoundError(
                f"{path} not found: INT8 engines are built from a Q/DQ graph; make it with "
                f"`python build/quantize.py --models {model_name or '<model>'} --out-dir {where}` "
                "(or point --qdq-dir at where it is)"
            )
        return path
    path = model_dir / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: export the graphs with `python build/export_onnx.py`")
    return path
