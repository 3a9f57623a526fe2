"""`omniface serve` as a user runs it: it prints the endpoints once every model is ready
and, on SIGTERM or Ctrl-C, stops the server and its python-backend stubs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

pytest.importorskip("pytriton", reason="the embedded server needs the 'serve' extra (nvidia-pytriton)")


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (tritonserver and its python-backend stubs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(("stop_signal", "extra"), [(signal.SIGTERM, ()), (signal.SIGINT, ()), (signal.SIGTERM, ("--fuse",))],
                         ids=["sigterm", "sigint", "fused-sigterm"])
def test_serve_prints_endpoints_and_stops_cleanly(stop_signal: int, extra: tuple, tmp_path: Path) -> None:
    from omniface import Client
    from omniface.server import free_port

    grpc, http, metrics = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "omniface.cli", "serve", "--grpc-port", str(grpc), "--http-port", str(http),
         "--metrics-port", str(metrics), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        output = "".join(lines)
        assert f"127.0.0.1:{grpc}" in output and f":{http}" in output and f":{metrics}/metrics" in output, output
        with Client(f"127.0.0.1:{grpc}") as client:
            assert client.is_ready()
            if extra:  # the fused repository answers through the same ensemble
                result = client.analyze(np.zeros((48, 64, 3), np.uint8))
                assert (result.width, result.height) == (64, 48)
        server_pids = descendants(process.pid)
        assert len(server_pids) >= 2, "expected tritonserver and its python-backend stubs"
        process.send_signal(stop_signal)
        assert process.wait(60) == 0
        time.sleep(0.5)
        assert [p for p in server_pids if alive(p)] == [], "processes left behind after stop"
    finally:
        if process.poll() is None:  # a failed assertion: still leave nothing behind
            leftovers = descendants(process.pid)
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            for pid in leftovers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
