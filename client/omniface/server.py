"""The embedded Triton server: the real ``tritonserver`` 2.51 from the nvidia-pytriton wheel.

The wheel carries the binary, the python backend and per-Python backend stubs, but not a
ready-to-run layout; ``prepare_server_dir`` makes a work copy with the stub for this
Python copied into ``backends/python/``. ``EmbeddedServer`` starts the binary on
loopback ports with ``LD_LIBRARY_PATH`` on the wheel's libraries, waits until the server
and every model are ready, and stops the whole process group (server and stubs) on exit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omniface import repository
from omniface.errors import MissingDependency, ServerError, ServerUnavailable

TRITON_VERSION = "2.51.0"
CACHE_DIR_ENV = "OMNIFACE_CACHE"


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the wheel's server lie."""

    package_dir: Path  # .../site-packages/pytriton/tritonserver
    libs_dir: Path  # .../site-packages/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.package_dir / "bin" / "tritonserver"

    def stub(self, python: str = f"{sys.version_info.major}.{sys.version_info.minor}") -> Path:
        return self.package_dir / "python_backend_stubs" / python / "triton_python_backend_stub"


def find_triton() -> TritonInstall:
    """Locate the tritonserver inside the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            "the embedded Triton server comes with nvidia-pytriton; install it with: pip install 'omniface[serve]'"
        )
    package_dir = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    install = TritonInstall(package_dir, package_dir.parent.parent / "nvidia_pytriton.libs")
    if not install.binary.is_file():
        raise MissingDependency(f"{install.binary} is missing: reinstall nvidia-pytriton==0.7.0")
    return install


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "omniface"))


def prepare_server_dir(install: TritonInstall | None = None, work_dir: Path | None = None) -> Path:
    """A runnable copy of the wheel's server (bin/ and backends/ with the python stub).

    Copied once per Triton version and Python; later calls reuse it."""
    install = install or find_triton()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.stub(python)
    if not stub.is_file():
        raise MissingDependency(f"nvidia-pytriton has no python backend stub for Python {python} ({stub})")
    work_dir = work_dir or cache_dir() / f"tritonserver-{TRITON_VERSION}-py{python}"
    marker = work_dir / ".ready"
    if marker.is_file() and marker.read_text() == str(install.package_dir):
        return work_dir
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=work_dir.parent if work_dir.parent.exists() else None))
    try:
        shutil.copytree(install.package_dir / "bin", staging / "bin")
        shutil.copytree(install.package_dir / "backends", staging / "backends",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, staging / "backends" / "python" / stub.name)
        (staging / ".ready").write_text(str(install.package_dir))
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, work_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return work_dir


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for tests and parallel servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def site_directories() -> list[str]:
    """Site directories the python-backend stub must see to import omniface and its
    dependencies (this interpreter's, plus the folder holding the omniface package)."""
    paths = sysconfig.get_paths()
    package_parent = str(Path(__file__).resolve().parent.parent)
    ordered = [paths["purelib"], paths["platlib"], package_parent]
    return list(dict.fromkeys(ordered))


@dataclass
class EmbeddedServer:
    """A real tritonserver on loopback. Use as a context manager:

    >>> with EmbeddedServer() as server:
    ...     client = Client(server.grpc_url)

    ``model_repository`` is a folder or any location tritonserver reads itself, such as
    ``s3://host:port/bucket/path`` (credentials from ``AWS_*`` variables, e.g. in
    ``env``); ``env`` adds variables to the server's environment.
    """

    model_repository: Path | str | None = None
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    log_path: Path | None = None
    extra_args: Sequence[str] = ()
    startup_timeout: float = 180.0
    env: Mapping[str, str] = field(default_factory=dict)
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _log_file: object = field(default=None, init=False, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def command(self, server_dir: Path) -> list[str]:
        repo = self.model_repository or repository.default_repository_path()
        return [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={repo}",
            f"--backend-directory={server_dir / 'backends'}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            "--exit-on-error=true", "--strict-readiness=true",
            # The python backend grows its shared-memory arena on demand; large steps
            # keep an 8k frame from needing hundreds of growth rounds.
            "--backend-config=python,shm-default-byte-size=16777216",
            "--backend-config=python,shm-growth-byte-size=67108864",
            *self.extra_args,
        ]

    def environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(install.libs_dir), env.get("LD_LIBRARY_PATH", "")) if p
        )
        env[repository.PYTHONPATH_ENV] = os.pathsep.join(site_directories())
        env.setdefault("OMP_NUM_THREADS", "1")
        env.update(self.env)
        return env

    def start(self) -> "EmbeddedServer":
        """Start the server and return once it and all its models are ready."""
        install = find_triton()
        server_dir = prepare_server_dir(install)
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self._log_file = open(self.log_path, "wb")
        self._process = subprocess.Popen(
            self.command(server_dir),
            env=self.environment(install),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() reaps the stubs too
        )
        try:
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not Path(self.log_path).exists():
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except (urllib.error.URLError, OSError):
            return 0, b""

    def model_states(self) -> dict[str, str]:
        """Model name -> state (READY, UNAVAILABLE, ...) from the repository index."""
        try:
            request = urllib.request.Request(self.http_url + "/v2/repository/index", data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=2) as response:
                return {m["name"]: m.get("state", "") for m in json.loads(response.read())}
        except (urllib.error.URLError, OSError, ValueError):
            return {}

    def wait_ready(self, timeout: float) -> None:
        """Block until /v2/health/ready answers 200 and every model is READY."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {None if self._process is None else self._process.returncode} "
                    f"before it was ready; its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            status, _ = self._get("/v2/health/ready")
            if status == 200:
                states = self.model_states()
                if states and all(s == "READY" for s in states.values()):
                    return
            time.sleep(0.25)
        raise ServerUnavailable(
            f"tritonserver was not ready after {timeout:.0f} s; models: {self.model_states()}; "
            f"log ({self.log_path}) ends with:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever is left."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(10)
        if process is not None:
            _signal_group(process.pid, signal.SIGKILL)  # stubs that outlived the server
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_serve_command(
    model_repository: str | None,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    host: str = "127.0.0.1",
    extra_args: Iterable[str] = (),
) -> int:
    """``omniface serve``: start, print the endpoints, serve until Ctrl-C or SIGTERM."""
    server = EmbeddedServer(
        # a folder, or a location tritonserver reads itself (s3://, gs://, as://)
        model_repository=(model_repository if "://" in model_repository else Path(model_repository))
        if model_repository else None,
        grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port, host=host,
        extra_args=tuple(extra_args),
    )
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        print(f"omniface: starting tritonserver {TRITON_VERSION} on {server.model_repository or repository.default_repository_path()} ...", flush=True)
        server.start()
        print(f"omniface: ready in {time.monotonic() - started:.1f} s", flush=True)
        print(f"  gRPC     {server.grpc_url}", flush=True)
        print(f"  HTTP     {server.http_url}", flush=True)
        print(f"  metrics  {server.metrics_url}", flush=True)
        print(f"  log      {server.log_path}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            if server._process is None or server._process.poll() is not None:
                print(f"omniface: tritonserver exited unexpectedly; log ends with:\n{server.log_tail()}", file=sys.stderr)
                return 1
        print("omniface: stopping ...", flush=True)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
