"""The omniface exception tree. Every message says what went wrong and what to do.

    OmnifaceError
    ├── InvalidInput          the frame or crop cannot be analysed (corrupt, wrong dtype/shape, too big)
    ├── ServerUnavailable     no server answered (not started, wrong URL, still loading)
    ├── Timeout               the deadline passed before the server answered
    ├── ContractMismatch      the server runs another tensor-contract version than this SDK
    ├── ServerError           the server answered with an error that is none of the above
    └── MissingDependency     an optional extra (serve, train, bench) is not installed

Library code raises only these (or their subclasses); callers catch ``OmnifaceError``.
"""

from __future__ import annotations


class OmnifaceError(Exception):
    """Base class of every error omniface raises on purpose."""


class InvalidInput(OmnifaceError, ValueError):
    """The input cannot be analysed: the message names the problem and the accepted forms."""


class ServerUnavailable(OmnifaceError, ConnectionError):
    """No Triton server answered at the URL, or the omniface models are not ready yet."""


class Timeout(OmnifaceError, TimeoutError):
    """The request's deadline passed; raise ``timeout=`` or lower the load."""


class ContractMismatch(OmnifaceError):
    """Server and SDK disagree on the tensor contract; upgrade one of them."""


class ServerError(OmnifaceError, RuntimeError):
    """The server reported an error that is not a bad input or an outage."""


class MissingDependency(OmnifaceError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def require(module: str, extra: str):
    """Import ``module`` or raise MissingDependency naming the pip extra that brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependency(
            f"{module!r} is not installed; install it with: pip install 'omniface[{extra}]'"
        ) from exc
