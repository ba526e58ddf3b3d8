"""What every remote backend shares: settings, pooled httpx clients, one deadline, retries,
error mapping and the safety rules for untrusted responses.

A remote backend describes its wire protocol as a generator (:meth:`RemoteBackend.protocol`)
that yields :class:`Call` (one HTTP exchange) or :class:`Pause` (a poll interval) and gets a
:class:`Reply` back; it does no I/O itself. The pieces live in four modules, all re-exported
here for the backends:

- :mod:`._http_settings`: :class:`RemoteSettings` and the pooled httpx clients built from them;
- :mod:`._http_protocol`: the vocabulary (:class:`Call`, :class:`Pause`, :class:`Reply`, ``retry_after``);
- :mod:`._http_driver`: the sync and async drivers (deadline, retries, transport errors,
  fire-and-forget best-effort calls);
- :mod:`._http_safety`: size caps, image verification and the SSRF rules for result URLs.

This module holds :class:`RemoteBackend`, which a kind subclasses with its ``protocol`` and
``error_for`` (and ``edit_protocol`` where the provider edits images), and :func:`nearest_aspect`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from .._deadline import Deadline
from .._errors import (
    BackendError,
    ConfigError,
    ContentRejected,
    InvalidOutput,
    PixelrouteError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    ValidationError,
)
from .._redact import redact, register_secret
from .._shown import env_var_problem
from .._types import GenerateRequest
from ._http_driver import MAX_MESSAGE_CHARS, MAX_REDIRECTS, HttpDriver, _async_sleep, logger
from ._http_protocol import Call, Pause, Protocol, Reply, RunState, retry_after
from ._http_safety import ResponseSafety, decode_image
from ._http_safety import resolve_async as _resolve_async
from ._http_safety import resolve_sync as _resolve_sync
from ._http_settings import PILLOW_MAX_PIXELS, RemoteSettings, key_env_example, new_async_client, new_sync_client
from ._presets import apply_preset
from .base import Backend, BackendOutput, Capabilities

if TYPE_CHECKING:
    from .._edit import EditRequest

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_REDIRECTS",
    "PILLOW_MAX_PIXELS",
    "Call",
    "Pause",
    "Protocol",
    "RemoteBackend",
    "RemoteSettings",
    "Reply",
    "RunState",
    "decode_image",
    "nearest_aspect",
    "retry_after",
]

# -- the base class -------------------------------------------------------------------------


class RemoteBackend(HttpDriver, ResponseSafety, Backend):
    """A backend behind an HTTP API. Subclasses give :meth:`protocol` and :meth:`error_for`."""

    Settings: ClassVar[type[RemoteSettings]] = RemoteSettings
    default_base_url: ClassVar[str] = ""
    default_download_hosts: ClassVar[tuple[str, ...]] = ()
    #: what a batch with fewer images than asked is refused as (see :meth:`check_batch`)
    short_batch_error: ClassVar[type[BackendError]] = ContentRejected
    short_batch_reason: ClassVar[str] = "the rest were filtered"
    settings: RemoteSettings

    def __init__(
        self,
        settings: RemoteSettings,
        *,
        capabilities: Capabilities | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        super().__init__(settings.name, capabilities=capabilities or self.capabilities_for(settings),
                         settings=settings)
        self.settings = settings
        self.base_url = (settings.base_url or self.default_base_url).rstrip("/")
        self._transport = transport
        self._async_transport = async_transport
        self._clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self._asleep = _async_sleep(sleep)
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        #: the transports holding the clients' pools; requests are sent on them (see new_sync_client)
        self._pool: httpx.BaseTransport | None = None
        self._apool: httpx.AsyncBaseTransport | None = None
        #: parsed URLs by the protocol's URL text: a backend talks to a handful of URLs
        self._urls: dict[str, httpx.URL] = {}
        self._lock = threading.Lock()
        self._key: str | None = None
        self._background: dict[threading.Thread, float] = {}
        self._background_tasks: set[asyncio.Task[None]] = set()
        self._background_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: RemoteSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Any] | None = None,
    ) -> RemoteBackend:
        """Build from validated settings, filling price/latency/strengths from the preset if unset."""
        settings = apply_preset(cls.kind, settings)
        return cls(settings, transport=transport, async_transport=async_transport, clock=clock, sleep=sleep)

    # -- what subclasses provide ------------------------------------------------------------

    @classmethod
    def capabilities_for(cls, settings: RemoteSettings) -> Capabilities:
        return Capabilities()

    def protocol(self, request: GenerateRequest, deadline: Deadline) -> Protocol:
        """The exchanges for one request, as a generator of :class:`Call` / :class:`Pause`."""
        raise NotImplementedError

    def edit_protocol(self, request: EditRequest, deadline: Deadline) -> Protocol:
        """The exchanges for one edit; kinds whose capabilities list ``"edit"`` provide it."""
        raise self.cannot(request)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def error_for(self, reply: Reply) -> BackendError:
        """Map a non-2xx reply to our error tree; subclasses catch provider codes first."""
        return self.generic_error(reply, self.provider_message(reply))

    def provider_message(self, reply: Reply) -> str:
        """The provider's own error text, redacted and truncated."""
        text = reply.body[:4096].decode("utf-8", "replace")
        data = reply.json_or_none()
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict) and err.get("message"):
                text = str(err["message"])
            else:
                for key in ("message", "detail", "title", "errors", "error"):
                    if data.get(key):
                        value = data[key]
                        text = "; ".join(map(str, value)) if isinstance(value, list) else str(value)
                        break
        return redact(text.strip())[:MAX_MESSAGE_CHARS]

    # -- the public surface -----------------------------------------------------------------

    def generate(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        self.validate(request)
        return self._drive(self.protocol(request, deadline), deadline)

    async def agenerate(self, request: GenerateRequest, deadline: Deadline) -> BackendOutput:
        self.validate(request)
        return await self._adrive(self.protocol(request, deadline), deadline)

    def edit(self, request: EditRequest, deadline: Deadline) -> BackendOutput:
        self.validate(request)
        return self._drive(self.edit_protocol(request, deadline), deadline)

    async def aedit(self, request: EditRequest, deadline: Deadline) -> BackendOutput:
        self.validate(request)
        return await self._adrive(self.edit_protocol(request, deadline), deadline)

    def check_upload(self, field: str, size: int, max_bytes: int) -> None:
        """Refuse an edit whose upload the provider would refuse for its size, before sending it."""
        if size > max_bytes:
            raise ValidationError(f"`{field}` must be at most {max_bytes:,} bytes for backend `{self.name}` "
                                  f"but is {size:,} bytes", field=field, value=size)

    def close(self) -> None:
        self._join_background()
        with self._lock:
            client, self._client, self._pool = self._client, None, None
        if client is not None:
            client.close()
        if self._aclient is not None and self._async_transport is None:
            # an AsyncClient must be closed on its loop; without a loop we can only drop its pool
            logger.debug("backend %s: async client dropped by a sync close(); prefer aclose()", self.name)

    async def aclose(self) -> None:
        await self._await_background_tasks()
        aclient, self._aclient, self._apool = self._aclient, None, None
        if aclient is not None:
            await aclient.aclose()
        self.close()

    # -- helpers for protocols ---------------------------------------------------------------

    def error(self, cls: type[BackendError], message: str, reply: Reply | None = None, **kw: Any) -> BackendError:
        status = reply.status if reply is not None else None
        prefix = f"backend `{self.name}`" + (f": HTTP {status}" if status else "")
        return cls(f"{prefix}: {redact(message)}", backend=self.name, status=status, **kw)

    def generic_error(self, reply: Reply, message: str) -> BackendError:
        status = reply.status
        if status == 429:
            return self.error(RateLimited, message or "rate limited", reply, retry_after=retry_after(reply))
        if status == 402:
            return self.error(QuotaExceeded, message or "payment required", reply)
        if status >= 500 or status == 408:
            return self.error(ServerError, message or "server error", reply)
        return self.error(BackendError, message or "request refused", reply)

    def result_list(self, reply: Reply, key: str = "data") -> tuple[dict[str, Any], list[Any]]:
        """The JSON object and its non-empty result list; an empty list is a silent moderation refusal."""
        data = reply.json()
        items = data.get(key) if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(items, list):
            raise self.error(InvalidOutput, f"response has no `{key}` list", reply)
        if not items:
            raise self.error(ContentRejected, "the provider returned no images (filtered)", reply)
        return data, items

    def check_batch(self, got: int, asked: int, reply: Reply | None = None, what: str = "the provider") -> None:
        """The one short-batch rule of every kind: fewer images than ``n`` is never a success.

        Providers with a safety system drop what it flags and answer 200 with the rest (Imagen,
        flux-schnell on Replicate), so a short batch is :attr:`short_batch_error` (ContentRejected
        unless the kind says otherwise), raised before anything is downloaded or decoded.
        """
        if got < asked:
            raise self.error(self.short_batch_error, f"{what} returned {got} of {asked} images "
                             f"({self.short_batch_reason})", reply)

    @staticmethod
    def billed(exc: PixelrouteError, cost_usd: float, job_id: str | None = None) -> PixelrouteError:
        """Mark ``exc``, raised after the provider charged for a result, with that charge (and the job id).

        The engine counts ``exc.cost_usd`` against ``max_cost_usd`` and records ``exc.job_id``
        for ``resume``; what an attempt paid for is never recorded as free. Values already set
        (nearer the cause) win.
        """
        if getattr(exc, "cost_usd", None) is None:
            exc.cost_usd = cost_usd  # type: ignore[attr-defined]
        if job_id is not None and getattr(exc, "job_id", None) is None:
            exc.job_id = job_id  # type: ignore[attr-defined]
        return exc

    def decode_image(self, data: bytes) -> Any:
        """A verified, fully loaded PIL image, or :class:`InvalidOutput`."""
        return decode_image(data, self.settings.max_image_pixels, self.name)

    def decode_b64_image(self, text: Any) -> Any:
        if not isinstance(text, str) or not text:
            raise self.error(InvalidOutput, "expected a base64 image string")
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self.error(InvalidOutput, "image is not valid base64") from exc
        return self.decode_image(data)

    def output(self, images: list[Any], *, cost_usd: float | None = None, **kw: Any) -> BackendOutput:
        """A :class:`BackendOutput` priced from ``price`` with the real image size in ``params``."""
        width, height = images[0].size
        params = {"width": width, "height": height, **kw.pop("params", {})}
        if cost_usd is None:
            cost_usd = self.price.estimate(width, height, len(images), kw.get("gpu_s"))
        return BackendOutput(images=images, cost_usd=cost_usd, model=self.settings.model, params=params, **kw)

    def allowed_hosts(self) -> tuple[str, ...]:
        return tuple(self.settings.allowed_download_hosts) or self.default_download_hosts

    # -- credentials, clients, DNS ----------------------------------------------------------

    def _api_key(self) -> str | None:
        env = self.settings.api_key_env
        if not env:  # None, or "" from a TOML file: a keyless server (A1111, a local compatible gateway)
            return None
        if self._key is None:
            # settings validation refuses a key written here; this guards settings built unvalidated
            problem = env_var_problem("api_key_env", env, key_env_example(type(self.settings)))
            if problem:
                raise ConfigError(f"backend `{self.name}` ({self.kind}): {problem}")
            value = os.environ.get(env)
            if not value:
                raise ConfigError(f"environment variable `{env}` is not set; it must hold the API key "
                                  f"of backend `{self.name}` ({self.kind})")
            register_secret(value)
            self._key = value
        return self._key

    def _sync_client(self) -> tuple[httpx.Client, httpx.BaseTransport]:
        client, pool = self._client, self._pool
        if client is None or pool is None:
            with self._lock:
                if self._client is None or self._pool is None:
                    # built once, on first use: construction costs ~30 ms (TLS context)
                    self._client, self._pool = new_sync_client(self.settings, self._transport)
                client, pool = self._client, self._pool
        return client, pool

    def _async_client(self) -> tuple[httpx.AsyncClient, httpx.AsyncBaseTransport]:
        if self._aclient is None or self._apool is None:
            self._aclient, self._apool = new_async_client(self.settings, self._async_transport, self.name)
        return self._aclient, self._apool

    def _resolve(self, host: str, port: int) -> list[str]:
        # looked up in this module at call time, so a test can stand in for DNS
        return _resolve_sync(host, port)

    async def _aresolve(self, host: str, port: int) -> list[str]:
        return await _resolve_async(host, port)  # as _resolve


def nearest_aspect(width: int, height: int, ratios: Mapping[str, tuple[int, int]], tolerance: float,
                   backend: str) -> str:
    """The provider ratio nearest to ``width/height`` in |log ratio|, or a ValidationError.

    The rule is explicit so a caller knows what is sent: the provider picks the pixel count,
    we pick the shape, and refuse rather than distort when no shape is within ``tolerance``.
    """
    target = math.log(width / height)
    best = min(ratios, key=lambda k: abs(math.log(ratios[k][0] / ratios[k][1]) - target))
    distance = abs(math.log(ratios[best][0] / ratios[best][1]) - target)
    if distance > tolerance:
        raise ValidationError(
            f"`width`x`height` {width}x{height} (aspect {width / height:.3f}) is not within {tolerance} "
            f"(|log ratio|) of an aspect ratio backend `{backend}` supports; nearest is {best}. "
            f"Supported: {', '.join(ratios)}.",
            field="width",
            value=(width, height),
        )
    return best
