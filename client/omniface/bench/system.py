"""What the benchmarks read from the machine: a process tree's memory from ``/proc``,
Triton's Prometheus counters, and a way to pause a noisy neighbour while measuring."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def children(pid: int, proc: Path = PROC) -> list[int]:
    """Direct children of ``pid`` (from every thread's ``children`` file, else by
    scanning ``stat`` for the parent pid)."""
    task_dir = proc / str(pid) / "task"
    found: set[int] = set()
    try:
        for task in task_dir.iterdir():
            try:
                found.update(int(p) for p in (task / "children").read_text().split())
            except OSError:
                continue
        return sorted(found)
    except OSError:
        pass
    for entry in proc.iterdir():
        if entry.name.isdigit() and _parent(int(entry.name), proc) == pid:
            found.add(int(entry.name))
    return sorted(found)


def _parent(pid: int, proc: Path = PROC) -> int | None:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # pid (comm) state ppid ...; comm may hold spaces and parentheses
    return int(stat[stat.rindex(")") + 2:].split()[1])


def process_tree(pid: int, proc: Path = PROC) -> list[int]:
    """``pid`` and all its descendants (tritonserver and its python-backend stubs)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current in tree:
            continue
        tree.append(current)
        todo.extend(children(current, proc))
    return tree


def _status_kib(pid: int, key: str, proc: Path = PROC) -> int | None:
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pss_kib(pid: int, proc: Path = PROC) -> int | None:
    try:
        for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class MemorySample:
    """Resident memory of a process tree at one moment (KiB). ``rss_kib`` sums each
    process's VmRSS (shared pages counted once per process); ``pss_kib`` shares them out."""

    t: float
    processes: int
    rss_kib: int
    pss_kib: int | None

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024


def sample_memory(pid: int, t: float | None = None, proc: Path = PROC) -> MemorySample:
    """RSS (and PSS where the kernel has ``smaps_rollup``) of ``pid`` and its descendants."""
    pids = process_tree(pid, proc)
    rss = [_status_kib(p, "VmRSS", proc) for p in pids]
    pss = [_pss_kib(p, proc) for p in pids]
    alive = [r for r in rss if r is not None]
    pss_values = [p for p in pss if p is not None]
    return MemorySample(
        t=time.monotonic() if t is None else t,
        processes=len(alive),
        rss_kib=sum(alive),
        pss_kib=sum(pss_values) if pss_values else None,
    )


def cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """User + system CPU time (s) used so far by ``pid`` and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in process_tree(pid, proc):
        try:
            stat = (proc / str(member) / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


# --------------------------------------------------------------------------------------
# Triton's metrics endpoint.
# --------------------------------------------------------------------------------------

_METRIC = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)')


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """``{(metric name, model): value}`` of the per-model counters in Prometheus text."""
    values: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = _METRIC.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        model = labels.get("model")
        if model is None:
            continue
        try:
            values[(match["name"], model)] = values.get((match["name"], model), 0.0) + float(match["value"])
        except ValueError:
            continue
    return values


def read_metrics(metrics_url: str, timeout: float = 5.0) -> dict[tuple[str, str], float]:
    """Scrape ``metrics_url`` (``http://127.0.0.1:8002/metrics``)."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as response:
        return parse_metrics(response.read().decode("utf-8", "replace"))


def request_counts(metrics: dict[tuple[str, str], float], model: str) -> tuple[int, int]:
    """(successful, failed) inference requests of ``model`` since the server started."""
    return (int(metrics.get(("nv_inference_request_success", model), 0)),
            int(metrics.get(("nv_inference_request_failure", model), 0)))


# --------------------------------------------------------------------------------------
# Quiet machine.
# --------------------------------------------------------------------------------------


def _process_state(pid: int) -> str | None:
    """The one-letter state of /proc/PID/stat (R, S, T, Z, ...), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def _wait_stopped(pids: list[int], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_process_state(p) not in (None, "T", "t", "Z") for p in pids):
        time.sleep(0.005)


@contextlib.contextmanager
def paused(pid_file: str | os.PathLike | None) -> Iterator[int | None]:
    """While the block runs, SIGSTOP the process whose pid ``pid_file`` holds (a
    background job sharing the cores) and its descendants, and SIGCONT them afterwards,
    whatever happens. Nothing happens without a file, or when the pid is gone."""
    pid = None
    if pid_file:
        try:
            pid = int(Path(pid_file).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
    stopped: list[int] = []
    try:
        if pid is not None:
            for member in process_tree(pid):  # its workers too (data loaders, ...)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(member, signal.SIGSTOP)
                    stopped.append(member)
            _wait_stopped(stopped)  # SIGSTOP lands asynchronously: measure only once it has
        yield pid if stopped else None
    finally:
        for member in reversed(stopped):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signal.SIGCONT)
