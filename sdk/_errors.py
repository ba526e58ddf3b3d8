"""The exception tree of pixelroute.

Every error the SDK raises derives from :class:`PixelrouteError`; foreign exceptions (httpx,
torch, tenacity, lightgbm) are mapped at the boundary, most specific first, and chained with
``raise Mapped(...) from exc`` so the original stays in ``__cause__``.

::

    PixelrouteError
    ├── ValidationError          bad input, refused before anything is sent or computed
    ├── ConfigError              a configuration file, setting or environment variable is wrong
    │   └── MissingExtra         an optional dependency is not installed; names the extra to install
    ├── UnknownRequest           a request id that telemetry has never seen
    ├── NoFeasibleBackend        no candidate can meet the SLA; carries every candidate and why
    ├── DeadlineExceeded         the SLA deadline passed (also a ``TimeoutError``)
    ├── Cancelled                the caller cancelled the call
    └── BackendError             a backend attempt failed
        ├── RateLimited          429 / provider in-flight limits; carries ``retry_after``
        ├── QuotaExceeded        402: payment required, credits or a daily limit exhausted
        ├── ContentRejected      the provider's safety system refused; never retried
        ├── ServerError          5xx, connection resets; retried while the deadline allows
        ├── InvalidOutput        a response that is not a valid, safe image
        └── BackendUnavailable   the backend's circuit breaker is open

Each class has an ``error_code``: the stable name written to telemetry as ``outcome.error``.
Messages never contain secrets: API keys and ``Authorization`` headers are redacted before a
message is built (see :func:`pixelroute._redact.redact`).
"""

from __future__ import annotations

from typing import Any


class PixelrouteError(Exception):
    """Base class of every error raised by pixelroute."""

    error_code = "error"


class ValidationError(PixelrouteError, ValueError):
    """Raised when a request, SLA or argument is invalid; names the field and the value."""

    error_code = "validation"

    def __init__(self, message: str, *, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class ConfigError(PixelrouteError):
    """Raised when configuration (file, environment, framework settings) is invalid."""

    error_code = "config"


class MissingExtra(ConfigError, ModuleNotFoundError):
    """Raised when a feature's optional dependency is missing; the message names the extra to install.

    Also a ``ModuleNotFoundError`` (``name`` is the missing module), so code written against the
    plain import error still catches it. Built by :mod:`pixelroute._extras`.
    """

    def __init__(self, message: str, *, module: str, extra: str) -> None:
        super().__init__(message, name=module)
        self.module = module
        self.extra = extra


class UnknownRequest(PixelrouteError, KeyError):
    """Raised when a request id is not found in telemetry."""

    error_code = "unknown_request"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"no request with id `{request_id}` was recorded")
        self.request_id = request_id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NoFeasibleBackend(PixelrouteError):
    """Raised when no backend can meet the SLA; ``candidates`` says why each one failed."""

    error_code = "no_feasible_backend"

    def __init__(self, message: str, candidates: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.candidates = candidates or []


class DeadlineExceeded(PixelrouteError, TimeoutError):
    """Raised when the SLA deadline passes before a result is ready."""

    error_code = "timeout"


class Cancelled(PixelrouteError):
    """Raised when the caller cancels a call through a cancel token."""

    error_code = "cancelled"


class BackendError(PixelrouteError):
    """Raised when a backend attempt fails for a reason not covered by a subclass."""

    error_code = "backend_error"
    retryable = False

    def __init__(self, message: str, *, backend: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.status = status


class RateLimited(BackendError):
    """Raised on HTTP 429 or a provider's in-flight limit; ``retry_after`` in seconds if known."""

    error_code = "rate_limited"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, backend=backend, status=status)
        self.retry_after = retry_after


class QuotaExceeded(BackendError):
    """Raised on HTTP 402: credits, payment or a daily limit exhausted. Not retried."""

    error_code = "quota_exceeded"


class ContentRejected(BackendError):
    """Raised when the provider's safety system refuses the prompt or output. Never retried."""

    error_code = "content_rejected"


class ServerError(BackendError):
    """Raised on 5xx responses and broken connections. Retried while the deadline allows."""

    error_code = "server_error"
    retryable = True


class InvalidOutput(BackendError):
    """Raised when a response is not a valid image: truncated, malformed, oversized, unsafe URL."""

    error_code = "invalid_output"


class BackendUnavailable(BackendError):
    """Raised when a backend's circuit breaker is open and it is not accepting requests."""

    error_code = "circuit_open"


def error_code(exc: BaseException) -> str:
    """The stable telemetry name for an exception (``outcome.error``)."""
    if isinstance(exc, PixelrouteError):
        return exc.error_code
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "internal_error"
