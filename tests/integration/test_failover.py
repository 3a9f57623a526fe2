"""Several replicas: two embedded tritonservers on loopback and the SDK balancing over both.

The client takes turns over the endpoints; when one replica stops in the middle of a
run (gracefully, as Kubernetes stops a pod, or killed) its requests go to the other and
none is lost: every result equals the single-server reference. The replicas keep every
detector location (score threshold 0, 8 faces a frame), so each result carries boxes,
landmarks and attributes whatever the weights, and a lost or misplaced one would show.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from omniface import contract, repository
from omniface.aio import AsyncClient
from omniface.client import Client
from omniface.types import FrameResult

pytestmark = pytest.mark.integration

REQUESTS = 200


@pytest.fixture(scope="module")
def eight_faces_repository(model_repository, tmp_path_factory: pytest.TempPathFactory):
    models = dict(contract.MODELS)
    post = models[contract.POSTPROCESS]
    models[contract.POSTPROCESS] = dataclasses.replace(
        post, parameters={**post.parameters, "score_threshold": "0.0", "max_faces": "8"})
    out = tmp_path_factory.mktemp("eight-faces") / "repo"
    repository.render_repository(out, models=models)
    for graph in (contract.DETECTOR, contract.ATTRIBUTES):
        shutil.copy2(model_repository / graph / "1" / repository.ONNX_FILENAME, out / graph / "1")
    return out


def _server(tmp_path_factory: pytest.TempPathFactory, model_repository, name: str):
    pytest.importorskip("pytriton", reason="the embedded server needs the 'serve' extra (nvidia-pytriton)")
    from omniface.server import EmbeddedServer, free_port

    return EmbeddedServer(
        model_repository=model_repository, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
        log_path=tmp_path_factory.mktemp(name) / "tritonserver.log",
    )


@pytest.fixture(scope="module")
def replicas(eight_faces_repository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list]:
    servers = [_server(tmp_path_factory, eight_faces_repository, f"replica-{i}") for i in range(2)]
    errors: list[BaseException] = []

    def start(server) -> None:
        try:
            server.start()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def frames(astronaut: np.ndarray) -> list[np.ndarray]:
    """Small, distinct frames (the detector letterboxes every frame to 640x480 anyway)."""
    return [np.ascontiguousarray(astronaut[::2, ::2]), np.ascontiguousarray(astronaut[100:400:2, 50:450:2]),
            np.ascontiguousarray(astronaut[::-3, ::3])]


@pytest.fixture(scope="module")
def references(replicas, frames) -> list[FrameResult]:
    with Client(replicas[0].grpc_url, timeout=60.0) as single:
        results = [single.analyze(f) for f in frames]
    assert all(len(r.faces) == 8 and r.faces[0].age is not None for r in results)
    assert len({r.faces[0].box for r in results}) == len(frames)  # distinct answers per frame
    return results


def served(server) -> int:
    """``face_analysis`` requests the server answered, from its Prometheus metrics."""
    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(r'^nv_inference_request_success\{model="face_analysis",version="1"\} (\d+)', text, re.M)
    return int(match.group(1)) if match else 0


def settled(server) -> int:
    """``served`` once it stops moving (Triton counts a request just after answering it)."""
    last = served(server)
    for _ in range(20):
        time.sleep(0.1)
        now = served(server)
        if now == last:
            return now
        last = now
    return last


class Feed:
    """Frames for ``analyze_batch``, consumed lazily; ``reached`` is set once ``at`` of
    them have been handed out, i.e. mid-run."""

    def __init__(self, frames: list[np.ndarray], count: int, at: int) -> None:
        self.frames, self.count, self.at = frames, count, at
        self.reached = threading.Event()

    def __iter__(self):
        for i in range(self.count):
            if i == self.at:
                self.reached.set()
            yield self.frames[i % len(self.frames)]


def test_requests_are_spread_over_the_replicas(replicas, frames, references) -> None:
    before = [settled(s) for s in replicas]
    with Client([s.grpc_url for s in replicas], timeout=60.0) as client:
        assert client.is_ready()
        results = client.analyze_batch([frames[i % 3] for i in range(30)], concurrency=2)
    assert results == [references[i % 3] for i in range(30)]
    gained = [settled(s) - b for s, b in zip(replicas, before)]
    assert sum(gained) == 30 and min(gained) >= 10, gained  # round-robin: both took a share


def test_a_replica_stopping_mid_run_loses_no_request(replicas, frames, references) -> None:
    survivor, leaving = replicas
    feed = Feed(frames, REQUESTS, at=60)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            with Client([survivor.grpc_url, leaving.grpc_url], timeout=60.0, backoff=0.05) as client:
                outcome["results"] = client.analyze_batch(feed, concurrency=4)
        except BaseException as exc:
            outcome["error"] = exc

    before = settled(survivor)
    worker = threading.Thread(target=run)
    worker.start()
    assert feed.reached.wait(60), "the run did not get going"
    leaving_served = served(leaving)
    leaving.stop()  # SIGTERM: Triton finishes what is in flight, refuses the rest, exits
    worker.join(120)
    assert not worker.is_alive()
    assert "error" not in outcome, outcome.get("error")
    results = outcome["results"]
    assert len(results) == REQUESTS
    assert results == [references[i % len(frames)] for i in range(REQUESTS)]
    assert leaving_served > 0  # it did take part before it left
    assert settled(survivor) - before >= REQUESTS - leaving_served - 4  # and the survivor took over the rest


async def test_a_replica_killed_mid_run_async_client(replicas, frames, references) -> None:
    import asyncio
    import os
    import signal

    survivor, victim = replicas
    if victim.pid is None:  # the previous test stopped it: bring it back
        victim.start()
    feed = Feed(frames, REQUESTS // 2, at=30)
    async with AsyncClient([victim.grpc_url, survivor.grpc_url], timeout=60.0, backoff=0.05) as client:
        assert await client.is_ready()
        task = asyncio.ensure_future(client.analyze_batch(feed, concurrency=4))
        deadline = time.monotonic() + 60
        while not feed.reached.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert feed.reached.is_set(), "the run did not get going"
        os.killpg(victim.pid, signal.SIGKILL)  # a crash: in-flight requests die with the connection
        results = await asyncio.wait_for(task, 120)
    victim.stop()
    assert results == [references[i % len(frames)] for i in range(REQUESTS // 2)]
