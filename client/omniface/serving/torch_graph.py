"""Run an omniface ONNX graph with torch ops: the committed graph, on a CUDA GPU, where
neither onnxruntime-gpu nor TensorRT is installed.

Why: the GPU numbers of the project must come from the very graphs the repository
serves, and the GPU machines at hand have torch with CUDA but no TensorRT and no
onnxruntime-gpu. Re-creating the network in torch would need the training checkpoint
and could drift from the exported graph; interpreting the ONNX graph node by node
cannot. The tests check it against ONNX Runtime on CPU (FP32 and FP16), so the GPU run
only changes the device.

``TorchGraph(path, device="cuda", precision="fp16")`` keeps every float tensor
(initializers, constants, float casts) in the compute precision and returns float32
numpy arrays, the contract's dtypes. Shape arithmetic (``Shape``, ``Gather`` on shapes,
``Range`` bounds) and small constants (axes, scales, clip bounds) stay on the host, so
the graph issues no device-to-host copy mid-run; a small constant that meets device data
uses a device copy made at load time. With ``cuda_graphs=True`` each input shape is captured once
as a CUDA graph and replayed, which takes the Python dispatch of ~200 nodes off the
critical path at small batches; if capture fails, the graph runs eagerly and
``capture_errors`` says why.

Only the operators these graphs use are implemented (``SUPPORTED_OPS``); a graph with
another one is refused when it is loaded, not mid-request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from omniface.serving.gpu import require_torch

PRECISIONS = ("fp32", "fp16")

# ONNX TensorProto element types -> torch dtype names (the float ones follow the precision).
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_INT_TYPES = {2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool"}
_INT64_MAX = 2**63 - 1
SMALL = 16
"""Constants with at most this many values (rank <= 1) are kept on the host."""


class TorchGraph:
    """An ONNX graph loaded once into torch tensors; call it with numpy (or torch) inputs."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", precision: str = "fp32",
                 cuda_graphs: bool = False) -> None:
        import onnx
        from onnx import numpy_helper

        self.torch = torch = require_torch(device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device)
        self.precision = precision
        self.float_dtype = torch.float16 if precision == "fp16" else torch.float32
        model = onnx.load(os.fspath(path))
        unsupported = sorted({n.op_type for n in model.graph.node} - set(SUPPORTED_OPS))
        if unsupported:
            raise NotImplementedError(f"{path}: operators {unsupported} are not implemented by TorchGraph")
        self.input_names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        self.output_names = [o.name for o in model.graph.output]
        self._device_copies: dict[int, Any] = {}
        self.constants: dict[str, Any] = {t.name: self._tensor(numpy_helper.to_array(t)) for t in model.graph.initializer}
        self.nodes = []
        for node in model.graph.node:
            attributes = {a.name: _attribute(a) for a in node.attribute}
            if node.op_type == "Constant":  # folded at load: no per-call work
                self.constants[node.output[0]] = self._tensor(_constant_value(attributes))
                continue
            self.nodes.append((SUPPORTED_OPS[node.op_type], list(node.input), list(node.output), attributes))
        self.cuda_graphs = bool(cuda_graphs) and self.device.type == "cuda"
        self._captured: dict[tuple, tuple] = {}
        self.capture_errors: dict[tuple, str] = {}

    # -------------------------------------------------------------------- tensors

    def _tensor(self, array: np.ndarray):
        """An initializer or constant: on the device, except small ones (at most
        ``SMALL`` values, rank <= 1), which stay on the host with a device copy beside."""
        tensor = self.torch.from_numpy(np.array(array, copy=True))
        if tensor.is_floating_point():
            tensor = tensor.to(self.float_dtype)
        if tensor.ndim <= 1 and tensor.numel() <= SMALL:
            if self.device.type != "cpu":
                self._device_copies[id(tensor)] = tensor.to(self.device)
            return tensor
        return tensor.to(self.device)

    def on_device(self, tensor):
        """``tensor`` on the graph's device (a small constant's load-time copy if it is one)."""
        if tensor.device == self.device:
            return tensor
        copy = self._device_copies.get(id(tensor))
        return copy if copy is not None else tensor.to(self.device)

    def cast_type(self, onnx_type: int):
        """The torch dtype an ONNX ``Cast(to=...)`` produces here."""
        if onnx_type in _FLOAT_TYPES:
            return self.float_dtype
        if onnx_type not in _INT_TYPES:
            raise NotImplementedError(f"Cast to ONNX type {onnx_type}")
        return getattr(self.torch, _INT_TYPES[onnx_type])

    # -------------------------------------------------------------------- running

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Graph outputs as torch tensors on the device (compute precision)."""
        torch = self.torch
        inputs = {}
        for name in self.input_names:
            value = feeds[name]
            tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
            inputs[name] = tensor.to(self.device, non_blocking=True)
        with torch.inference_mode():
            if self.cuda_graphs:
                return self._replay(inputs)
            return self._execute(inputs)

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Graph outputs as numpy arrays, floats as float32 (the contract's dtype)."""
        out = {}
        for name, tensor in self.run(feeds).items():
            if tensor.is_floating_point():
                tensor = tensor.float()
            out[name] = tensor.cpu().numpy()
        return out

    def _execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(self.constants)
        values.update(inputs)
        values[""] = None  # an omitted optional input
        for op, names_in, names_out, attributes in self.nodes:
            results = op(self, [values[n] for n in names_in], attributes)
            for name, result in zip(names_out, results):
                values[name] = result
        return {name: values[name] for name in self.output_names}

    def _replay(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        torch = self.torch
        key = tuple((name, tuple(t.shape), t.dtype) for name, t in inputs.items())
        if key in self.capture_errors:
            return self._execute(inputs)
        if key not in self._captured:
            static = {name: t.clone() for name, t in inputs.items()}
            try:
                stream = torch.cuda.Stream(self.device)
                stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(stream):
                    for _ in range(2):  # warm up allocator and kernels outside the capture
                        self._execute(static)
                torch.cuda.current_stream(self.device).wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    outputs = self._execute(static)
            except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager
                self.capture_errors[key] = f"{type(exc).__name__}: {exc}"
                return self._execute(inputs)
            self._captured[key] = (graph, static, outputs)
        graph, static, outputs = self._captured[key]
        for name, tensor in inputs.items():
            static[name].copy_(tensor, non_blocking=True)
        graph.replay()
        return {name: t.clone() for name, t in outputs.items()}


# ------------------------------------------------------------------------ operators

def _attribute(attribute):
    from onnx import helper, numpy_helper

    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if attribute.type == attribute.TENSOR:
        return numpy_helper.to_array(value)
    return value


def _constant_value(attributes: Mapping[str, Any]) -> np.ndarray:
    if "value" in attributes:
        return attributes["value"]
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attributes:
            return np.asarray(attributes[key], dtype)
    raise NotImplementedError(f"Constant with attributes {sorted(attributes)}")


def _ints(value) -> list[int]:
    """A host list of ints from a shape-like tensor (int64, normally already on the host)."""
    return [int(v) for v in value.reshape(-1).tolist()]


def _pair(graph: TorchGraph, a, b):
    """Operands of an elementwise op on one device (host tensors move to the data)."""
    if a.device != b.device:
        if a.device.type == "cpu":
            a = graph.on_device(a)
        else:
            b = graph.on_device(b)
    return a, b


def _binary(fn: Callable) -> Callable:
    def op(graph, inputs, attributes):
        a, b = _pair(graph, *inputs)
        return [fn(a, b)]
    return op


def _unary(name: str) -> Callable:
    def op(graph, inputs, attributes):
        return [getattr(graph.torch, name)(inputs[0])]
    return op


def _conv(graph, inputs, attributes):
    functional = graph.torch.nn.functional
    x, weight = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    if attributes.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"Conv auto_pad={attributes['auto_pad']}")
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    half = len(pads) // 2
    if pads[:half] != pads[half:]:  # asymmetric: pad explicitly (torch wants (left, right, top, bottom))
        x = functional.pad(x, [pads[half + 1], pads[1], pads[half], pads[0]] if half == 2 else pads)
        pads = [0] * len(pads)
    return [functional.conv2d(x, weight, bias, stride=attributes.get("strides", 1), padding=pads[:half],
                              dilation=attributes.get("dilations", 1), groups=attributes.get("group", 1))]


def _gemm(graph, inputs, attributes):
    a, b = inputs[0], inputs[1]
    if attributes.get("transA", 0):
        a = a.t()
    if attributes.get("transB", 0):
        b = b.t()
    out = attributes.get("alpha", 1.0) * (a @ b)
    if len(inputs) > 2 and inputs[2] is not None:
        out = out + attributes.get("beta", 1.0) * inputs[2]
    return [out]


def _resize(graph, inputs, attributes):
    functional = graph.torch.nn.functional
    x = inputs[0]
    mode = attributes.get("mode", "nearest")
    transform = attributes.get("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        if transform != "asymmetric" or attributes.get("nearest_mode", "round_prefer_floor") != "floor":
            raise NotImplementedError("Resize nearest is implemented for asymmetric/floor (torch's 'nearest')")
        kwargs = {"mode": "nearest"}
    elif mode == "linear":
        if transform not in ("half_pixel", "align_corners", "pytorch_half_pixel"):
            raise NotImplementedError(f"Resize linear with {transform}")
        kwargs = {"mode": "bilinear", "align_corners": transform == "align_corners"}
    else:
        raise NotImplementedError(f"Resize mode {mode}")
    sizes = inputs[3] if len(inputs) > 3 else None
    if sizes is not None and sizes.numel():
        return [functional.interpolate(x, size=_ints(sizes)[2:], **kwargs)]
    scales = [float(s) for s in inputs[2].reshape(-1).tolist()]
    return [functional.interpolate(x, scale_factor=scales[2:], **kwargs)]


def _reshape(graph, inputs, attributes):
    x, shape = inputs[0], _ints(inputs[1])
    if not attributes.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def _reduce(name: str) -> Callable:
    """ReduceMean/ReduceSum: axes from the attribute (older opsets) or the second input."""
    def op(graph, inputs, attributes):
        x = inputs[0]
        if len(inputs) > 1 and inputs[1] is not None:
            axes = _ints(inputs[1])
        else:
            axes = list(attributes.get("axes", []))
        keep = bool(attributes.get("keepdims", 1))
        if not axes:
            if attributes.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.ndim))
        return [getattr(graph.torch, name)(x, dim=axes, keepdim=keep)]
    return op


def _slice(graph, inputs, attributes):
    x = inputs[0]
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step <= 0:
            raise NotImplementedError("Slice with a non-positive step")
        size = x.shape[axis]
        index[axis] = slice(max(-size, min(start, size)), max(-size, min(end, size)) if end < _INT64_MAX else size, step)
    return [x[tuple(index)]]


def _squeeze(graph, inputs, attributes):
    x = inputs[0]
    if len(inputs) > 1 and inputs[1] is not None:
        axes = sorted((a % x.ndim for a in _ints(inputs[1])), reverse=True)
    else:
        axes = sorted((i for i, s in enumerate(x.shape) if s == 1), reverse=True)
    for axis in axes:
        x = x.squeeze(axis)
    return [x]


def _unsqueeze(graph, inputs, attributes):
    x = inputs[0]
    axes = _ints(inputs[1])
    rank = x.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return [x]


def _concat(graph, inputs, attributes):
    tensors = [t for t in inputs if t is not None]
    if any(t.device != tensors[0].device for t in tensors):
        tensors = [graph.on_device(t) for t in tensors]
    return [graph.torch.cat(tensors, dim=attributes["axis"])]


def _cast(graph, inputs, attributes):
    return [inputs[0].to(graph.cast_type(attributes["to"]))]


def _shape(graph, inputs, attributes):
    shape = list(inputs[0].shape)
    start, end = attributes.get("start", 0), attributes.get("end", None)
    return [graph.torch.tensor(shape[start:end], dtype=graph.torch.int64)]


def _gather(graph, inputs, attributes):
    data, indices = inputs
    axis = attributes.get("axis", 0)
    if indices.ndim == 0 and indices.device.type == "cpu":
        return [data.select(axis, int(indices) % data.shape[axis])]
    if indices.device != data.device:
        indices = graph.on_device(indices) if data.device.type != "cpu" else indices.cpu()
    indices = graph.torch.where(indices < 0, indices + data.shape[axis], indices)
    return [graph.torch.index_select(data, axis, indices.reshape(-1)).reshape(
        *data.shape[:axis], *indices.shape, *data.shape[axis + 1:])]


def _constant_of_shape(graph, inputs, attributes):
    value = np.asarray(attributes.get("value", np.zeros(1, np.float32))).reshape(-1)
    dtype = graph.float_dtype if value.dtype.kind == "f" else getattr(graph.torch, value.dtype.name)
    return [graph.torch.full(_ints(inputs[0]), value[0].item(), dtype=dtype, device=graph.device)]


def _range(graph, inputs, attributes):
    start, limit, delta = inputs  # host scalars: shape arithmetic
    dtype = start.dtype
    device = "cpu" if dtype == graph.torch.int64 else graph.device  # int ranges index, float ones are data
    return [graph.torch.arange(start.item(), limit.item(), delta.item(), dtype=dtype, device=device)]


def _clip(graph, inputs, attributes):
    x = inputs[0]
    bounds = [inputs[i] if len(inputs) > i and inputs[i] is not None else None for i in (1, 2)]
    low, high = (None if b is None else (b.item() if b.device.type == "cpu" else b) for b in bounds)
    return [graph.torch.clamp(x, min=low, max=high)]


def _cumsum(graph, inputs, attributes):
    x = inputs[0]
    axis = int(inputs[1].reshape(-1)[0])
    if attributes.get("reverse", 0):
        x = x.flip(axis)
    out = graph.torch.cumsum(x, dim=axis)
    if attributes.get("exclusive", 0):
        out = out - x
    if attributes.get("reverse", 0):
        out = out.flip(axis)
    return [out]


def _softmax(graph, inputs, attributes):
    return [graph.torch.softmax(inputs[0], dim=attributes.get("axis", -1))]


def _transpose(graph, inputs, attributes):
    x = inputs[0]
    perm = attributes.get("perm", list(reversed(range(x.ndim))))
    return [x.permute(*perm)]


SUPPORTED_OPS: dict[str, Callable] = {
    "Add": _binary(lambda a, b: a + b),
    "Sub": _binary(lambda a, b: a - b),
    "Mul": _binary(lambda a, b: a * b),
    "Div": _binary(lambda a, b: a / b if a.is_floating_point() else a.div(b, rounding_mode="trunc")),
    "Pow": _binary(lambda a, b: a.pow(b)),
    "MatMul": _binary(lambda a, b: a @ b),
    "Relu": _unary("relu"),
    "Sigmoid": _unary("sigmoid"),
    "Sqrt": _unary("sqrt"),
    "Softplus": lambda graph, inputs, attributes: [graph.torch.nn.functional.softplus(inputs[0])],
    "Identity": lambda graph, inputs, attributes: [inputs[0]],
    "Conv": _conv,
    "Gemm": _gemm,
    "Resize": _resize,
    "Reshape": _reshape,
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "Slice": _slice,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Cast": _cast,
    "Shape": _shape,
    "Gather": _gather,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "Clip": _clip,
    "CumSum": _cumsum,
    "Softmax": _softmax,
    "Transpose": _transpose,
    "Constant": None,  # folded when the graph is loaded
}
