"""Several Triton replicas behind one client: endpoint lists, round-robin and failover.

Pure bookkeeping, no I/O, shared by ``Client`` and ``AsyncClient`` (they differ only in
how they sleep). A client keeps one tritonclient connection per endpoint and asks an
``EndpointPool`` which one to use for each request: healthy endpoints take turns
(round-robin); one that answers gRPC ``UNAVAILABLE`` (nothing listening, shutting down,
models unloading) is marked down for ``cooldown`` seconds and the request moves to the
next endpoint at once. Inference is idempotent, so replaying it elsewhere is safe. When
every endpoint has failed, the call waits ``backoff * 2**n`` and starts another round,
up to ``retries`` rounds; with one endpoint that is exactly the single-server retry.
A replica that answers "no such model" counts too: Triton says so while it loads, and
while it unloads on its way out (SIGTERM: "Server is stopping", then "no available
versions"), which is what a client behind a Kubernetes Service meets during a rollout.

This is client-side balancing for a handful of replicas (a test rig, two servers on one
host, a headless Kubernetes Service); a load balancer in front of the replicas does the
same for every client at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from omniface import _protocol as protocol
from omniface.errors import InvalidInput

DEFAULT_COOLDOWN = 5.0
"""Seconds an endpoint that answered UNAVAILABLE is skipped while others are healthy."""

_MODEL_MISSING_STATUSES = ("NOT_FOUND",)


@dataclass(eq=False)
class Endpoint:
    """One replica: its ``host:port``, whether it speaks TLS, and its health (compared
    by identity: two pools never share an endpoint)."""

    url: str
    ssl: bool
    down_until: float = 0.0


def parse_endpoints(url: str | Sequence[str], ssl: bool = False) -> list[Endpoint]:
    """Endpoints from ``"host:port"``, ``"grpcs://host:port"``, a comma-separated list of
    those (what ``--url`` takes) or a sequence of them. ``ssl`` turns TLS on for all;
    a ``grpcs://`` prefix turns it on for that one."""
    if isinstance(url, str):
        items: Iterable[str] = url.split(",") if "," in url else [url]
    elif isinstance(url, Sequence) and not isinstance(url, (bytes, bytearray)):
        items = url
    else:
        raise InvalidInput(f"url must be 'host:port' or a list of them, got {url!r}")
    endpoints: list[Endpoint] = []
    for item in items:
        host_port, tls = protocol.normalize_url(item)
        if any(e.url == host_port for e in endpoints):
            raise InvalidInput(f"endpoint {host_port!r} is listed twice")
        endpoints.append(Endpoint(host_port, bool(ssl) or tls))
    if not endpoints:
        raise InvalidInput("url: give at least one 'host:port' endpoint, e.g. '127.0.0.1:8001'")
    return endpoints


def check_cooldown(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidInput(f"endpoint_cooldown must be a number of seconds >= 0, got {value!r}")
    return float(value)


def is_failover(exc: Exception) -> bool:
    """Worth sending to another replica: an outage (``protocol.is_retryable``) or a
    replica that answers but does not have the models (loading, unloading, another
    repository). Bad inputs, timeouts and server errors are not."""
    if protocol.is_retryable(exc):
        return True
    if protocol.INVALID_INPUT_PREFIX in protocol._message(exc):
        return False
    message = protocol._message(exc).lower()
    return protocol.status_name(exc) in _MODEL_MISSING_STATUSES or any(
        marker in message for marker in protocol._MODEL_MISSING_MARKERS
    )


class EndpointPool:
    """Round-robin over healthy endpoints; thread-safe (one lock, no I/O)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        cooldown: float = DEFAULT_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise InvalidInput("an endpoint pool needs at least one endpoint")
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self.cooldown = check_cooldown(cooldown)
        self._clock = clock
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.endpoints)

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(e.url for e in self.endpoints)

    def describe(self) -> str:
        """The endpoints as an error message names them."""
        return self.endpoints[0].url if len(self.endpoints) == 1 else "any of " + ", ".join(self.urls)

    def is_up(self, endpoint: Endpoint) -> bool:
        return endpoint.down_until <= self._clock()

    def pick(self, exclude: Iterable[Endpoint] = ()) -> Endpoint | None:
        """The next endpoint in turn that is up and not in ``exclude``; when all of
        those are down, the one that comes back first; ``None`` when all are excluded."""
        excluded = {id(e) for e in exclude}
        with self._lock:
            count = len(self.endpoints)
            now = self._clock()
            candidates = [
                self.endpoints[(self._next + i) % count] for i in range(count)
                if id(self.endpoints[(self._next + i) % count]) not in excluded
            ]
            if not candidates:
                return None
            healthy = [e for e in candidates if e.down_until <= now]
            chosen = healthy[0] if healthy else min(candidates, key=lambda e: e.down_until)
            self._next = (self.endpoints.index(chosen) + 1) % count
            return chosen

    def mark_down(self, endpoint: Endpoint) -> None:
        with self._lock:
            endpoint.down_until = self._clock() + self.cooldown

    def mark_up(self, endpoint: Endpoint) -> None:
        if endpoint.down_until:
            with self._lock:
                endpoint.down_until = 0.0

    def attempts(self, retries: int, backoff: float) -> Attempts:
        return Attempts(self, retries, backoff)


class Attempts:
    """One call's walk over the pool: which endpoint to try, and after a failure
    whether to move on (and after how long) or give up.

    >>> attempts = pool.attempts(retries=3, backoff=0.2)
    >>> endpoint = attempts.first()
    >>> # on a tritonclient error: delay = attempts.failed(endpoint, exc)
    >>> # None -> raise; else sleep(delay) and endpoint = attempts.next()
    """

    def __init__(self, pool: EndpointPool, retries: int, backoff: float) -> None:
        self.pool = pool
        self.retries = retries
        self.backoff = backoff
        self.rounds = 0  # retries used (full passes over the pool that all failed)
        self._tried: list[Endpoint] = []

    def first(self) -> Endpoint:
        return self.next()

    def next(self) -> Endpoint:
        endpoint = self.pool.pick(self._tried)
        if endpoint is None:  # every endpoint tried: failed() gave up, or next() came uninvited
            self._tried.clear()
            endpoint = self.pool.pick()
        return endpoint  # type: ignore[return-value]  # pick() without exclusions always finds one

    def succeeded(self, endpoint: Endpoint) -> None:
        self.pool.mark_up(endpoint)

    def failed(self, endpoint: Endpoint, exc: Exception) -> float | None:
        """Seconds to wait before ``next()`` (0: switch now), or ``None``: give up."""
        if not is_failover(exc):
            return None
        self.pool.mark_down(endpoint)
        if not any(e is endpoint for e in self._tried):
            self._tried.append(endpoint)
        if len(self._tried) < len(self.pool):
            return 0.0
        if self.rounds < self.retries:  # is_failover(exc): an outage or models (un)loading
            delay = protocol.backoff_delay(self.rounds, self.backoff)
            self.rounds += 1
            self._tried.clear()
            return delay
        return None

    def where(self, endpoint: Endpoint) -> str:
        """Where the error happened, for its message: the endpoint, or all of them when
        every one was tried."""
        return self.pool.describe() if len(self._tried) >= len(self.pool) else endpoint.url


def tls_files(
    endpoints: Sequence[Endpoint],
    root_certificates: str | os.PathLike | None,
    private_key: str | os.PathLike | None,
    certificate_chain: str | os.PathLike | None,
) -> dict[str, str | None]:
    """The PEM file arguments tritonclient takes, checked here so a typo in a path is
    an ``InvalidInput`` that names it instead of a bare ``FileNotFoundError`` (or a
    silently ignored certificate on a plaintext channel)."""
    files = {"root_certificates": root_certificates, "private_key": private_key,
             "certificate_chain": certificate_chain}
    given = {name: os.fspath(path) for name, path in files.items() if path is not None}
    if given and not any(e.ssl for e in endpoints):
        raise InvalidInput(f"{', '.join(given)} given but TLS is off; pass ssl=True or a grpcs:// URL")
    if (private_key is None) != (certificate_chain is None):
        raise InvalidInput("mutual TLS needs both private_key and certificate_chain (PEM files)")
    for name, path in given.items():
        if not os.path.isfile(path):
            raise InvalidInput(f"{name} file {path!r} does not exist (a PEM file path is expected)")
    return {name: given.get(name) for name in files}


class ClientBase:
    """What ``Client`` and ``AsyncClient`` share besides I/O: the endpoint pool, the TLS
    files and the validated settings (the httpx ``BaseClient`` pattern). Subclasses open
    their own tritonclient channels."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        timeout: float | None,
        retries: int,
        backoff: float,
        endpoint_cooldown: float,
        ssl: bool,
        root_certificates: str | None,
        private_key: str | None,
        certificate_chain: str | None,
        color_order: str,
        check_contract: bool,
    ) -> None:
        self._pool = EndpointPool(parse_endpoints(url, ssl), endpoint_cooldown)
        self.urls = self._pool.urls
        self.url = ",".join(self.urls)  # one endpoint: its host:port; a list round-trips
        self.timeout = protocol.check_timeout(timeout)
        self.retries = protocol.check_positive_int("retries", retries, minimum=0)
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
            raise InvalidInput(f"backoff must be a number of seconds >= 0, got {backoff!r}")
        self.backoff = float(backoff)
        self.color_order = protocol.normalize_color_order(color_order)
        self.check_contract = bool(check_contract)
        self._tls_files = tls_files(self._pool.endpoints, root_certificates, private_key, certificate_chain)
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, timeout={self.timeout}, color_order={self.color_order!r})"
