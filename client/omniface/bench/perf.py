"""perf_analyzer: where it is, what it links, how to call it, and what its CSV files say.

The tritonclient 2.51 wheel installs ``perf_analyzer`` into the environment's ``bin``.
It links ``libb64.so.0d`` (Debian's ``libb64-0d`` package) and ``libcudart.so.12``
(even on CPU; the nvidia-cuda-runtime-cu12 wheel carries it under
``nvidia/cuda_runtime/lib``). ``find_perf_analyzer`` locates the binary and the library
folders and says how to fix what is missing; ``PerfAnalyzer.environment`` puts them on
``LD_LIBRARY_PATH`` for the subprocess only.

perf_analyzer accepts one concurrency value per run when a request count is given, and
one unstable point would abort a whole range, so the sweep runs it once per load point
(``PerfPoint``): time windows until stable, and when that fails on a noisy machine, a
fixed request count instead (the row is then marked ``stable=False``).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import resource
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omniface import contract
from omniface.errors import MissingDependency, ServerError

PERF_ANALYZER_ENV = "OMNIFACE_PERF_ANALYZER"
"""Path of a perf_analyzer to use instead of the one in this environment."""

B64_SONAME = "libb64.so.0d"
CUDART_SONAME = "libcudart.so.12"

UNSTABLE_MARKER = "Failed to obtain stable measurement"


@dataclass(frozen=True)
class PerfAnalyzer:
    """The binary and the folders its libraries are loaded from."""

    binary: Path
    library_dirs: tuple[Path, ...] = ()

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the library folders
        first on ``LD_LIBRARY_PATH``."""
        env = dict(os.environ if base is None else base)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [*map(str, self.library_dirs), *filter(None, [env.get("LD_LIBRARY_PATH", "")])]
        )
        return env

    def version(self, timeout: float = 30.0) -> str:
        """What ``perf_analyzer --version`` prints (first line)."""
        done = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True,
                              env=self.environment(), timeout=timeout)
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0] if text else ""


def find_perf_analyzer(check_libraries: bool = True) -> PerfAnalyzer:
    """The perf_analyzer of this environment (or ``$OMNIFACE_PERF_ANALYZER``), with the
    folder of libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel. Raises
    ``MissingDependency`` naming the fix when the binary or a library is missing."""
    from omniface.binaries import cuda_runtime_lib_dir, missing_shared_libraries, perf_analyzer_path

    override = os.environ.get(PERF_ANALYZER_ENV)
    binary = Path(override) if override else perf_analyzer_path()
    if binary is None or not binary.is_file():
        raise MissingDependency(
            "perf_analyzer not found" + (f" at ${PERF_ANALYZER_ENV}={override}" if override else "")
            + ": it ships in the tritonclient wheel; pip install 'omniface[bench]' (tritonclient[all]==2.51.0)"
        )
    cudart = cuda_runtime_lib_dir()
    perf = PerfAnalyzer(binary, (cudart,) if cudart else ())
    if check_libraries:
        missing = missing_shared_libraries(binary, perf.library_dirs) or []
        problems = []
        if any(lib.startswith("libb64") for lib in missing):
            problems.append(f"{B64_SONAME}: apt-get install libb64-0d (bash build/install.sh does it)")
        if any(lib.startswith("libcudart") for lib in missing):
            problems.append(f"{CUDART_SONAME}: pip install nvidia-cuda-runtime-cu12 (in the 'bench' extra)")
        others = [lib for lib in missing if not lib.startswith(("libb64", "libcudart"))]
        if others:
            problems.append(f"{', '.join(others)}: install the system packages that provide them")
        if problems:
            raise MissingDependency(f"perf_analyzer ({binary}) cannot load its libraries; " + "; ".join(problems))
    return perf


# --------------------------------------------------------------------------------------
# One load point.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPoint:
    """A closed-loop concurrency or an open-loop request rate (requests/s)."""

    concurrency: int | None = None
    request_rate: float | None = None

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("a load point is either a concurrency or a request rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.request_rate is not None and not self.request_rate > 0:
            raise ValueError(f"request rate must be > 0, got {self.request_rate}")

    @property
    def label(self) -> str:
        return f"c{self.concurrency}" if self.concurrency is not None else f"r{self.request_rate:g}"

    def arguments(self) -> list[str]:
        if self.concurrency is not None:
            return ["--concurrency-range", str(self.concurrency)]
        return ["--request-rate-range", f"{self.request_rate:g}"]


@dataclass(frozen=True)
class Measurement:
    """How perf_analyzer measures a point: time windows of ``interval_ms`` until
    ``stability_percent`` holds over 3 windows (at most ``max_trials``), or, when
    ``request_count`` is set, exactly that many requests (no stability check)."""

    interval_ms: int = 3000
    stability_percent: int = 15
    max_trials: int = 6
    request_count: int | None = None

    def arguments(self) -> list[str]:
        if self.request_count:
            return ["--request-count", str(self.request_count)]
        return ["--measurement-interval", str(self.interval_ms),
                "--stability-percentage", str(self.stability_percent),
                "--max-trials", str(self.max_trials)]


DEFAULT_OUTPUT_SHM_BYTES = 4 * 1024 * 1024
"""Per-output shared-memory region with ``--shared-memory system``: the largest output
(64 faces x the widest attribute) is far below this."""


@dataclass(frozen=True)
class PerfPoint:
    """Everything one perf_analyzer run needs."""

    url: str
    input_data: Path
    point: LoadPoint
    model: str = contract.FACE_ANALYSIS
    protocol: str = "grpc"
    shared_memory: str = "none"
    output_shared_memory_size: int = DEFAULT_OUTPUT_SHM_BYTES
    measurement: Measurement = field(default_factory=Measurement)
    percentile: int | None = None
    extra_args: tuple[str, ...] = ()

    def command(self, binary: Path, csv_name: str) -> list[str]:
        if self.shared_memory not in ("none", "system", "cuda"):
            raise ValueError(f"shared_memory must be none, system or cuda, got {self.shared_memory!r}")
        cmd = [
            str(binary), "-m", self.model, "-u", self.url, "-i", self.protocol,
            "--input-data", str(self.input_data),
            *self.point.arguments(), *self.measurement.arguments(),
            "-f", csv_name, "--verbose-csv",
        ]
        if self.shared_memory != "none":
            cmd += ["--shared-memory", self.shared_memory,
                    "--output-shared-memory-size", str(self.output_shared_memory_size)]
        if self.percentile:
            cmd += ["--percentile", str(self.percentile)]
        return cmd + list(self.extra_args)


# --------------------------------------------------------------------------------------
# CSV parsing.
# --------------------------------------------------------------------------------------

COLUMN_FIELDS: dict[str, str] = {
    "Concurrency": "concurrency",
    "Request Rate": "request_rate",
    "Inferences/Second": "throughput",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
    "Client Recv": "client_recv_us",
    "p50 latency": "p50_us",
    "p90 latency": "p90_us",
    "p95 latency": "p95_us",
    "p99 latency": "p99_us",
    "Avg latency": "avg_us",
}
"""perf_analyzer 2.51's CSV headers -> ``PerfRow`` fields (times in microseconds)."""


@dataclass
class PerfRow:
    """One row of a perf_analyzer CSV (the client's view, or one composing model's)."""

    throughput: float
    concurrency: int | None = None
    request_rate: float | None = None
    client_send_us: float | None = None
    network_us: float | None = None
    server_queue_us: float | None = None
    server_compute_input_us: float | None = None
    server_compute_infer_us: float | None = None
    server_compute_output_us: float | None = None
    client_recv_us: float | None = None
    p50_us: float | None = None
    p90_us: float | None = None
    p95_us: float | None = None
    p99_us: float | None = None
    avg_us: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def server_us(self) -> float:
        """Queue + compute (input, infer, output): a composing model's time per request."""
        return sum(v or 0.0 for v in (self.server_queue_us, self.server_compute_input_us,
                                      self.server_compute_infer_us, self.server_compute_output_us))

    def to_dict(self) -> dict:
        return asdict(self)


def _number(text: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_csv(path: Path) -> list[PerfRow]:
    """The rows of one perf_analyzer CSV file (``-f``, or a composing model's file)."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = []
        for record in reader:
            values: dict = {}
            extra: dict[str, str] = {}
            for column, text in record.items():
                if column is None:
                    continue
                name = COLUMN_FIELDS.get(column.strip())
                if name is None:
                    if text not in (None, ""):
                        extra[column.strip()] = text
                    continue
                number = _number(text)
                if name == "concurrency" and number is not None:
                    number = int(number)
                values[name] = number
            if values.get("throughput") is None:
                raise ValueError(f"{path}: a row without Inferences/Second: {record}")
            rows.append(PerfRow(extra=extra, **values))
    return rows


def composing_csv_files(csv_path: Path) -> dict[str, Path]:
    """The composing models' files perf_analyzer writes next to an ensemble's ``-f`` file
    (``<model>_v<version>.<name>``), by model name."""
    csv_path = Path(csv_path)
    found: dict[str, Path] = {}
    for candidate in sorted(csv_path.parent.glob(f"*_v*.{csv_path.name}")):
        stem = candidate.name[: -len(csv_path.name) - 1]  # "<model>_v<version>"
        model, _, version = stem.rpartition("_v")
        if model and version.isdigit():
            found[model] = candidate
    return found


# --------------------------------------------------------------------------------------
# Running one point.
# --------------------------------------------------------------------------------------


@dataclass
class PointResult:
    """One load point: the ensemble's row, each composing model's row, how it was measured."""

    point: LoadPoint
    row: PerfRow | None
    steps: dict[str, PerfRow]
    stable: bool
    command: list[str]
    csv_path: Path | None
    error: str | None = None
    server_requests: int | None = None
    server_cpu_ms: float | None = None
    client_cpu_s: float | None = None
    client_cpu_ms: float | None = None
    """Requests the server completed during the whole perf_analyzer run, and the CPU
    time its process tree spent per request meanwhile (when the sweep knows the pid);
    perf_analyzer's own CPU time (the load generator shares the cores), in all and per
    request."""

    @property
    def ok(self) -> bool:
        return self.row is not None and self.error is None

    def to_dict(self) -> dict:
        return {
            "point": asdict(self.point), "stable": self.stable, "error": self.error,
            "server_requests": self.server_requests, "server_cpu_ms": self.server_cpu_ms,
            "client_cpu_ms": self.client_cpu_ms,
            "command": self.command, "csv": str(self.csv_path) if self.csv_path else None,
            "row": self.row.to_dict() if self.row else None,
            "steps": {name: row.to_dict() for name, row in self.steps.items()},
        }


def run_point(
    perf: PerfAnalyzer,
    spec: PerfPoint,
    out_dir: Path,
    name: str,
    timeout: float = 300.0,
    fallback_request_count: int | None = None,
) -> PointResult:
    """Run perf_analyzer for one point, writing ``<name>.csv`` (and the composing
    models' files) and ``<name>.log`` under ``out_dir``. An unstable time-windows
    measurement is repeated with ``--request-count fallback_request_count`` (default:
    max(60, 20 x concurrency)) and flagged ``stable=False``. Never raises for a failed
    run: the result carries the error and the log's tail."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_name = f"{name}.csv"
    attempts = [spec]
    if not spec.measurement.request_count:
        count = fallback_request_count or max(60, 20 * (spec.point.concurrency or int(spec.point.request_rate or 1)))
        attempts.append(dataclasses.replace(spec, measurement=Measurement(request_count=count)))
    error = None
    command: list[str] = []
    for attempt_index, attempt in enumerate(attempts):
        for stale in [out_dir / csv_name, *composing_csv_files(out_dir / csv_name).values()]:
            stale.unlink(missing_ok=True)
        command = attempt.command(perf.binary, csv_name)
        log_path = out_dir / f"{name}.log"
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            done = subprocess.run(command, cwd=out_dir, env=perf.environment(), capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            output = done.stdout + done.stderr
            returncode = done.returncode
        except subprocess.TimeoutExpired as exc:
            output = f"{exc.stdout or ''}{exc.stderr or ''}\nperf_analyzer ran past {timeout:.0f} s"
            returncode = -1
        with open(log_path, "a") as log:
            log.write(f"$ {' '.join(command)}\n{output}\n")
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu = (children_after.ru_utime + children_after.ru_stime
                      - children_before.ru_utime - children_before.ru_stime)
        csv_path = out_dir / csv_name
        if returncode == 0 and csv_path.is_file():
            rows = parse_csv(csv_path)
            steps = {model: parse_csv(path)[-1] for model, path in composing_csv_files(csv_path).items()}
            if attempt.measurement.request_count and rows:
                closed_loop_throughput(rows[-1], attempt.point)
            result = PointResult(spec.point, rows[-1] if rows else None, steps, attempt_index == 0, command, csv_path,
                                 None if rows else "perf_analyzer wrote an empty CSV")
            result.client_cpu_s = client_cpu
            return result
        tail = "\n".join(output.strip().splitlines()[-8:])
        error = f"perf_analyzer exited with {returncode}: {tail}"
        if UNSTABLE_MARKER not in output:
            break  # a real failure: the fallback would fail the same way
    return PointResult(spec.point, None, {}, False, command, None, error)


def closed_loop_throughput(row: PerfRow, point: LoadPoint) -> PerfRow:
    """Correct a ``--request-count`` row's throughput in place.

    In request-count mode perf_analyzer 2.51 divides the count by a window that it ends
    on a whole-second poll, so short runs read low (60 requests in 2.1 s read as
    20/s). For a closed loop, Little's law gives the throughput exactly from the
    concurrency and the mean latency, which it measures per request; perf_analyzer's
    figure is kept in ``extra``."""
    if point.concurrency is not None and row.avg_us:
        row.extra["perf_analyzer_throughput"] = f"{row.throughput:g}"
        row.throughput = point.concurrency / (row.avg_us / 1e6)
    return row


def check_ok(results: Iterable[PointResult]) -> None:
    """Raise ``ServerError`` with the first failure's message when any point failed."""
    for result in results:
        if not result.ok:
            raise ServerError(f"perf_analyzer failed at {result.point.label}: {result.error}")


def points(concurrency: Sequence[int] = (), request_rates: Sequence[float] = ()) -> list[LoadPoint]:
    """Load points in order: concurrencies, then request rates."""
    return [LoadPoint(concurrency=c) for c in concurrency] + [LoadPoint(request_rate=r) for r in request_rates]
