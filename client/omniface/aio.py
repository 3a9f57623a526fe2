"""The asyncio SDK client: ``Client``'s API with ``async`` methods.

>>> from omniface.aio import AsyncClient
>>> async with AsyncClient("127.0.0.1:8001") as client:
...     results = await client.analyze_batch(paths, concurrency=8)

Same constructor, same results, same errors as ``omniface.Client``: the requests are
built and parsed by ``omniface._protocol``; only the I/O differs
(``tritonclient.grpc.aio``). The gRPC channel is opened on first use, inside the
running event loop, so an ``AsyncClient`` may be created anywhere but must then be
used from one event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from omniface import _endpoints as endpoints
from omniface import _protocol as protocol
from omniface import contract
from omniface._protocol import Frame, ModelInfo
from omniface.client import DEFAULT_URL
from omniface.errors import ServerUnavailable
from omniface.types import FaceAttributes, FrameResult

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient(endpoints.ClientBase):
    """An asyncio connection to a Triton server running the omniface repository.

    Parameters are those of ``omniface.Client`` (a list of endpoints included). Use one
    ``AsyncClient`` per event loop."""

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        timeout: float | None = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        endpoint_cooldown: float = endpoints.DEFAULT_COOLDOWN,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        color_order: str = "RGB",
        check_contract: bool = True,
    ) -> None:
        super().__init__(
            url, timeout=timeout, retries=retries, backoff=backoff, endpoint_cooldown=endpoint_cooldown,
            ssl=ssl, root_certificates=root_certificates, private_key=private_key,
            certificate_chain=certificate_chain, color_order=color_order, check_contract=check_contract,
        )
        self._module = _aio_module()
        self._tritons: dict[str, Any] = {}  # per endpoint, opened on first use inside the loop
        self._models: dict[str, ModelInfo] = {}
        self._models_lock: asyncio.Lock | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def close(self) -> None:
        """Close the channels; further calls raise ``ServerUnavailable``. Idempotent."""
        self._closed = True
        tritons, self._tritons = self._tritons, {}
        for triton in tritons.values():
            await triton.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- I/O core --------------------------------------------------------------------

    @property
    def _triton(self) -> Any:
        """The first endpoint's tritonclient once opened (the only one of a single-server client)."""
        return self._tritons.get(self.urls[0])

    @_triton.setter
    def _triton(self, triton: Any) -> None:
        self._tritons[self.urls[0]] = triton

    def _client(self, endpoint: endpoints.Endpoint) -> Any:
        if self._closed:
            raise ServerUnavailable("this omniface AsyncClient is closed; create a new one")
        triton = self._tritons.get(endpoint.url)
        if triton is None:
            triton = self._module.InferenceServerClient(
                endpoint.url, ssl=endpoint.ssl, **(self._tls_files if endpoint.ssl else {})
            )
            self._tritons[endpoint.url] = triton
        return triton

    async def _call(self, fn: Callable[[Any], Awaitable[T]], timeout: float | None) -> T:
        """See ``Client._call``: the same failover and retries, awaiting instead of sleeping."""
        exception_type = self._module.InferenceServerException
        attempts = self._pool.attempts(self.retries, self.backoff)
        endpoint = attempts.first()
        while True:
            try:
                result = await fn(self._client(endpoint))
            except exception_type as exc:
                delay = attempts.failed(endpoint, exc)
                if delay is None:
                    raise protocol.map_error(exc, attempts.where(endpoint), timeout) from exc
                if delay:
                    await asyncio.sleep(delay)
                endpoint = attempts.next()
                continue
            attempts.succeeded(endpoint)
            return result

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else protocol.check_timeout(timeout)

    async def _model(self, name: str) -> ModelInfo:
        info = self._models.get(name)
        if info is not None:
            return info
        if self._models_lock is None:
            self._models_lock = asyncio.Lock()
        async with self._models_lock:
            info = self._models.get(name)
            if info is None:
                config = await self._call(
                    lambda c: c.get_model_config(name, as_json=True, client_timeout=self.timeout), self.timeout
                )
                info = protocol.model_info(config, name, check=self.check_contract)
                self._models[name] = info
        return info

    async def _infer(self, model: str, inputs: list, output_names: Sequence[str], timeout: float | None) -> dict[str, np.ndarray]:
        outputs = protocol.requested_outputs(output_names, self._module)
        result = await self._call(lambda c: c.infer(model, inputs, outputs=outputs, client_timeout=timeout), timeout)
        return protocol.outputs_of(result, output_names)

    # -- public API ------------------------------------------------------------------

    async def is_ready(self, timeout: float | None = None) -> bool:
        """True when the server and both omniface entry points are ready (with several
        endpoints: on at least one); never raises for a down server."""
        if self._closed:
            return False
        deadline = self._timeout(timeout)
        for endpoint in self._pool.endpoints:
            if await self._endpoint_ready(endpoint, deadline):
                return True
        return False

    async def _endpoint_ready(self, endpoint: endpoints.Endpoint, deadline: float | None) -> bool:
        try:
            client = self._client(endpoint)
            if not (await client.is_server_live(client_timeout=deadline)
                    and await client.is_server_ready(client_timeout=deadline)):
                return False
            for model in (contract.FACE_ANALYSIS, contract.FACE_ATTRIBUTES):
                if not await client.is_model_ready(model, client_timeout=deadline):
                    return False
            return True
        except Exception:
            return False

    async def contract_version(self) -> str | None:
        return (await self._model(contract.FACE_ANALYSIS)).contract_version

    async def analyze(
        self,
        frame: Frame,
        *,
        color_order: str | None = None,
        timeout: float | None = None,
        score_threshold: float | None = None,
        max_faces: int | None = None,
        min_face_size: float | None = None,
        det_size: int | str | None = None,
    ) -> FrameResult:
        """See ``omniface.Client.analyze`` (the detection settings included)."""
        settings = protocol.detection_settings(score_threshold, max_faces, min_face_size, det_size)
        inputs = protocol.build_frame_inputs(frame, color_order or self.color_order, self._module)
        info = await self._model(contract.FACE_ANALYSIS)
        protocol.check_settings_supported(info, settings)
        inputs += protocol.build_settings_inputs(settings, self._module)
        outputs = await self._infer(
            contract.FACE_ANALYSIS, inputs, protocol.frame_output_names(info.tasks), self._timeout(timeout)
        )
        return protocol.parse_frame_result(outputs)

    async def analyze_batch(
        self,
        frames: Iterable[Frame],
        *,
        concurrency: int = 4,
        color_order: str | None = None,
        timeout: float | None = None,
        score_threshold: float | None = None,
        max_faces: int | None = None,
        min_face_size: float | None = None,
        det_size: int | str | None = None,
    ) -> list[FrameResult]:
        """``analyze`` many frames with up to ``concurrency`` requests in flight; results
        in input order. The first failure cancels the rest and is raised. The detection
        settings (see ``omniface.Client.analyze``) apply to every frame."""
        protocol.check_positive_int("concurrency", concurrency)
        settings = dict(score_threshold=score_threshold, max_faces=max_faces, min_face_size=min_face_size,
                        det_size=det_size)
        protocol.detection_settings(**settings)  # a bad value fails before any frame is read
        # ``concurrency`` workers pull from one iterator, so frames are consumed lazily
        # (a generator of decoded frames is never all in memory) and at most
        # ``concurrency`` requests are in flight.
        source = enumerate(frames)
        results: dict[int, FrameResult] = {}

        async def worker() -> None:
            for index, frame in source:
                results[index] = await self.analyze(frame, color_order=color_order, timeout=timeout, **settings)

        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        return [results[i] for i in range(len(results))]

    async def analyze_faces(
        self,
        crops: Sequence[np.ndarray] | np.ndarray,
        *,
        color_order: str | None = None,
        timeout: float | None = None,
    ) -> list[FaceAttributes]:
        """See ``omniface.Client.analyze_faces``."""
        chunks = protocol.build_crop_inputs(crops, self._module, color_order or self.color_order)
        if not chunks:
            return []
        info = await self._model(contract.FACE_ATTRIBUTES)
        names = protocol.attribute_output_names(info.tasks)
        deadline = self._timeout(timeout)
        attributes: list[FaceAttributes] = []
        for inputs, rows in chunks:
            outputs = await self._infer(contract.FACE_ATTRIBUTES, inputs, names, deadline)
            attributes.extend(protocol.parse_face_attributes(outputs, rows))
        return attributes


def _aio_module():
    try:
        import tritonclient.grpc.aio as aioclient
    except Exception as exc:  # pragma: no cover - a broken install
        from omniface.errors import MissingDependency

        raise MissingDependency(f"tritonclient[grpc] is not importable ({exc}); pip install 'tritonclient[grpc]==2.51.0'") from exc
    return aioclient
