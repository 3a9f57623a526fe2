"""Triton python-backend adapter: one class for every omniface step.

Each generated ``model.py`` imports ``TritonPythonModel`` from here; ``initialize`` picks
the step by model name and builds it once. ``execute`` converts Triton tensors to numpy,
calls the step (once for the whole dynamic batch when the step is batched) and turns
``InvalidInput`` into an error response for that request only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

import triton_python_backend_utils as pb_utils  # provided by the python backend stub

from omniface.contract import INVALID_INPUT_PREFIX
from omniface.errors import InvalidInput
from omniface.serving.steps import Step, make_step


log = logging.getLogger("omniface.serving")


def _error(message: str, invalid: bool):
    code = getattr(pb_utils.TritonError, "INVALID_ARG" if invalid else "INTERNAL", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def _output_tensor(name: str, value):
    """numpy -> pb_utils.Tensor; a (GPU) torch tensor goes out through DLPack, in place."""
    if isinstance(value, np.ndarray):
        return pb_utils.Tensor(name, value)
    from omniface.serving.gpu import to_dlpack

    return pb_utils.Tensor.from_dlpack(name, to_dlpack(value))


class TritonPythonModel:
    """The python-backend entry point Triton looks for in model.py."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        model_dir = Path(args["model_repository"]) / args["model_version"]
        device_id = int(args.get("model_instance_device_id") or 0)  # the GPU of a KIND_GPU instance
        self.step: Step = make_step(args["model_name"], parameters, model_dir, device_id=device_id)
        self.keep_gpu_inputs = bool(getattr(self.step, "gpu_inputs", False))
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]

    def _inputs(self, request) -> dict[str, np.ndarray]:
        inputs = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                inputs[name] = tensor.as_numpy() if tensor.is_cpu() else self._gpu_input(tensor)
        return inputs

    def _gpu_input(self, tensor):
        """A GPU input (FORCE_CPU_ONLY_INPUT_TENSORS off): a torch tensor for GPU steps,
        a host copy for the others."""
        from omniface.serving.gpu import from_dlpack

        value = from_dlpack(tensor.to_dlpack())
        return value if self.keep_gpu_inputs else value.cpu().numpy()

    def _response(self, outputs: dict[str, np.ndarray]):
        return pb_utils.InferenceResponse([_output_tensor(n, outputs[n]) for n in self.output_names])

    def execute(self, requests: list) -> list:
        if self.step.batched:
            return self._execute_batched(requests)
        responses = []
        for request in requests:
            try:
                responses.append(self._response(self.step(self._inputs(request))))
            except InvalidInput as exc:
                responses.append(pb_utils.InferenceResponse(error=_error(f"{INVALID_INPUT_PREFIX} {exc}", True)))
            except Exception as exc:  # one bad request must not take the model down
                log.exception("omniface step failed")
                responses.append(pb_utils.InferenceResponse(error=_error(f"omniface: internal error: {exc}", False)))
        return responses

    def _execute_batched(self, requests: list) -> list:
        per_request = [self._inputs(r) for r in requests]
        sizes = [len(next(iter(inputs.values()))) for inputs in per_request]
        merged = {name: np.concatenate([inputs[name] for inputs in per_request]) for name in per_request[0]}
        try:
            outputs = self.step(merged)
        except Exception as exc:
            log.exception("omniface graph failed")
            error = _error(f"omniface: internal error: {exc}", False)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        bounds = np.cumsum([0, *sizes])
        return [
            self._response({n: v[start:stop] for n, v in outputs.items()})
            for start, stop in zip(bounds[:-1], bounds[1:])
        ]
