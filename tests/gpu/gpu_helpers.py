"""Shared by the GPU tests: real images, timing, and FP16-vs-FP32 comparisons."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np

from omniface import contract, quantize


@functools.lru_cache(maxsize=None)
def real_images(model_name: str, count: int) -> np.ndarray:
    """Held-out real images for a graph (astronaut stand-in without the data); decoded
    once per (graph, count): the throughput loops ask for the same sample per batch size.
    Callers must not write into the array."""
    return quantize.image_set(model_name, "val", count).images


def throughput(run: Callable[[], object], items: int, seconds: float = 2.0, warmup: int = 5) -> float:
    """Items per second of ``run`` (which processes ``items`` items), timed for ~seconds."""
    for _ in range(warmup):
        run()
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls * items / elapsed


def compare(model_name: str, ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    """Max/mean |diff| per output and the task-level agreement numbers."""
    report = {}
    for name, value in ref.items():
        diff = np.abs(got[name].astype(np.float64) - value.astype(np.float64))
        report[f"{name}_max_abs"] = float(diff.max())
        report[f"{name}_mean_abs"] = float(diff.mean())
    if model_name == contract.ATTRIBUTES:
        report["age_mae_years"] = float(np.mean(np.abs(got[contract.AGE] - ref[contract.AGE])))
        report["expression_argmax_agreement"] = float(np.mean(
            got[contract.EXPRESSION].argmax(1) == ref[contract.EXPRESSION].argmax(1)))
    return report
