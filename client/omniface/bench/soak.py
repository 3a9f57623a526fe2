"""The soak: a long run at one concurrency with the server's memory sampled throughout.

Load comes from perf_analyzer in back-to-back segments of a fixed request count (sized
from the measured throughput to last about ``segment_s``), so every request is counted
exactly (after an unrecorded warm-up of ``warmup_s`` seconds at the same load); a failed
request makes perf_analyzer fail its segment, and Triton's own
``nv_inference_request_failure`` counters (ensemble and composing models) are compared
before and after. A thread samples the resident memory of the server's whole process
tree (tritonserver and its python-backend stubs) from ``/proc`` every
``sample_every_s`` seconds. Growth is the median of the last tenth of the samples
minus the median of the first tenth (after a warm-up segment), and passes under
``max_growth_mib``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from omniface import contract
from omniface.bench.perf import LoadPoint, Measurement, PerfAnalyzer, PerfPoint, run_point
from omniface.bench.system import MemorySample, read_metrics, request_counts, sample_memory

MODELS_COUNTED: tuple[str, ...] = (contract.FACE_ANALYSIS, contract.PREPROCESS, contract.DETECTOR,
                                   contract.POSTPROCESS, contract.ATTRIBUTES)


@dataclass
class SoakResult:
    duration_s: float
    concurrency: int
    input_kind: str
    client_requests: int
    server_requests: int
    failed_requests: int
    failed_segments: int
    segments: list[dict]
    samples: list[MemorySample]
    rss_start_mib: float
    rss_end_mib: float
    rss_max_mib: float
    rss_growth_mib: float
    rss_slope_mib_per_min: float
    max_growth_mib: float
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.failed_requests == 0 and self.failed_segments == 0 and self.client_requests > 0
                and self.rss_growth_mib <= self.max_growth_mib)

    @property
    def throughput(self) -> float:
        return self.client_requests / self.duration_s if self.duration_s else 0.0

    def summary(self) -> str:
        return (f"{self.duration_s / 60:.1f} min at concurrency {self.concurrency} ({self.input_kind}): "
                f"{self.client_requests} requests ({self.throughput:.1f}/s), {self.failed_requests} failed, "
                f"{self.failed_segments} failed segments; server RSS {self.rss_start_mib:.0f} -> "
                f"{self.rss_end_mib:.0f} MiB (max {self.rss_max_mib:.0f}, growth {self.rss_growth_mib:+.1f} MiB, "
                f"{self.rss_slope_mib_per_min:+.2f} MiB/min); {'PASS' if self.passed else 'FAIL'}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["samples"] = [asdict(s) for s in self.samples]
        data["passed"] = self.passed
        data["throughput"] = self.throughput
        return data


class MemorySampler(threading.Thread):
    """Samples a process tree's memory every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 1.0, on_sample=None) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval, self.on_sample = pid, interval, on_sample
        self.samples: list[MemorySample] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            sample = sample_memory(self.pid)
            if sample.processes:
                self.samples.append(sample)
                if self.on_sample:
                    self.on_sample(sample)
            self._halt.wait(self.interval)

    def stop(self) -> list[MemorySample]:
        self._halt.set()
        self.join(10)
        return self.samples


def _failures(metrics_url: str) -> tuple[int, int]:
    metrics = read_metrics(metrics_url)
    success, failed = request_counts(metrics, contract.FACE_ANALYSIS)
    failed += sum(request_counts(metrics, m)[1] for m in MODELS_COUNTED if m != contract.FACE_ANALYSIS)
    return success, failed


def growth(samples: list[MemorySample]) -> tuple[float, float, float, float]:
    """(start, end, growth, slope per minute) in MiB: medians of the first and last
    tenth of the samples, and a least-squares slope over all of them."""
    if not samples:
        return 0.0, 0.0, 0.0, 0.0
    rss = np.array([s.rss_kib / 1024 for s in samples])
    t = np.array([s.t for s in samples])
    tenth = max(1, len(samples) // 10)
    start, end = float(np.median(rss[:tenth])), float(np.median(rss[-tenth:]))
    slope = float(np.polyfit((t - t[0]) / 60, rss, 1)[0]) if len(samples) >= 3 and t[-1] > t[0] else 0.0
    return start, end, end - start, slope


def run_soak(
    perf: PerfAnalyzer,
    url: str,
    metrics_url: str,
    server_pid: int,
    input_data: Path,
    out_dir: Path,
    *,
    duration_s: float = 600.0,
    concurrency: int = 4,
    input_kind: str = "raw",
    segment_s: float = 60.0,
    warmup_s: float = 30.0,
    sample_every_s: float = 1.0,
    max_growth_mib: float | None = None,
    progress: bool = True,
) -> SoakResult:
    """Soak the server for ``duration_s`` seconds, after about ``warmup_s`` seconds of
    unrecorded load at the same concurrency."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def segment(name: str, requests: int):
        spec = PerfPoint(url=url, input_data=Path(input_data).resolve(), point=LoadPoint(concurrency=concurrency),
                         measurement=Measurement(request_count=max(requests, concurrency)))
        return run_point(perf, spec, out_dir, name, timeout=max(120.0, 10 * segment_s))

    probe = segment("warmup-probe", max(16, 4 * concurrency))
    rate = probe.row.throughput if probe.ok else 5.0
    if warmup_s > 0:  # first-use allocations (arenas, shared-memory pools) stay out of the baseline
        warm = segment("warmup", int(rate * warmup_s))
        rate = warm.row.throughput if warm.ok else rate
    success_before, failed_before = _failures(metrics_url)

    bar = tqdm(total=int(duration_s), desc=f"soak c{concurrency}", unit="s", disable=not progress)
    started = time.monotonic()
    shown = [0]

    def on_sample(sample: MemorySample) -> None:
        elapsed = min(int(time.monotonic() - started), int(duration_s))
        if elapsed > shown[0]:
            bar.update(elapsed - shown[0])
            shown[0] = elapsed
        bar.set_postfix_str(f"RSS {sample.rss_mib:.0f} MiB")

    sampler = MemorySampler(server_pid, sample_every_s, on_sample)
    sampler.start()
    segments: list[dict] = []
    errors: list[str] = []
    client_requests = 0
    try:
        index = 0
        while (remaining := duration_s - (time.monotonic() - started)) > 1.0:
            requests = int(max(concurrency * 2, rate * min(segment_s, remaining)))
            seg_start = time.monotonic()
            result = segment(f"segment-{index:03d}", requests)
            seg_end = time.monotonic()
            entry = {"index": index, "start_t": seg_start, "end_t": seg_end, "requests": requests,
                     "ok": result.ok, "throughput": result.row.throughput if result.ok else 0.0,
                     "p50_us": result.row.p50_us if result.ok else None,
                     "p99_us": result.row.p99_us if result.ok else None}
            segments.append(entry)
            if result.ok:
                client_requests += requests
                rate = 0.5 * rate + 0.5 * result.row.throughput
            else:
                errors.append(f"segment {index}: {result.error}")
            index += 1
    finally:
        samples = sampler.stop()
        bar.update(max(0, int(duration_s) - shown[0]))
        bar.close()
    elapsed = time.monotonic() - started
    success_after, failed_after = _failures(metrics_url)
    start, end, grown, slope = growth(samples)
    limit = max_growth_mib if max_growth_mib is not None else max(16.0, 0.02 * start)
    return SoakResult(
        duration_s=elapsed, concurrency=concurrency, input_kind=input_kind,
        client_requests=client_requests, server_requests=success_after - success_before,
        failed_requests=failed_after - failed_before, failed_segments=sum(not s["ok"] for s in segments),
        segments=segments, samples=samples, rss_start_mib=start, rss_end_mib=end,
        rss_max_mib=max((s.rss_mib for s in samples), default=0.0), rss_growth_mib=grown,
        rss_slope_mib_per_min=slope, max_growth_mib=limit, errors=errors,
    )
