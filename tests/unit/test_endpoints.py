"""Several endpoints and TLS settings: ``omniface._endpoints`` and the clients over fake replicas.

No server: each replica is a fake tritonclient that answers with its own frame width (so
a result tells which replica served it) or fails the way a stopping Triton does.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from omniface import _endpoints as endpoints
from omniface import contract
from omniface.errors import InvalidInput, ServerUnavailable, Timeout


def unavailable(message: str = "failed to connect to all addresses") -> InferenceServerException:
    return InferenceServerException(message, status="StatusCode.UNAVAILABLE")


STOPPING = unavailable("in ensemble 'face_analysis', Server is stopping, scheduler for model has stopped")
UNLOADED = InferenceServerException("Request for unknown model: 'face_analysis' has no available versions",
                                    status="StatusCode.NOT_FOUND")
BAD_INPUT = InferenceServerException("omniface: invalid input: cannot decode", status="StatusCode.INVALID_ARGUMENT")
DEADLINE = InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------------
# Parsing endpoint lists
# ----------------------------------------------------------------------------------


def urls_tls(eps: list[endpoints.Endpoint]) -> list[tuple[str, bool]]:
    return [(e.url, e.ssl) for e in eps]


def test_parse_one_and_many_endpoints() -> None:
    assert urls_tls(endpoints.parse_endpoints("127.0.0.1:8001")) == [("127.0.0.1:8001", False)]
    assert urls_tls(endpoints.parse_endpoints(["a:1", "grpcs://b:2"])) == [("a:1", False), ("b:2", True)]
    assert urls_tls(endpoints.parse_endpoints("a:1, b:2,grpc://c:3")) == [("a:1", False), ("b:2", False), ("c:3", False)]
    assert urls_tls(endpoints.parse_endpoints(("a:1", "b:2"), ssl=True)) == [("a:1", True), ("b:2", True)]


@pytest.mark.parametrize("bad", ["", [], ["a:1", "a:1"], "a:1,,b:2", ["http://a:8000"], 8001, b"a:1", [None]])
def test_parse_rejects_bad_endpoint_lists(bad) -> None:
    with pytest.raises(InvalidInput):
        endpoints.parse_endpoints(bad)


def test_cooldown_is_checked() -> None:
    for bad in (-1, "5", True, None):
        with pytest.raises(InvalidInput, match="endpoint_cooldown"):
            endpoints.check_cooldown(bad)
    assert endpoints.check_cooldown(0) == 0.0


# ----------------------------------------------------------------------------------
# The pool: round-robin, mark down, cooldown
# ----------------------------------------------------------------------------------


def pool_of(*urls: str, cooldown: float = 5.0) -> tuple[endpoints.EndpointPool, Clock]:
    clock = Clock()
    return endpoints.EndpointPool(endpoints.parse_endpoints(list(urls)), cooldown, clock=clock), clock


def test_round_robin_over_healthy_endpoints() -> None:
    pool, _ = pool_of("a:1", "b:2", "c:3")
    assert [pool.pick().url for _ in range(7)] == ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3", "a:1"]
    assert pool.urls == ("a:1", "b:2", "c:3") and len(pool) == 3
    assert pool.describe() == "any of a:1, b:2, c:3"


def test_a_down_endpoint_is_skipped_for_the_cooldown() -> None:
    pool, clock = pool_of("a:1", "b:2", cooldown=5.0)
    a, b = pool.endpoints
    pool.mark_down(b)
    assert not pool.is_up(b) and pool.is_up(a)
    assert [pool.pick().url for _ in range(4)] == ["a:1"] * 4
    clock.now += 5.0
    assert pool.is_up(b)
    assert {pool.pick().url for _ in range(4)} == {"a:1", "b:2"}


def test_when_all_are_down_the_first_to_come_back_is_tried() -> None:
    pool, clock = pool_of("a:1", "b:2", "c:3")
    a, b, c = pool.endpoints
    pool.mark_down(a)
    clock.now += 1
    pool.mark_down(c)
    clock.now += 1
    pool.mark_down(b)
    assert pool.pick() is a
    assert pool.pick(exclude=[a]) is c
    assert pool.pick(exclude=[a, b, c]) is None
    pool.mark_up(b)
    assert pool.pick() is b


def test_pool_is_thread_safe() -> None:
    pool, _ = pool_of("a:1", "b:2", "c:3", "d:4")
    picks: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(500):
            url = pool.pick().url
            with lock:
                picks.append(url)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {u: picks.count(u) for u in pool.urls} == {u: 500 for u in pool.urls}


# ----------------------------------------------------------------------------------
# One call's attempts
# ----------------------------------------------------------------------------------


def test_failover_is_immediate_then_rounds_back_off() -> None:
    pool, _ = pool_of("a:1", "b:2")
    attempts = pool.attempts(retries=2, backoff=0.1)
    first = attempts.first()
    assert attempts.failed(first, unavailable()) == 0.0  # the other endpoint, now
    second = attempts.next()
    assert second is not first
    assert attempts.where(second) == second.url
    assert attempts.failed(second, unavailable()) == pytest.approx(0.1)  # both failed: back off
    assert attempts.failed(attempts.next(), unavailable()) == 0.0
    assert attempts.failed(attempts.next(), unavailable()) == pytest.approx(0.2)
    last = attempts.next()
    assert attempts.failed(attempts.next(), unavailable()) == 0.0
    assert attempts.failed(last, unavailable()) is None  # retries spent
    assert attempts.where(last) == "any of a:1, b:2"


def test_single_endpoint_attempts_are_the_plain_retry() -> None:
    pool, _ = pool_of("a:1")
    attempts = pool.attempts(retries=3, backoff=0.2)
    endpoint = attempts.first()
    delays = []
    while (delay := attempts.failed(endpoint, unavailable())) is not None:
        delays.append(delay)
        assert attempts.next() is endpoint
    assert delays == pytest.approx([0.2, 0.4, 0.8])
    assert attempts.where(endpoint) == "a:1"


def test_what_fails_over_and_what_does_not() -> None:
    assert endpoints.is_failover(unavailable()) and endpoints.is_failover(STOPPING)
    assert endpoints.is_failover(UNLOADED)  # a replica shutting down unloads its models first
    for exc in (BAD_INPUT, DEADLINE, InferenceServerException("boom", status="StatusCode.INTERNAL"),
                unavailable("omniface: invalid input: too large")):
        assert not endpoints.is_failover(exc)
    pool, _ = pool_of("a:1", "b:2")
    attempts = pool.attempts(retries=3, backoff=0.0)
    a = attempts.first()
    assert attempts.failed(a, BAD_INPUT) is None
    assert pool.is_up(a)  # a refused input says nothing about the replica's health
    # a replica without the models is loading or leaving: fail over, and retry in rounds
    assert attempts.failed(a, UNLOADED) == 0.0
    assert attempts.failed(attempts.next(), UNLOADED) == 0.0  # backoff 0: the next round


def test_single_endpoint_rides_out_a_server_being_replaced() -> None:
    """Behind one Service URL: the old pod says "stopping", then "no available versions",
    then the connection lands on a new pod. Nothing reaches the caller."""
    from omniface.client import Client

    client = Client("127.0.0.1:1", backoff=0.0, retries=3)
    replica = Replica(101)
    client._triton.close()
    client._triton = replica
    client.analyze(FRAME)
    replica.failures = [STOPPING, UNLOADED, unavailable()]
    assert client.analyze(FRAME).width == 101
    replica.failures = [UNLOADED] * 4
    with pytest.raises(ServerUnavailable, match="not available"):
        client.analyze(FRAME)


def test_success_marks_the_endpoint_up() -> None:
    pool, _ = pool_of("a:1", "b:2")
    a, b = pool.endpoints
    pool.mark_down(a)
    pool.mark_down(b)
    attempts = pool.attempts(retries=1, backoff=0.0)
    endpoint = attempts.first()
    attempts.succeeded(endpoint)
    assert pool.is_up(endpoint)


# ----------------------------------------------------------------------------------
# TLS settings
# ----------------------------------------------------------------------------------


def test_tls_files_are_checked(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    tls = endpoints.parse_endpoints("h:1", ssl=True)
    plain = endpoints.parse_endpoints("h:1")
    assert endpoints.tls_files(tls, ca, None, None) == {
        "root_certificates": str(ca), "private_key": None, "certificate_chain": None}
    assert endpoints.tls_files(plain, None, None, None) == dict.fromkeys(
        ("root_certificates", "private_key", "certificate_chain"))
    with pytest.raises(InvalidInput, match="TLS is off"):
        endpoints.tls_files(plain, ca, None, None)
    with pytest.raises(InvalidInput, match="does not exist"):
        endpoints.tls_files(tls, tmp_path / "missing.pem", None, None)
    with pytest.raises(InvalidInput, match="both private_key and certificate_chain"):
        endpoints.tls_files(tls, ca, ca, None)
    assert endpoints.tls_files(endpoints.parse_endpoints(["a:1", "grpcs://b:2"]), ca, ca, ca)["private_key"] == str(ca)


# ----------------------------------------------------------------------------------
# The clients over fake replicas
# ----------------------------------------------------------------------------------


def outputs(width: int) -> dict[str, np.ndarray]:
    """A no-face ``face_analysis`` response whose frame width names the replica (a
    contract 1.0 ``frame_info``: the SDK reads those too)."""
    info = {"height": 10, "width": width, "scale": 1.0, "pad_x": 0.0, "pad_y": 0.0, "source_scale": 1.0}
    arrays = {
        contract.FACE_COUNT: np.array([0], np.int32),
        contract.FRAME_INFO: np.array([info[f] for f in contract.FRAME_INFO_FIELDS if f in info], np.float32),
        contract.FACE_BOXES: np.zeros((1, 4), np.float32),
        contract.FACE_SCORES: np.zeros((1,), np.float32),
        contract.FACE_LANDMARKS: np.zeros((1, contract.NUM_LANDMARKS, 2), np.float32),
    }
    for spec in contract.attribute_outputs():
        arrays[spec.name] = np.zeros((1, *spec.dims), np.float32)
    return arrays


class Result:
    def __init__(self, arrays: dict) -> None:
        self.arrays = arrays

    def as_numpy(self, name: str):
        return self.arrays.get(name)


class Replica:
    """A fake tritonclient for one replica: ``down`` makes it fail like a stopped Triton."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.down: InferenceServerException | None = None
        self.failures: list[InferenceServerException] = []
        self.infers = 0
        self.lock = threading.Lock()
        self.closed = False

    def _check(self) -> None:
        with self.lock:
            if self.failures:
                raise self.failures.pop(0)
        if self.down is not None:
            raise self.down

    def get_model_config(self, name, as_json=False, client_timeout=None):
        self._check()
        parameters = {contract.CONTRACT_VERSION_PARAMETER: contract.CONTRACT_VERSION,
                      "tasks": ",".join(contract.DEFAULT_TASKS)}
        return {"config": {"name": name, "parameters": {k: {"string_value": v} for k, v in parameters.items()}}}

    def infer(self, model_name, inputs, outputs=None, client_timeout=None, **_):
        self._check()
        with self.lock:
            self.infers += 1
        return Result(globals()["outputs"](self.width))

    def is_server_live(self, client_timeout=None):
        self._check()
        return True

    is_server_ready = is_server_live

    def is_model_ready(self, name, client_timeout=None):
        self._check()
        return True

    def close(self):
        self.closed = True


class AsyncReplica(Replica):
    async def get_model_config(self, *args, **kwargs):
        return Replica.get_model_config(self, *args, **kwargs)

    async def infer(self, *args, **kwargs):
        await asyncio.sleep(0)
        return Replica.infer(self, *args, **kwargs)

    async def is_server_live(self, client_timeout=None):
        return Replica.is_server_live(self, client_timeout)

    is_server_ready = is_server_live

    async def is_model_ready(self, name, client_timeout=None):
        return Replica.is_model_ready(self, name, client_timeout)

    async def close(self):
        Replica.close(self)


FRAME = np.zeros((10, 12, 3), np.uint8)


def two_replica_client(**kwargs):
    from omniface.client import Client

    client = Client(["127.0.0.1:1", "127.0.0.1:2"], backoff=0.0, **kwargs)
    replicas = {url: Replica(width) for url, width in zip(client.urls, (101, 202))}
    for url, replica in replicas.items():
        client._tritons[url].close()
        client._tritons[url] = replica
    return client, list(replicas.values())


def test_client_spreads_requests_round_robin() -> None:
    client, (a, b) = two_replica_client()
    widths = [client.analyze(FRAME).width for _ in range(10)]
    assert sorted(set(widths)) == [101, 202]
    assert a.infers == 5 and b.infers == 5
    assert client.url == "127.0.0.1:1,127.0.0.1:2" and client.urls == ("127.0.0.1:1", "127.0.0.1:2")
    assert "127.0.0.1:1,127.0.0.1:2" in repr(client)
    client.close()
    assert a.closed and b.closed


@pytest.mark.parametrize("failure", [unavailable(), STOPPING, UNLOADED])
def test_client_fails_over_and_loses_nothing(failure: InferenceServerException) -> None:
    client, (a, b) = two_replica_client(endpoint_cooldown=60.0)
    client.analyze(FRAME)  # config cached
    b.infers = 0
    b.down = failure
    results = client.analyze_batch([FRAME] * 40, concurrency=4)
    assert len(results) == 40 and {r.width for r in results} == {101}
    assert b.infers == 0
    assert client.is_ready()  # one replica is enough


def test_a_down_replica_is_not_retried_during_its_cooldown() -> None:
    client, (a, b) = two_replica_client(endpoint_cooldown=60.0)
    client.analyze(FRAME)
    b.infers = 0
    b.failures = [unavailable()]
    for _ in range(10):
        assert client.analyze(FRAME).width == 101
    assert b.failures == [] and b.infers == 0  # failed once, then skipped


def test_a_replica_comes_back_after_its_cooldown() -> None:
    client, (a, b) = two_replica_client(endpoint_cooldown=0.0)
    client.analyze(FRAME)
    b.failures = [unavailable()]
    widths = [client.analyze(FRAME).width for _ in range(6)]
    assert widths.count(202) >= 2


def test_client_all_down_names_every_endpoint_and_retries_in_rounds() -> None:
    client, (a, b) = two_replica_client(retries=2)
    a.down = b.down = unavailable()
    with pytest.raises(ServerUnavailable, match=r"any of 127\.0\.0\.1:1, 127\.0\.0\.1:2") as info:
        client.analyze(FRAME)
    assert "omniface serve" in str(info.value)
    assert not client.is_ready()
    a.down = None  # one comes back: the next call finds it
    assert client.analyze(FRAME).width == 101


def test_client_does_not_fail_over_bad_input_or_timeouts() -> None:
    client, (a, b) = two_replica_client()
    client.analyze(FRAME)
    a.failures, b.failures = [BAD_INPUT], [BAD_INPUT]
    with pytest.raises(InvalidInput, match="cannot decode"):
        client.analyze(b"not an image")
    assert len(a.failures) + len(b.failures) == 1  # exactly one replica saw it
    a.failures, b.failures = [DEADLINE], [DEADLINE]
    with pytest.raises(Timeout):
        client.analyze(FRAME)
    assert len(a.failures) + len(b.failures) == 1


def test_client_passes_tls_settings_per_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient

    from omniface.client import Client

    made: list[tuple[str, dict]] = []

    class Recorder:
        def __init__(self, url, **kwargs):
            made.append((url, kwargs))

        def close(self):
            pass

    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    monkeypatch.setattr(grpcclient, "InferenceServerClient", Recorder)
    Client(["grpcs://a:1", "b:2"], root_certificates=str(ca)).close()
    assert made == [("a:1", {"ssl": True, "root_certificates": str(ca), "private_key": None, "certificate_chain": None}),
                    ("b:2", {"ssl": False})]
    made.clear()
    Client("h:1", ssl=True).close()
    assert made[0][1]["ssl"] is True and made[0][1]["root_certificates"] is None
    with pytest.raises(InvalidInput, match="TLS is off"):
        Client("h:1", root_certificates=str(ca))


async def test_async_client_fails_over() -> None:
    from omniface.aio import AsyncClient

    client = AsyncClient("127.0.0.1:1,127.0.0.1:2", backoff=0.0, endpoint_cooldown=60.0)
    a, b = AsyncReplica(101), AsyncReplica(202)
    client._tritons.update({"127.0.0.1:1": a, "127.0.0.1:2": b})
    assert {(await client.analyze(FRAME)).width for _ in range(4)} == {101, 202}
    b.down = STOPPING
    results = await client.analyze_batch([FRAME] * 20, concurrency=4)
    assert {r.width for r in results} == {101} and len(results) == 20
    assert await client.is_ready()
    a.down = unavailable()
    with pytest.raises(ServerUnavailable, match="any of"):
        await client.analyze(FRAME)
    assert not await client.is_ready()
    await client.close()
    assert a.closed and b.closed
