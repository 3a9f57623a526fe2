"""Rolling out a new model version in place without dropping requests, with the flags the
Helm chart gives tritonserver in poll mode (``modelRepository.controlMode=poll``).

The embedded tritonserver 2.51 serves a copy of the repository while a client sends
frames and a prober reads ``/v2/health/ready`` as the readiness probe would. A broken
version 2 of the detector appears first (Triton keeps serving version 1), then a good
one: Triton loads it, switches, unloads version 1. No request fails, readiness never
drops, and the answers stay the same (version 2 is the same graph).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from deploy_support import one, server_container

from omniface import contract

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

POLL_SECONDS = 1


def chart_flags(helm_render) -> list[str]:
    """tritonserver's flags in the chart's poll-mode Deployment, less what the embedded
    server sets itself (repository, ports)."""
    objects = helm_render({"modelRepository": {"controlMode": "poll", "pollSeconds": POLL_SECONDS}})
    args = server_container(one(objects, "Deployment"))["args"]
    flags = [a for a in args if a.split("=", 1)[0] not in
             ("--model-repository", "--http-port", "--grpc-port", "--metrics-port")]
    assert "--model-control-mode=poll" in flags and "--strict-readiness=false" in flags
    return flags


def detector_versions(server) -> dict[str, str]:
    request = urllib.request.Request(server.http_url + "/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return {m.get("version"): m.get("state") for m in json.loads(response.read()) if m["name"] == contract.DETECTOR}


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_new_detector_version_rolls_out_in_place(helm_render, model_repository: Path, tmp_path: Path,
                                                 astronaut: np.ndarray) -> None:
    pytest.importorskip("pytriton", reason="the embedded server needs the 'serve' extra (nvidia-pytriton)")
    from omniface.client import Client
    from omniface.server import EmbeddedServer, free_port

    repo = tmp_path / "repo"
    shutil.copytree(model_repository, repo, ignore=shutil.ignore_patterns("__pycache__"))
    server = EmbeddedServer(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                            metrics_port=free_port(), log_path=tmp_path / "tritonserver.log",
                            extra_args=chart_flags(helm_render))
    frame = np.ascontiguousarray(astronaut[::2, ::2])
    stop = threading.Event()
    results: list = []
    errors: list[str] = []
    readiness: set[int] = set()

    def send() -> None:
        with Client(server.grpc_url, timeout=30.0) as client:
            while not stop.is_set() and len(results) < 2000:
                try:
                    results.append(client.analyze(frame))
                except Exception as exc:  # counted, asserted below
                    errors.append(repr(exc))

    def probe() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(server.http_url + "/v2/health/ready", timeout=3) as response:
                    readiness.add(response.status)
            except urllib.error.HTTPError as exc:
                readiness.add(exc.code)
            except OSError:
                readiness.add(0)
            time.sleep(0.05)

    with server:
        with Client(server.grpc_url, timeout=30.0) as client:
            before = client.analyze(frame)
        threads = [threading.Thread(target=send), threading.Thread(target=probe)]
        for t in threads:
            t.start()
        try:
            version2 = repo / contract.DETECTOR / "2"
            version2.mkdir()
            shutil.copy2(repo / contract.DETECTOR / "1" / "model.py", version2 / "model.py")
            (version2 / "model.onnx").write_bytes(b"not an ONNX graph")  # a broken upload
            time.sleep(4 * POLL_SECONDS)
            assert detector_versions(server).get("1") == "READY"  # version 1 keeps serving
            served_during_broken = len(results)
            staged = version2 / "model.onnx.partial"
            shutil.copy2(repo / contract.DETECTOR / "1" / "model.onnx", staged)
            staged.replace(version2 / "model.onnx")  # the good graph, in one rename
            (version2 / "model.py").touch()
            wait_for(lambda: detector_versions(server) == {"2": "READY", "1": "UNAVAILABLE"}, 60,
                     "detector version 2 to replace version 1")
            switched = len(results)
            wait_for(lambda: len(results) >= switched + 10, 30, "requests on version 2")
        finally:
            stop.set()
            for t in threads:
                t.join(60)
    assert errors == []
    assert readiness == {200}, readiness
    assert served_during_broken > 0 and len(results) > switched
    assert all(r == before for r in results)
