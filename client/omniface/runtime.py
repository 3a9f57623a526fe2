"""ONNX Runtime sessions for the omniface graphs (the ``serve`` or ``train`` extra).

The committed ``model.onnx`` files are plain (unoptimised) ONNX; graph optimisation
happens here, when the session is created, so every consumer (the serving adapter,
the export parity checks, the benchmarks) runs the graphs the same way.
"""

from __future__ import annotations

import os

from omniface.errors import require


def make_session(path: str | os.PathLike, threads: int = 2):
    """An ``onnxruntime.InferenceSession`` on the CPU execution provider with all graph
    optimisations, ``threads`` intra-op threads, one inter-op thread and sequential
    execution."""
    ort = require("onnxruntime", "serve")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"])
