"""The real perf_analyzer (tritonclient 2.51) against the real server, on loopback, bounded:
a short sweep with encoded and raw frames, the composing models' CSV files and the
report, and system shared memory through the required-input variant."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniface import contract
from omniface.bench import inputs as bench_inputs
from omniface.bench.perf import Measurement, points
from omniface.bench.report import STEP_ORDER, write_report
from omniface.bench.sweep import run_sweep

pytestmark = pytest.mark.load

# Short windows and a loose stability bound: CI machines are shared and noisy; a point
# that still does not settle is measured over a request count instead.
QUICK = Measurement(interval_ms=1000, stability_percent=50, max_trials=4)


@pytest.fixture(scope="module")
def perf():
    from omniface.bench.perf import find_perf_analyzer

    try:
        from omniface.binaries import perf_analyzer_path
    except ImportError:  # pragma: no cover
        pytest.skip("omniface.cli is not importable")
    if perf_analyzer_path() is None:
        pytest.skip("perf_analyzer is not installed (the 'bench' extra)")
    return find_perf_analyzer()  # a missing libb64 / libcudart fails here, with the fix


@pytest.fixture(scope="module")
def images() -> list[bench_inputs.BenchImage]:
    pytest.importorskip("skimage")
    return bench_inputs.sample_images(["astronaut", "group_of_6"])


def test_perf_analyzer_runs(perf) -> None:
    assert "2.51" in perf.version()


def test_sweep_encoded_and_raw_with_composing_models(perf, triton_server, images, tmp_path: Path) -> None:
    sweeps = []
    for kind in ("encoded", "raw"):
        data = bench_inputs.write_input_data(tmp_path / f"{kind}.json", images, kind)
        sweep = run_sweep(perf, triton_server.grpc_url, data, points([1, 2]), tmp_path / "perf", kind,
                          input_kind=kind, images=[i.name for i in images], measurement=QUICK, progress=False,
                          timeout=120)
        assert [r.ok for r in sweep.results] == [True, True], [r.error for r in sweep.results]
        for result in sweep.results:
            assert result.row.throughput > 0 and result.row.p99_us >= result.row.p50_us > 0
            assert set(result.steps) == set(STEP_ORDER)  # every composing model's CSV was found
            assert all(step.server_us > 0 for step in result.steps.values())
        sweeps.append(sweep)
    report = write_report(tmp_path / "report", "load test", sweeps)
    assert "| encoded | c1 |" in report.read_text()
    assert (tmp_path / "report" / "steps.png").stat().st_size > 1000


def test_system_shared_memory(perf, model_repository: Path, images, tmp_path: Path) -> None:
    from omniface.bench.experiments import Variant, serve_variant

    variant = Variant("shm", required_input=contract.IMAGE_RAW)
    with serve_variant(variant, tmp_path, model_repository) as server:
        data = bench_inputs.write_input_data(tmp_path / "raw.json", images[:1], "raw", variant.models())
        sweep = run_sweep(perf, server.grpc_url, data, points([1]), tmp_path / "perf", "raw shm",
                          input_kind="raw", shared_memory="system", measurement=QUICK, progress=False, timeout=120)
    (result,) = sweep.results
    assert result.ok, result.error
    assert "--shared-memory" in result.command and set(result.steps) == set(STEP_ORDER)
