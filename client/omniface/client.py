"""The synchronous SDK client: frames in, typed per-face results out, over gRPC.

>>> from omniface import Client
>>> with Client("127.0.0.1:8001") as client:
...     result = client.analyze("photo.jpg")
...     for face in result.faces:
...         print(face.box, face.age, face.gender, face.expression)

Requests are built and parsed by ``omniface._protocol`` (shared with ``AsyncClient``);
this module only does the I/O: one ``tritonclient.grpc`` client (thread-safe) per
``Client``, retries with exponential backoff on outages, and a thread pool over that
one channel for ``analyze_batch``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numpy as np

from omniface import _protocol as protocol
from omniface import contract
from omniface._protocol import Frame, ModelInfo
from omniface.errors import InvalidInput, ServerUnavailable
from omniface.types import FaceAttributes, FrameResult

__all__ = ["Client", "DEFAULT_URL"]

DEFAULT_URL = "127.0.0.1:8001"

T = TypeVar("T")


class Client:
    """A connection to a Triton server that runs the omniface model repository.

    Parameters
    ----------
    url:
        ``host:port`` of Triton's gRPC endpoint (``grpc://`` / ``grpcs://`` prefixes
        are accepted; ``grpcs://`` turns on TLS).
    timeout:
        Default deadline of each call in seconds (``None``: no deadline); methods take
        their own ``timeout=`` too.
    retries, backoff:
        On an outage (nothing listening, models still loading) a call is retried up to
        ``retries`` times, waiting ``backoff * 2**n`` seconds before retry ``n``. Bad
        inputs, timeouts and server errors are never retried.
    ssl, root_certificates, private_key, certificate_chain:
        TLS for the gRPC channel (PEM file paths, as tritonclient takes them).
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
        url: str = DEFAULT_URL,
        *,
        timeout: float | None = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        color_order: str = "RGB",
        check_contract: bool = True,
    ) -> None:
        # One endpoint for now; client-side balancing over several would keep one
        # tritonclient per endpoint and pick one in ``_call``.
        self.url, tls = protocol.normalize_url(url)
        self.timeout = protocol.check_timeout(timeout)
        self.retries = protocol.check_positive_int("retries", retries, minimum=0)
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
            raise InvalidInput(f"backoff must be a number of seconds >= 0, got {backoff!r}")
        self.backoff = float(backoff)
        self.color_order = protocol.normalize_color_order(color_order)
        self.check_contract = bool(check_contract)
        self._ssl = bool(ssl) or tls
        self._tls_files = dict(root_certificates=root_certificates, private_key=private_key,
                               certificate_chain=certificate_chain)
        self._module = _grpc_module()
        self._triton = self._module.InferenceServerClient(self.url, ssl=self._ssl, **self._tls_files)
        self._models: dict[str, ModelInfo] = {}
        self._models_lock = threading.Lock()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the channel; further calls raise ``ServerUnavailable``. Idempotent."""
        if not self._closed:
            self._closed = True
            self._triton.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, timeout={self.timeout}, color_order={self.color_order!r})"

    # -- I/O core --------------------------------------------------------------------

    def _call(self, fn: Callable[[], T], timeout: float | None) -> T:
        """Run one tritonclient call, retrying outages, mapping errors."""
        if self._closed:
            raise ServerUnavailable("this omniface Client is closed; create a new one")
        exception_type = self._module.InferenceServerException
        attempt = 0
        while True:
            try:
                return fn()
            except exception_type as exc:
                if attempt < self.retries and protocol.is_retryable(exc):
                    time.sleep(protocol.backoff_delay(attempt, self.backoff))
                    attempt += 1
                    continue
                raise protocol.map_error(exc, self.url, timeout) from exc

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
                    lambda: self._triton.get_model_config(name, as_json=True, client_timeout=self.timeout),
                    self.timeout,
                )
                info = protocol.model_info(config, name, check=self.check_contract)
                self._models[name] = info
        return info

    def _infer(self, model: str, inputs: list, output_names: Sequence[str], timeout: float | None) -> dict[str, np.ndarray]:
        outputs = protocol.requested_outputs(output_names, self._module)
        result = self._call(
            lambda: self._triton.infer(model, inputs, outputs=outputs, client_timeout=timeout),
            timeout,
        )
        return protocol.outputs_of(result, output_names)

    # -- public API ------------------------------------------------------------------

    def is_ready(self, timeout: float | None = None) -> bool:
        """True when the server is live and ready and both omniface entry points
        (``face_analysis``, ``attributes``) are loaded. Never raises for a down server."""
        if self._closed:
            return False
        deadline = self._timeout(timeout)
        try:
            return bool(
                self._triton.is_server_live(client_timeout=deadline)
                and self._triton.is_server_ready(client_timeout=deadline)
                and all(self._triton.is_model_ready(m, client_timeout=deadline)
                        for m in (contract.FACE_ANALYSIS, contract.FACE_ATTRIBUTES))
            )
        except Exception:
            return False

    def contract_version(self) -> str | None:
        """The contract version the server's ``face_analysis`` declares (checked)."""
        return self._model(contract.FACE_ANALYSIS).contract_version

    def analyze(self, frame: Frame, *, color_order: str | None = None, timeout: float | None = None) -> FrameResult:
        """Detect every face in one frame and predict its attributes.

        ``frame``: a path to an image file, the encoded bytes (JPEG/PNG/WebP/BMP), or a
        uint8 ``HxWx3`` (``HxW`` grayscale) array in ``color_order`` (default: the
        client's). Coordinates in the result are in that frame's pixels."""
        inputs = protocol.build_frame_inputs(frame, color_order or self.color_order, self._module)
        info = self._model(contract.FACE_ANALYSIS)
        outputs = self._infer(contract.FACE_ANALYSIS, inputs, protocol.frame_output_names(info.tasks), self._timeout(timeout))
        return protocol.parse_frame_result(outputs)

    def analyze_batch(
        self,
        frames: Iterable[Frame],
        *,
        concurrency: int = 4,
        color_order: str | None = None,
        timeout: float | None = None,
    ) -> list[FrameResult]:
        """``analyze`` many frames, keeping up to ``concurrency`` requests in flight (the
        server's dynamic batcher merges them); results come back in input order. The
        first failure cancels what has not started and is raised."""
        protocol.check_positive_int("concurrency", concurrency)
        if concurrency == 1:
            return [self.analyze(f, color_order=color_order, timeout=timeout) for f in frames]
        results: dict[int, FrameResult] = {}
        pending: dict[Future, int] = {}
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="omniface") as pool:
            try:
                for index, frame in enumerate(frames):
                    while len(pending) >= concurrency:
                        self._collect(pending, results, FIRST_COMPLETED)
                    future = pool.submit(self.analyze, frame, color_order=color_order, timeout=timeout)
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
