"""ONNX Runtime sessions for the omniface graphs (the ``serve`` or ``train`` extra).

The committed ``model.onnx`` files are plain (unoptimised) ONNX; graph optimisation
happens here, when the session is created, so every consumer (the serving adapter,
the export parity checks, the benchmarks) runs the graphs the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import numpy as np

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


def time_session(session, feeds: Mapping[str, np.ndarray], runs: int = 30, warmup: int = 3,
                 on_run: Callable[[], None] | None = None) -> dict[str, float]:
    """Wall time of ``session.run(None, feeds)`` after ``warmup`` untimed calls:
    ``{"median_ms", "p90_ms", "min_ms"}`` over ``runs`` calls. One timing loop for every
    graph benchmark (bench_models, the Q/DQ comparison, the export check), so their
    numbers mean the same thing; ``on_run`` is called after each timed call (progress)."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
        if on_run is not None:
            on_run()
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "min_ms": float(min(times))}
