"""The in-process baseline: ``LocalPipeline`` under the same closed-loop load.

``concurrency`` worker threads each send the next request as soon as their previous one
is answered, as perf_analyzer's concurrency mode does; the graphs run in ONNX Runtime
with the thread settings the served config carries (the same total budget), and the
pre/post-processing is the very code the python backend runs. Latency is measured per
request; throughput is completed requests over the measured wall time. Run it with
``OMP_NUM_THREADS=1`` as the server's stubs are (``omniface bench`` sets it), or NumPy's
BLAS pool adds threads the served pipeline does not have.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class InProcessResult:
    concurrency: int
    requests: int
    seconds: float
    throughput: float
    p50_us: float
    p90_us: float
    p99_us: float
    avg_us: float
    cpu_ms: float | None = None
    """CPU time this process spent per request (all threads)."""

    def to_dict(self) -> dict:
        return asdict(self)


def percentiles_us(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 and mean of latencies given in seconds, in microseconds."""
    values = np.asarray(latencies_s, dtype=np.float64) * 1e6
    if values.size == 0:
        raise ValueError("no latencies")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50_us": float(p50), "p90_us": float(p90), "p99_us": float(p99), "avg_us": float(values.mean())}


def closed_loop(
    run: Callable[[Mapping[str, np.ndarray]], object],
    requests: Sequence[Mapping[str, np.ndarray]],
    concurrency: int,
    duration_s: float = 5.0,
    min_requests: int = 20,
    warmup_requests: int | None = None,
    max_seconds: float | None = None,
) -> InProcessResult:
    """Drive ``run`` with ``concurrency`` threads for ``duration_s`` seconds (and at
    least ``min_requests`` requests, unless ``max_seconds`` passes first), cycling
    through ``requests``. ``warmup_requests`` (default: ``concurrency``) run first and
    are not counted."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not requests:
        raise ValueError("no requests")
    for index in range(warmup_requests if warmup_requests is not None else concurrency):
        run(requests[index % len(requests)])
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(10**12))
    errors: list[BaseException] = []
    stop_at = [0.0]
    hard_stop = [float("inf")]

    def worker() -> None:
        while True:
            now = time.perf_counter()
            with lock:
                done = len(latencies)
                if errors or now >= hard_stop[0] or (now >= stop_at[0] and done >= min_requests):
                    return
                index = next(counter)
            began = time.perf_counter()
            try:
                run(requests[index % len(requests)])
            except BaseException as exc:  # surfaced after the threads joined
                with lock:
                    errors.append(exc)
                return
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker, name=f"inprocess-{i}", daemon=True) for i in range(concurrency)]
    cpu_started = time.process_time()
    started = time.perf_counter()
    stop_at[0] = started + duration_s
    if max_seconds is not None:
        hard_stop[0] = started + max_seconds
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if errors:
        raise errors[0]
    stats = percentiles_us(latencies)
    return InProcessResult(concurrency=concurrency, requests=len(latencies), seconds=seconds,
                           throughput=len(latencies) / seconds, cpu_ms=1000 * cpu / max(1, len(latencies)), **stats)
