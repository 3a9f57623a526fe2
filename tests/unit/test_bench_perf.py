"""perf_analyzer command lines, CSV parsing and composing-model files (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniface import contract
from omniface.bench import perf
from omniface.bench.perf import LoadPoint, Measurement, PerfAnalyzer, PerfPoint

ENSEMBLE_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
    "Avg latency,request/response,response wait,Avg GPU Utilization,Avg GPU Power Usage,Max GPU Memory Usage,"
    "Total GPU Memory\n"
    "1,34.4785,12,129,2,240,25385,3236,10,27265,44140,46908,82619,29017,22,28947,,,,\n"
    "2,38.6049,12,10150,2,250,38676,2695,9,45070,74916,100800,127044,51798,21,51723,,,,\n"
)
STEP_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv\n"
    "1,34.4785,0,2,159,69,12830,410,0\n"
)


def test_load_point_arguments_and_labels() -> None:
    assert LoadPoint(concurrency=4).arguments() == ["--concurrency-range", "4"]
    assert LoadPoint(concurrency=4).label == "c4"
    assert LoadPoint(request_rate=12.5).arguments() == ["--request-rate-range", "12.5"]
    assert LoadPoint(request_rate=12.5).label == "r12.5"
    for bad in (dict(), dict(concurrency=1, request_rate=2.0), dict(concurrency=0), dict(request_rate=0)):
        with pytest.raises(ValueError):
            LoadPoint(**bad)
    assert [p.label for p in perf.points([1, 4], [10])] == ["c1", "c4", "r10"]


def test_command_has_the_model_input_data_and_csv() -> None:
    spec = PerfPoint(url="127.0.0.1:8001", input_data=Path("/tmp/in.json"), point=LoadPoint(concurrency=2))
    cmd = spec.command(Path("/bin/perf_analyzer"), "x.csv")
    assert cmd[:7] == ["/bin/perf_analyzer", "-m", contract.FACE_ANALYSIS, "-u", "127.0.0.1:8001", "-i", "grpc"]
    assert cmd[cmd.index("--input-data") + 1] == "/tmp/in.json"
    assert cmd[cmd.index("-f") + 1] == "x.csv" and "--verbose-csv" in cmd
    assert "--measurement-interval" in cmd and "--stability-percentage" in cmd
    assert "--shared-memory" not in cmd


def test_command_shared_memory_and_request_count() -> None:
    spec = PerfPoint(url="u", input_data=Path("i.json"), point=LoadPoint(concurrency=1), shared_memory="system",
                     measurement=Measurement(request_count=50))
    cmd = spec.command(Path("pa"), "x.csv")
    assert cmd[cmd.index("--shared-memory") + 1] == "system"
    assert int(cmd[cmd.index("--output-shared-memory-size") + 1]) >= 1 << 20
    assert cmd[cmd.index("--request-count") + 1] == "50" and "--measurement-interval" not in cmd
    with pytest.raises(ValueError):
        PerfPoint(url="u", input_data=Path("i"), point=LoadPoint(concurrency=1), shared_memory="bogus").command(Path("pa"), "x")


def test_environment_puts_the_library_folders_first() -> None:
    analyzer = PerfAnalyzer(Path("pa"), (Path("/opt/cudart/lib"),))
    env = analyzer.environment({"LD_LIBRARY_PATH": "/usr/local/lib", "HOME": "/root"})
    assert env["LD_LIBRARY_PATH"] == "/opt/cudart/lib:/usr/local/lib" and env["HOME"] == "/root"
    assert analyzer.environment({})["LD_LIBRARY_PATH"] == "/opt/cudart/lib"


def test_parse_ensemble_and_step_csv(tmp_path: Path) -> None:
    (tmp_path / "run.csv").write_text(ENSEMBLE_CSV)
    rows = perf.parse_csv(tmp_path / "run.csv")
    assert [r.concurrency for r in rows] == [1, 2]
    first = rows[0]
    assert first.throughput == pytest.approx(34.4785)
    assert (first.p50_us, first.p99_us, first.avg_us) == (27265, 82619, 29017)
    assert first.extra["response wait"] == "28947" and "Avg GPU Utilization" not in first.extra
    (tmp_path / "detector_v1.run.csv").write_text(STEP_CSV)
    step = perf.parse_csv(tmp_path / "detector_v1.run.csv")[0]
    assert step.server_us == 159 + 69 + 12830 + 410


def test_composing_files_are_found_by_model_name(tmp_path: Path) -> None:
    for name in ("run.csv", "preprocess_v1.run.csv", "detector_v1.run.csv", "my_model_v12.run.csv",
                 "other.csv", "detector_v1.other.csv"):
        (tmp_path / name).write_text(STEP_CSV)
    found = perf.composing_csv_files(tmp_path / "run.csv")
    assert set(found) == {"preprocess", "detector", "my_model"}
    assert found["my_model"].name == "my_model_v12.run.csv"


def test_request_count_rows_get_little_law_throughput() -> None:
    row = perf.PerfRow(throughput=20.0, avg_us=25_000.0)
    perf.closed_loop_throughput(row, LoadPoint(concurrency=2))
    assert row.throughput == pytest.approx(80.0) and row.extra["perf_analyzer_throughput"] == "20"
    rated = perf.PerfRow(throughput=20.0, avg_us=25_000.0)
    assert perf.closed_loop_throughput(rated, LoadPoint(request_rate=5)).throughput == 20.0


def _fake_perf_analyzer(tmp_path: Path, body: str) -> PerfAnalyzer:
    script = tmp_path / "perf_analyzer"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return PerfAnalyzer(script)


def test_run_point_collects_the_csv_files(tmp_path: Path) -> None:
    # a stand-in that writes what perf_analyzer writes: -f FILE and <model>_v1.FILE
    analyzer = _fake_perf_analyzer(tmp_path, f"""
while [ $# -gt 0 ]; do [ "$1" = -f ] && out="$2"; shift; done
printf '%s' '{ENSEMBLE_CSV}' > "$out"
printf '%s' '{STEP_CSV}' > "detector_v1.$out"
echo done
""")
    spec = PerfPoint(url="u", input_data=tmp_path / "in.json", point=LoadPoint(concurrency=2))
    result = perf.run_point(analyzer, spec, tmp_path / "out", "p")
    assert result.ok and result.stable and result.row.concurrency == 2
    assert set(result.steps) == {"detector"}
    assert (tmp_path / "out" / "p.log").read_text().count("$ ") == 1


def test_run_point_falls_back_to_a_request_count_when_unstable(tmp_path: Path) -> None:
    analyzer = _fake_perf_analyzer(tmp_path, f"""
case "$*" in *--request-count*) ;; *) echo "{perf.UNSTABLE_MARKER}."; exit 99;; esac
while [ $# -gt 0 ]; do [ "$1" = -f ] && out="$2"; shift; done
printf '%s' '{ENSEMBLE_CSV}' > "$out"
""")
    spec = PerfPoint(url="u", input_data=tmp_path / "in.json", point=LoadPoint(concurrency=2))
    result = perf.run_point(analyzer, spec, tmp_path, "p", fallback_request_count=77)
    assert result.ok and not result.stable
    assert result.command[result.command.index("--request-count") + 1] == "77"
    assert result.row.throughput == pytest.approx(2 / 0.051798)  # Little's law on the count run


def test_run_point_reports_a_failure_without_raising(tmp_path: Path) -> None:
    analyzer = _fake_perf_analyzer(tmp_path, "echo 'error: failed to connect'; exit 1\n")
    spec = PerfPoint(url="u", input_data=tmp_path / "in.json", point=LoadPoint(concurrency=1))
    result = perf.run_point(analyzer, spec, tmp_path, "p")
    assert not result.ok and "failed to connect" in result.error and "--request-count" not in result.command
    with pytest.raises(Exception, match="c1"):
        perf.check_ok([result])


def test_find_perf_analyzer_honours_the_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(perf.PERF_ANALYZER_ENV, str(tmp_path / "missing"))
    from omniface.errors import MissingDependency

    with pytest.raises(MissingDependency, match="omniface\\[bench\\]"):
        perf.find_perf_analyzer()
    analyzer = _fake_perf_analyzer(tmp_path, "echo hi\n")
    monkeypatch.setenv(perf.PERF_ANALYZER_ENV, str(analyzer.binary))
    assert perf.find_perf_analyzer(check_libraries=False).binary == analyzer.binary
