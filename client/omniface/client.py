"""The synchronous SDK client: frames in, typed per-face results out, over gRPC.

>>> from omniface import Client
>>> with Client("127.0.0.1:8001") as client:
...     result = client.analyze("photo.jpg")
...     for face in result.faces:
...         print(face.box, face.age, face.gender, face.expression)

Requests are built and parsed by ``omniface._protocol`` (shared with ``AsyncClient``);
this module only does the I/O: one ``tritonclient.grpc`` client (thread-safe) per
endpoint, failover across endpoints and retries with exponential backoff on outages
(``omniface._endpoints`` decides which), and a thread pool for ``analyze_batch``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numpy as np

from omniface import _endpoints as endpoints
from omniface import _protocol as protocol
from omniface import contract
from omniface._protocol import Frame, ModelInfo
from omniface.errors import ServerUnavailable
from omniface.types import FaceAttributes, FrameResult

__all__ = ["Client", "DEFAULT_URL"]

DEFAULT_URL = "127.0.0.1:8001"

T = TypeVar("T")


class Client(endpoints.ClientBase):
    """A connection to a Triton server that runs the omniface model repository.

    Parameters
    ----------
    url:
        ``host:port`` of Triton's gRPC endpoint (``grpc://`` / ``grpcs://`` prefixes
        are accepted; ``grpcs://`` turns on TLS), or several replicas as a list or a
        comma-separated string: requests then take turns over the healthy ones, and
        one that is unavailable is skipped for ``endpoint_cooldown`` seconds while its
        requests go to the next (see ``omniface._endpoints``).
    timeout:
        Default deadline of each call in seconds (``None``: no deadline); methods take
        their own ``timeout=`` too.
    retries, backoff:
        On an outage (nothing listening, models still loading) a call is retried up to
        ``retries`` times, waiting ``backoff * 2**n`` seconds before retry ``n``. Bad
        inputs, timeouts and server errors are never retried. With several endpoints
        an outage first moves the call to the next endpoint at once; ``retries``
        counts the rounds in which every endpoint failed.
    endpoint_cooldown:
        Seconds an endpoint that answered UNAVAILABLE is skipped while others are up.
    ssl, root_certificates, private_key, certificate_chain:
        TLS for the gRPC channel: ``ssl=True`` (or ``grpcs://``), the CA that signed
        the server's certificate (``root_certificates``; the system's CAs when
        omitted), and for mutual TLS the client's key and certificate (PEM file paths).
    color_order:
        Channel order of the numpy frames you pass: ``"RGB"`` or ``"BGR"`` (OpenCV).
        Encoded images (paths, bytes) are decoded by the server and need none.
    check_contract:
        Compare the server's tensor-contract version with this SDK's on first use and
        raise ``ContractMismatch`` on a major-version difference.

    Errors are ``omniface.errors`` exceptions: ``InvalidInput``, ``ServerUnavailable``,
    ``Timeout``, ``ContractMismatch``, ``ServerError`` (all ``OmnifaceError``).
    The client is thread-safe; share one per process.
    """

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
        self._module = _grpc_module()
        self._tritons = {
            e.url: self._module.InferenceServerClient(e.url, ssl=e.ssl, **(self._tls_files if e.ssl else {}))
            for e in self._pool.endpoints
        }
        self._models: dict[str, ModelInfo] = {}
        self._models_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the channels; further calls raise ``ServerUnavailable``. Idempotent."""
        if not self._closed:
            self._closed = True
            for triton in self._tritons.values():
                triton.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- I/O core --------------------------------------------------------------------

    @property
    def _triton(self) -> Any:
        """The first endpoint's tritonclient (the only one of a single-server client)."""
        return self._tritons[self.urls[0]]

    @_triton.setter
    def _triton(self, triton: Any) -> None:
        self._tritons[self.urls[0]] = triton

    def _call(self, fn: Callable[[Any], T], timeout: float | None) -> T:
        """Run one tritonclient call on the next endpoint, failing over and retrying
        outages, mapping errors."""
        if self._closed:
            raise ServerUnavailable("this omniface Client is closed; create a new one")
        exception_type = self._module.InferenceServerException
        attempts = self._pool.attempts(self.retries, self.backoff)
        endpoint = attempts.first()
        while True:
            try:
                result = fn(self._tritons[endpoint.url])
            except exception_type as exc:
                delay = attempts.failed(endpoint, exc)
                if delay is None:
                    raise protocol.map_error(exc, attempts.where(endpoint), timeout) from exc
                if delay:
                    time.sleep(delay)
                endpoint = attempts.next()
                continue
            attempts.succeeded(endpoint)
            return result

    def _timeout(self, timeout: float | None) -> float | None:
        """A call's deadline: its own ``timeout=``, else the client's."""
        return self.timeout if timeout is None else protocol.check_timeout(timeout)

    def _model(self, name: str) -> ModelInfo:
        """The server's config of ``name`` (contract checked), fetched once."""
        info = self._models.get(name)
        if info is not None:
            return info
        with self._models_lock:
            info = self._models.get(name)
            if info is None:
                config = self._call(
                    lambda triton: triton.get_model_config(name, as_json=True, client_timeout=self.timeout),
                    self.timeout,
                )
                info = protocol.model_info(config, name, check=self.check_contract)
                self._models[name] = info
        return info

    def _infer(self, model: str, inputs: list, output_names: Sequence[str], timeout: float | None) -> dict[str, np.ndarray]:
        outputs = protocol.requested_outputs(output_names, self._module)
        result = self._call(
            lambda triton: triton.infer(model, inputs, outputs=outputs, client_timeout=timeout),
            timeout,
        )
        return protocol.outputs_of(result, output_names)

    # -- public API ------------------------------------------------------------------

    def is_ready(self, timeout: float | None = None) -> bool:
        """True when the server is live and ready and both omniface entry points
        (``face_analysis``, ``attributes``) are loaded; with several endpoints, when at
        least one is. Never raises for a down server."""
        if self._closed:
            return False
        deadline = self._timeout(timeout)
        return any(self._endpoint_ready(triton, deadline) for triton in self._tritons.values())

    @staticmethod
    def _endpoint_ready(triton: Any, deadline: float | None) -> bool:
        try:
            return bool(
                triton.is_server_live(client_timeout=deadline)
                and triton.is_server_ready(client_timeout=deadline)
                and all(triton.is_model_ready(m, client_timeout=deadline)
                        for m in (contract.FACE_ANALYSIS, contract.FACE_ATTRIBUTES))
            )
        except Exception:
            return False

    def contract_version(self) -> str | None:
        """The contract version the server's ``face_analysis`` declares (checked)."""
        return self._model(contract.FACE_ANALYSIS).contract_version

    def analyze(
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
        """Detect every face in one frame and predict its attributes.

        ``frame``: a path to an image file, the encoded bytes (JPEG/PNG/WebP/BMP/GIF), or a
        uint8 ``HxWx3`` (``HxW`` grayscale) array in ``color_order`` (default: the
        client's). Coordinates in the result are in that frame's pixels (an encoded
        image's upright ones: its EXIF orientation applied).

        Detection settings for this request alone; None keeps the server's configured
        value (shown in brackets for the default repository): ``score_threshold`` in
        [0, 1], faces scoring at or below it are dropped [0.5]; ``max_faces`` 1-128, the
        highest-scoring faces kept [64]; ``min_face_size`` in pixels, faces whose box's
        longer side is shorter are dropped [0]; ``det_size`` the long side (32-1920) the
        frame is resized to for detection, or ``"native"`` for its own size (capped at
        1920) [640]. Out-of-range values raise ``InvalidInput``; a server of contract 1.0,
        which has no such settings, ``ContractMismatch``."""
        settings = protocol.detection_settings(score_threshold, max_faces, min_face_size, det_size)
        inputs = protocol.build_frame_inputs(frame, color_order or self.color_order, self._module)
        info = self._model(contract.FACE_ANALYSIS)
        protocol.check_settings_supported(info, settings)
        inputs += protocol.build_settings_inputs(settings, self._module)
        outputs = self._infer(contract.FACE_ANALYSIS, inputs, protocol.frame_output_names(info.tasks), self._timeout(timeout))
        return protocol.parse_frame_result(outputs)

    def analyze_batch(
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
        """``analyze`` many frames, keeping up to ``concurrency`` requests in flight (the
        server's dynamic batcher merges them); results come back in input order. The
        first failure cancels what has not started and is raised. The detection
        settings (see ``analyze``) apply to every frame."""
        protocol.check_positive_int("concurrency", concurrency)
        settings = dict(score_threshold=score_threshold, max_faces=max_faces, min_face_size=min_face_size,
                        det_size=det_size)
        protocol.detection_settings(**settings)  # a bad value fails before any frame is read
        if concurrency == 1:
            return [self.analyze(f, color_order=color_order, timeout=timeout, **settings) for f in frames]
        results: dict[int, FrameResult] = {}
        pending: dict[Future, int] = {}
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="omniface") as pool:
            try:
                for index, frame in enumerate(frames):
                    while len(pending) >= concurrency:
                        self._collect(pending, results, FIRST_COMPLETED)
                    future = pool.submit(self.analyze, frame, color_order=color_order, timeout=timeout, **settings)
                    pending[future] = index
                while pending:
                    self._collect(pending, results, FIRST_COMPLETED)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return [results[i] for i in range(len(results))]

    @staticmethod
    def _collect(pending: dict[Future, int], results: dict[int, Any], how: str) -> None:
        done, _ = wait(list(pending), return_when=how)
        for future in done:
            index = pending.pop(future)
            results[index] = future.result()  # re-raises the request's error

    def analyze_faces(
        self,
        crops: Sequence[np.ndarray] | np.ndarray,
        *,
        color_order: str | None = None,
        timeout: float | None = None,
    ) -> list[FaceAttributes]:
        """Attributes of faces you already cropped: the ``attributes`` model alone.

        ``crops``: arrays of any size (each resized to the contract's 112x112; aligned
        crops like the ones the ensemble cuts give the best results), or one
        ``[N, H, W, 3]`` array. Sent in batches of at most ``ATTRIBUTES_MAX_BATCH``."""
        chunks = protocol.build_crop_inputs(crops, self._module, color_order or self.color_order)
        if not chunks:
            return []
        info = self._model(contract.FACE_ATTRIBUTES)
        names = protocol.attribute_output_names(info.tasks)
        deadline = self._timeout(timeout)
        attributes: list[FaceAttributes] = []
        for inputs, rows in chunks:
            outputs = self._infer(contract.FACE_ATTRIBUTES, inputs, names, deadline)
            attributes.extend(protocol.parse_face_attributes(outputs, rows))
        return attributes


def _grpc_module():
    try:
        import tritonclient.grpc as grpcclient
    except Exception as exc:  # pragma: no cover - a broken install
        from omniface.errors import MissingDependency

        raise MissingDependency(f"tritonclient[grpc] is not importable ({exc}); pip install 'tritonclient[grpc]==2.51.0'") from exc
    return grpcclient
