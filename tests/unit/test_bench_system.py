"""/proc sampling, Triton metrics parsing and pausing a neighbour (no server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omniface.bench import system

METRICS = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="face_analysis",version="1"} 120
nv_inference_request_success{model="detector",version="1"} 118
nv_inference_request_failure{model="face_analysis",reason="BACKEND",version="1"} 2
nv_inference_request_failure{model="face_analysis",reason="REJECTED",version="1"} 1
nv_inference_count{model="face_analysis",version="1"} 120
nv_cpu_utilization 0.5
"""


def test_parse_metrics_sums_over_labels() -> None:
    metrics = system.parse_metrics(METRICS)
    assert system.request_counts(metrics, "face_analysis") == (120, 3)
    assert system.request_counts(metrics, "detector") == (118, 0)
    assert system.request_counts(metrics, "nothing") == (0, 0)


def test_process_tree_and_memory_of_a_real_tree() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(32 << 20); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while child.pid not in system.process_tree(os.getpid()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.pid in system.process_tree(os.getpid())
        time.sleep(0.5)
        sample = system.sample_memory(child.pid)
        assert sample.processes == 1 and sample.rss_kib > 30 * 1024
        assert system.sample_memory(os.getpid()).rss_kib > sample.rss_kib
    finally:
        child.kill()
        child.wait()


def test_parent_parses_a_comm_with_spaces(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text("42 (a b) c)) S 7 42 42 0 -1\n")
    assert system._parent(42, tmp_path) == 7
    assert system.children(7, tmp_path) == [42]  # no task/ folder: found by scanning stat
    assert system.sample_memory(99999, proc=tmp_path).processes == 0


def test_paused_stops_and_continues(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        pid_file = tmp_path / "job.pid"
        pid_file.write_text(f"{child.pid}\n")

        def state() -> str:
            stat = Path(f"/proc/{child.pid}/stat").read_text()
            return stat[stat.rindex(")") + 2]

        def resumed() -> bool:  # SIGCONT, like SIGSTOP, lands asynchronously
            deadline = time.monotonic() + 2
            while state() == "T" and time.monotonic() < deadline:
                time.sleep(0.005)
            return state() in "SR"

        with system.paused(pid_file) as pid:
            assert pid == child.pid and state() == "T"
        assert resumed()
        with pytest.raises(RuntimeError):
            with system.paused(pid_file):
                raise RuntimeError("a failed benchmark")
        assert resumed()  # continued even on failure
    finally:
        child.kill()
        child.wait()
    with system.paused(tmp_path / "missing.pid") as pid:
        assert pid is None
    with system.paused(None) as pid:
        assert pid is None


def test_cpu_seconds_grows_with_work() -> None:
    before = system.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert system.cpu_seconds(os.getpid()) - before >= 0.2
