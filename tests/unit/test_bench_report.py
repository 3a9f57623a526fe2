"""Report tables and plots, the in-process load loop and soak arithmetic (no server)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from omniface.bench import inprocess, report, soak
from omniface.bench.experiments import ComparisonRow, budget_summary, comparison_table
from omniface.bench.perf import LoadPoint, PerfRow, PointResult
from omniface.bench.sweep import Sweep
from omniface.bench.system import MemorySample


def _result(c: int, throughput: float, ok: bool = True) -> PointResult:
    row = PerfRow(throughput=throughput, concurrency=c, p50_us=1000.0 * c, p90_us=1500.0 * c, p99_us=2000.0 * c,
                  avg_us=1100.0 * c)
    steps = {name: PerfRow(throughput=throughput, server_queue_us=100.0, server_compute_infer_us=200.0 * i)
             for i, name in enumerate(report.STEP_ORDER, 1)}
    return PointResult(LoadPoint(concurrency=c), row if ok else None, steps if ok else {}, True, ["pa"], None,
                       None if ok else "boom")


def _sweep(name: str = "raw") -> Sweep:
    return Sweep(name, "raw", "none", ["astronaut"], [_result(1, 30.0), _result(4, 50.0), _result(16, 0, ok=False)])


def test_sweep_best_and_table() -> None:
    sweep = _sweep()
    assert sweep.best().point.concurrency == 4
    assert sweep.at(LoadPoint(concurrency=16)) is None
    table = report.sweep_table([sweep])
    assert "| raw | c4 | 50.0 | 4.0 |" in table and "failed" in table
    assert "detector ms" in table


def test_write_report_with_plots(tmp_path: Path) -> None:
    path = report.write_report(tmp_path, "t", [_sweep("a"), _sweep("b")], ["intro"], {"extra": 1})
    text = path.read_text()
    assert text.startswith("# t") and "intro" in text and "steps.png" in text
    for png in ("throughput_latency.png", "steps.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["extra"] == 1 and len(data["sweeps"]) == 2


def test_plot_soak(tmp_path: Path) -> None:
    samples = [{"t": float(i), "rss_kib": 1000 + i, "pss_kib": 900} for i in range(5)]
    segments = [{"end_t": 2.0, "throughput": 10.0}, {"end_t": 4.0, "throughput": 11.0}]
    assert report.plot_soak(samples, segments, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_comparison_and_budget_tables() -> None:
    local = inprocess.InProcessResult(1, 10, 1.0, 40.0, 25_000, 30_000, 40_000, 25_000)
    rows = [
        ComparisonRow("faces1", 1, "raw", 1, {"throughput": 36.0, "p50_us": 27_000, "p99_us": 40_000}, local),
        ComparisonRow("faces20", 20, "raw", 1, {"throughput": 12.0, "p50_us": 81_000, "p99_us": 90_000}, local),
    ]
    assert rows[0].ratio == pytest.approx(0.9)
    assert "0.90" in comparison_table(rows)
    summary = budget_summary(rows)
    assert "| faces1 | raw | 36.0 (c1) | 40.0 (c1) | 0.90 | yes |" in summary
    assert "| raw | 3.00 | 3.00 | yes |" in summary


def test_closed_loop_counts_and_concurrency() -> None:
    active, peak, lock = [0], [0], threading.Lock()

    def run(_request) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1

    result = inprocess.closed_loop(run, [{}], concurrency=3, duration_s=0.2, min_requests=10)
    assert result.requests >= 10 and peak[0] == 3
    assert result.throughput == pytest.approx(result.requests / result.seconds)
    assert 8_000 < result.p50_us < 100_000


def test_closed_loop_raises_the_first_error() -> None:
    def run(_request) -> None:
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        inprocess.closed_loop(run, [{}], concurrency=2, warmup_requests=0)


def test_soak_growth_and_verdict() -> None:
    flat = [MemorySample(float(t), 5, 500 * 1024 + (t % 3), None) for t in range(100)]
    start, end, grown, slope = soak.growth(flat)
    assert start == pytest.approx(500, abs=0.1) and abs(grown) < 0.1 and abs(slope) < 0.1
    leaking = [MemorySample(float(t * 6), 5, (500 + t) * 1024, None) for t in range(100)]  # 1 MiB / 6 s
    _, _, grown, slope = soak.growth(leaking)
    assert grown > 80 and slope == pytest.approx(10, rel=0.01)
    result = soak.SoakResult(60, 2, "raw", 100, 100, 0, 0, [], flat, start, end, 500, grown, slope, 16.0)
    assert not result.passed and "FAIL" in result.summary()
    assert soak.growth([]) == (0.0, 0.0, 0.0, 0.0)
