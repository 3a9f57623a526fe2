"""A sweep: perf_analyzer once per load point against one server, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omniface import contract
from omniface.bench.perf import LoadPoint, Measurement, PerfAnalyzer, PerfPoint, PointResult, run_point


@dataclass
class Sweep:
    """The results of one sweep and what was measured."""

    name: str
    input_kind: str
    shared_memory: str
    images: list[str]
    results: list[PointResult]
    settings: dict = field(default_factory=dict)

    def ok_results(self) -> list[PointResult]:
        return [r for r in self.results if r.ok]

    def best(self) -> PointResult | None:
        """The point with the highest throughput."""
        ok = self.ok_results()
        return max(ok, key=lambda r: r.row.throughput) if ok else None

    def at(self, point: LoadPoint) -> PointResult | None:
        for result in self.results:
            if result.point == point and result.ok:
                return result
        return None

    def to_dict(self) -> dict:
        return {"name": self.name, "input_kind": self.input_kind, "shared_memory": self.shared_memory,
                "images": self.images, "settings": self.settings,
                "results": [r.to_dict() for r in self.results]}


def safe_name(text: str) -> str:
    """A file-name-safe version of a sweep name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "sweep"


def run_sweep(
    perf: PerfAnalyzer,
    url: str,
    input_data: Path,
    load_points: Sequence[LoadPoint],
    out_dir: Path,
    name: str,
    *,
    input_kind: str,
    images: Sequence[str] = (),
    shared_memory: str = "none",
    measurement: Measurement | None = None,
    model: str = contract.FACE_ANALYSIS,
    settings: dict | None = None,
    progress: bool = True,
    timeout: float = 300.0,
    warmup_requests: int | None = None,
    server_pid: int | None = None,
    metrics_url: str | None = None,
) -> Sweep:
    """perf_analyzer at each of ``load_points`` in turn (files under ``out_dir``),
    after ``warmup_requests`` unrecorded requests (default: 4 x the highest concurrency,
    at least 16; 0 skips it) so first-run allocations stay out of the numbers.

    With ``server_pid`` and ``metrics_url`` each point also records the CPU time the
    server's process tree spent per completed request over the whole perf_analyzer run
    (``PointResult.server_cpu_ms``): a figure that other load on a shared machine
    disturbs far less than throughput."""
    from tqdm import tqdm

    measurement = measurement or Measurement()
    results: list[PointResult] = []
    load_points = list(load_points)
    top = max((p.concurrency or 1 for p in load_points), default=1)
    warmup = max(16, 4 * top) if warmup_requests is None else warmup_requests
    if warmup and load_points:
        spec = PerfPoint(url=url, input_data=Path(input_data).resolve(), point=LoadPoint(concurrency=top),
                         model=model, shared_memory=shared_memory, measurement=Measurement(request_count=warmup))
        run_point(perf, spec, out_dir, f"{safe_name(name)}-warmup", timeout=timeout)
    bar = tqdm(list(load_points), desc=name, unit="point", disable=not progress, leave=True)
    for point in bar:
        bar.set_postfix_str(point.label)
        spec = PerfPoint(url=url, input_data=Path(input_data).resolve(), point=point, model=model,
                         shared_memory=shared_memory, measurement=measurement)
        before = _snapshot(server_pid, metrics_url, model)
        result = run_point(perf, spec, out_dir, f"{safe_name(name)}-{point.label}", timeout=timeout)
        after = _snapshot(server_pid, metrics_url, model)
        if before and after and after[1] > before[1]:
            result.server_requests = after[1] - before[1]
            result.server_cpu_ms = 1000 * (after[0] - before[0]) / result.server_requests
            if result.client_cpu_s is not None:
                result.client_cpu_ms = 1000 * result.client_cpu_s / result.server_requests
        results.append(result)
        if result.ok:
            bar.set_postfix_str(f"{point.label}: {result.row.throughput:.1f}/s")
    return Sweep(name=name, input_kind=input_kind, shared_memory=shared_memory, images=list(images),
                 results=results, settings=dict(settings or {}))


def _snapshot(pid: int | None, metrics_url: str | None, model: str) -> tuple[float, int] | None:
    """(CPU seconds of the server's process tree, successful requests of ``model``)."""
    if pid is None or metrics_url is None:
        return None
    from omniface.bench.system import cpu_seconds, read_metrics, request_counts

    try:
        return cpu_seconds(pid), request_counts(read_metrics(metrics_url), model)[0]
    except OSError:
        return None
