"""What every remote backend shares: settings, pooled httpx clients, one deadline, retries,
error mapping and the safety rules for untrusted responses.

A remote backend describes its wire protocol as a generator (:meth:`RemoteBackend.protocol`)
that yields :class:`Call` (one HTTP exchange) or :class:`Pause` (a poll interval) and gets a
:class:`Reply` back; it does no I/O itself. Two thin drivers run it, one over ``httpx.Client``
and one over ``httpx.AsyncClient`` (tenacity's "pure engine + two drivers" shape), so the sync
and async paths cannot drift apart.

Deadline rules (DESIGN.md §1): every exchange, retry sleep, poll and download gets only what
is left of the call's :class:`~sdk._deadline.Deadline`. A retry whose sleep does not fit is not
started; a ``Retry-After`` that does not fit ends the call at once with ``RateLimited`` so the
engine can fall back. The sync driver's overshoot on a slow-drip body is bounded by a watchdog
that shuts the socket at the deadline; the async driver uses ``asyncio.timeout``.

Untrusted responses: bodies are size-capped while streaming, images are decoded and verified
by Pillow under a pixel limit, and result URLs are fetched only from allowed hosts, never from
private or loopback addresses unless ``allow_private_download_hosts`` is set, with redirects
followed only to the same host.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import io
import ipaddress
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from .._deadline import Deadline
from .._errors import (
    BackendError,
    Cancelled,
    ConfigError,
    ContentRejected,
    DeadlineExceeded,
    InvalidOutput,
    PixelrouteError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    ValidationError,
)
from .._redact import redact, register_secret
from .._types import GenerateRequest
from ._presets import apply_preset
from .base import Backend, BackendOutput, BackendSettings, Capabilities

logger = logging.getLogger("pixelroute.backends")

#: Pillow's own default limit; ours must not exceed it or Pillow refuses first with a warning.
PILLOW_MAX_PIXELS = 89_478_485
#: how much of a provider's error text reaches an exception (after redaction)
MAX_MESSAGE_CHARS = 500
MAX_REDIRECTS = 3


class RemoteSettings(BackendSettings):
    """Settings shared by every remote kind; each kind subclasses this with its own fields."""

    #: the provider's endpoint; ``None`` = its public URL (tests and proxies point it elsewhere)
    base_url: str | None = None
    #: the environment variable holding the key; never the key itself
    api_key_env: str | None = None
    #: cap for one HTTP exchange; the call's deadline caps it further
    timeout_s: float = Field(default=120.0, gt=0)
    #: retries after the first try (5xx, resets, 429 without a long Retry-After), deadline permitting
    max_retries: int = Field(default=2, ge=0, le=10)
    #: first backoff in seconds; doubles each retry, with the same amount of jitter
    retry_base_s: float = Field(default=0.25, gt=0)
    max_connections: int = Field(default=100, ge=1)
    max_keepalive_connections: int = Field(default=20, ge=0)
    #: hosts result URLs may point at (``*.example.com`` matches subdomains); empty = the kind's defaults
    allowed_download_hosts: list[str] = Field(default_factory=list)
    #: allow result URLs on private, loopback and link-local addresses (and plain http): tests only
    allow_private_download_hosts: bool = False
    max_response_bytes: int = Field(default=64 * 2**20, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=1, le=PILLOW_MAX_PIXELS)
    #: size rule: the nearest allowed aspect ratio must be within this distance in |log(w/h)|
    aspect_tolerance: float = Field(default=0.05, ge=0, le=1)
    #: the async transport: httpx's own, or aiohttp under the httpx API (``pip install pixelroute[aiohttp]``),
    #: several times faster at high concurrency (docs/benchmarks.md)
    async_transport: Literal["httpx", "aiohttp"] = "httpx"


# -- the protocol vocabulary ----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP exchange a protocol asks for."""

    method: str
    #: relative to ``base_url``, or absolute (poll URLs, result downloads)
    url: str
    json: Any = None
    #: multipart/form-data text fields (sent as multipart even when there is no file)
    form: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: an untrusted result URL: host rules apply and no credentials are sent
    download: bool = False
    #: whether 5xx / resets / 429 may be retried (a non-idempotent create may not be)
    retry: bool = True
    #: a best-effort exchange after the deadline (job cancel): this budget, errors swallowed
    grace_s: float | None = None


@dataclass(frozen=True)
class Pause:
    """Wait this long (a poll interval), or until the deadline if sooner."""

    seconds: float


@dataclass(frozen=True)
class Reply:
    """A complete, size-capped response."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str

    def json(self) -> Any:
        """The body as JSON; malformed JSON is :class:`InvalidOutput`."""
        import json

        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise InvalidOutput(f"response from {_url_for_message(self.url)} is not valid JSON") from exc

    def json_or_none(self) -> Any:
        """The body as JSON, or ``None`` when it is not JSON (error bodies vary)."""
        try:
            return self.json()
        except InvalidOutput:
            return None


Protocol = Generator[Call | Pause, Reply | None, BackendOutput]


@dataclass
class _Run:
    retries: int = 0


# -- the base class -------------------------------------------------------------------------


class RemoteBackend(Backend):
    """A backend behind an HTTP API. Subclasses give :meth:`protocol` and :meth:`error_for`."""

    Settings: ClassVar[type[RemoteSettings]] = RemoteSettings
    default_base_url: ClassVar[str] = ""
    default_download_hosts: ClassVar[tuple[str, ...]] = ()
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
        self._lock = threading.Lock()
        self._key: str | None = None

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

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
        if self._aclient is not None and self._async_transport is None:
            # an AsyncClient must be closed on its loop; without a loop we can only drop its pool
            logger.debug("backend %s: async client dropped by a sync close(); prefer aclose()", self.name)

    async def aclose(self) -> None:
        aclient, self._aclient = self._aclient, None
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

    # -- drivers ------------------------------------------------------------------------------

    def _drive(self, gen: Protocol, deadline: Deadline) -> BackendOutput:
        run = _Run()
        value: Reply | None = None
        error: BaseException | None = None
        while True:
            try:
                action = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return _finish(stop.value, run)
            value, error = None, None
            try:
                if isinstance(action, Pause):
                    self._check(deadline)
                    self._sleep(min(action.seconds, deadline.remaining()))
                elif action.grace_s is not None:
                    grace = Deadline(action.grace_s, clock=self._clock)
                    try:
                        value = self._exchange_once(action, grace)
                    except PixelrouteError as exc:
                        logger.info("backend %s: best-effort %s failed: %s", self.name, action.method, exc)
                else:
                    value = self._exchange(action, deadline, run)
            except PixelrouteError as exc:
                error = exc

    async def _adrive(self, gen: Protocol, deadline: Deadline) -> BackendOutput:
        run = _Run()
        value: Reply | None = None
        error: BaseException | None = None
        while True:
            try:
                action = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return _finish(stop.value, run)
            value, error = None, None
            try:
                if isinstance(action, Pause):
                    self._check(deadline)
                    await self._asleep(min(action.seconds, deadline.remaining()))
                elif action.grace_s is not None:
                    grace = Deadline(action.grace_s, clock=self._clock)
                    try:
                        value = await self._aexchange_once(action, grace)
                    except PixelrouteError as exc:
                        logger.info("backend %s: best-effort %s failed: %s", self.name, action.method, exc)
                else:
                    value = await self._aexchange(action, deadline, run)
            except PixelrouteError as exc:
                error = exc

    def _retrying_kwargs(self, call: Call, deadline: Deadline, run: _Run) -> dict[str, Any]:
        attempts = 1 + (self.settings.max_retries if call.retry else 0)
        base = self.settings.retry_base_s
        # wait_exponential_jitter's schedule, spelt in strategies that exist in every tenacity >= 8.2
        # (its `initial` argument is deprecated in 9.x and `multiplier` is missing from 8.x)
        backoff = wait_exponential(multiplier=base, max=30.0) + wait_random(0, base)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                return exc.retry_after
            return float(backoff(state))

        class sleep_does_not_fit(stop_base):  # noqa: N801 - reads as the tenacity strategy it is
            # a retry is started only if its sleep leaves time for the attempt itself
            def __call__(self, state: RetryCallState) -> bool:
                return state.upcoming_sleep >= deadline.remaining()

        def count(state: RetryCallState) -> None:
            run.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            logger.info("backend %s: retry %d after %s", self.name, run.retries, redact(str(exc)))

        return dict(
            stop=stop_after_attempt(attempts) | sleep_does_not_fit(),
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, BackendError) and e.retryable),
            before_sleep=count,
            reraise=True,
        )

    def _exchange(self, call: Call, deadline: Deadline, run: _Run) -> Reply:
        reply: Reply | None = None
        for attempt in Retrying(sleep=self._sleep, **self._retrying_kwargs(call, deadline, run)):
            with attempt:
                reply = self._exchange_once(call, deadline)
        assert reply is not None
        return reply

    async def _aexchange(self, call: Call, deadline: Deadline, run: _Run) -> Reply:
        reply: Reply | None = None
        async for attempt in AsyncRetrying(sleep=self._asleep, **self._retrying_kwargs(call, deadline, run)):
            with attempt:
                reply = await self._aexchange_once(call, deadline)
        assert reply is not None
        return reply

    def _exchange_once(self, call: Call, deadline: Deadline) -> Reply:
        url = self._url(call.url)
        for _ in range(MAX_REDIRECTS + 1):
            self._check(deadline)
            if call.download:
                self._check_download(url, resolve=_resolve_sync)
            reply = self._send_sync(call, url, deadline)
            next_url = self._redirect(call, reply)
            if next_url is None:
                return self._accept(reply)
            url = next_url
        raise self.error(InvalidOutput, f"more than {MAX_REDIRECTS} redirects")

    async def _aexchange_once(self, call: Call, deadline: Deadline) -> Reply:
        url = self._url(call.url)
        for _ in range(MAX_REDIRECTS + 1):
            self._check(deadline)
            if call.download:
                await self._acheck_download(url)
            reply = await self._send_async(call, url, deadline)
            next_url = self._redirect(call, reply)
            if next_url is None:
                return self._accept(reply)
            url = next_url
        raise self.error(InvalidOutput, f"more than {MAX_REDIRECTS} redirects")

    def _send_sync(self, call: Call, url: httpx.URL, deadline: Deadline) -> Reply:
        client = self._sync_client()
        request = client.build_request(**self._request_args(call, url, deadline))
        try:
            response = client.send(request, stream=True)
            try:
                body = self._read_sync(response, deadline)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, deadline) from exc
        return Reply(response.status_code, response.headers, body, str(url))

    async def _send_async(self, call: Call, url: httpx.URL, deadline: Deadline) -> Reply:
        client = self._async_client()
        request = client.build_request(**self._request_args(call, url, deadline))
        try:
            async with asyncio.timeout(deadline.timeout()):
                response = await client.send(request, stream=True)
                try:
                    body = await self._read_async(response, deadline)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            if isinstance(exc, PixelrouteError):
                raise
            raise self._deadline_error() from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, deadline) from exc
        return Reply(response.status_code, response.headers, body, str(url))

    def _read_sync(self, response: httpx.Response, deadline: Deadline) -> bytes:
        cap = self._body_cap(response)
        chunks: list[bytes] = []
        total = 0
        watchdog = _socket_watchdog(response, deadline.timeout())
        try:
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > cap:
                    raise self.error(InvalidOutput, f"response body exceeds max_response_bytes={cap}")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            if deadline.expired():
                raise self._deadline_error() from exc
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
                watchdog.join()  # leave no thread behind
        return b"".join(chunks)

    async def _read_async(self, response: httpx.Response, deadline: Deadline) -> bytes:
        cap = self._body_cap(response)
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > cap:
                raise self.error(InvalidOutput, f"response body exceeds max_response_bytes={cap}")
            chunks.append(chunk)
        return b"".join(chunks)

    def _body_cap(self, response: httpx.Response) -> int:
        cap = self.settings.max_response_bytes
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise self.error(InvalidOutput, f"response body of {length} bytes exceeds max_response_bytes={cap}")
        return cap

    def _request_args(self, call: Call, url: httpx.URL, deadline: Deadline) -> dict[str, Any]:
        headers = dict(call.headers)
        if not call.download:
            key = self._api_key()
            if key is not None:
                headers.update(self.auth_headers(key))
        left = deadline.timeout(self.settings.timeout_s)
        args: dict[str, Any] = {"method": call.method, "url": url, "headers": headers,
                                "timeout": httpx.Timeout(left, connect=min(left or 10.0, 10.0))}
        if call.json is not None:
            args["json"] = call.json
        if call.form is not None:
            # an empty file part forces multipart/form-data, which Stability and Ideogram v3 require
            args["data"] = dict(call.form)
            args["files"] = {"none": ("none", b"")}  # what `requests` sends for files={"none": ""}
        return args

    def _accept(self, reply: Reply) -> Reply:
        if 200 <= reply.status < 300:
            return reply
        raise self.error_for(reply)

    def _redirect(self, call: Call, reply: Reply) -> httpx.URL | None:
        if not (300 <= reply.status < 400) or "location" not in reply.headers:
            return None
        here = httpx.URL(reply.url)
        target = here.join(reply.headers["location"])
        if not call.download or target.host != here.host:
            raise self.error(InvalidOutput, f"redirect to {_url_for_message(str(target))} refused "
                             "(redirects are followed only for downloads, on the same host)", reply)
        return target

    def _check(self, deadline: Deadline) -> None:
        if deadline.cancelled:
            raise Cancelled(f"backend `{self.name}`: the call was cancelled")
        if deadline.expired():
            raise self._deadline_error()

    def _deadline_error(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"backend `{self.name}` could not finish before the deadline")

    def _transport_error(self, exc: httpx.HTTPError, deadline: Deadline) -> PixelrouteError:
        text = f"{type(exc).__name__}: {redact(str(exc))}"[:MAX_MESSAGE_CHARS]
        cause = exc.__cause__
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError) and not deadline.expired():
            # httpx-aiohttp maps a connection reset to ConnectTimeout: a reset is a ServerError, retried
            return self.error(ServerError, text)
        if isinstance(exc, httpx.TimeoutException) or deadline.expired():
            return self._deadline_error()
        if isinstance(exc, httpx.TransportError):  # resets, refused connections, protocol errors
            return self.error(ServerError, text)
        return self.error(BackendError, text)

    def _url(self, url: str) -> httpx.URL:
        if url.startswith(("http://", "https://")):
            return httpx.URL(url)
        return httpx.URL(self.base_url + url)

    def _check_download(self, url: httpx.URL, resolve: Callable[[str, int], list[str]]) -> None:
        host, port = self._check_download_host(url)
        self._check_addresses(url, resolve(host, port))
        self._check_scheme(url)

    async def _acheck_download(self, url: httpx.URL) -> None:
        host, port = self._check_download_host(url)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise self.error(InvalidOutput, f"result URL host `{host}` does not resolve") from exc
        self._check_addresses(url, [str(info[4][0]) for info in infos])
        self._check_scheme(url)

    def _check_scheme(self, url: httpx.URL) -> None:
        if url.scheme != "https" and not (url.scheme == "http" and self.settings.allow_private_download_hosts):
            raise self.error(InvalidOutput, f"result URL {_url_for_message(str(url))} is not https")

    def _check_download_host(self, url: httpx.URL) -> tuple[str, int]:
        shown = _url_for_message(str(url))
        host = url.host.lower()
        if not any(_host_matches(host, pattern) for pattern in self.allowed_hosts()):
            raise self.error(InvalidOutput, f"result URL {shown} is not on an allowed host "
                             f"(allowed_download_hosts: {', '.join(self.allowed_hosts()) or 'none'})")
        return host, url.port or (443 if url.scheme == "https" else 80)

    def _check_addresses(self, url: httpx.URL, addresses: list[str]) -> None:
        if self.settings.allow_private_download_hosts:
            return
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise self.error(InvalidOutput, f"result URL {_url_for_message(str(url))} resolves to a "
                                 "private or loopback address (SSRF guard; see allow_private_download_hosts)")

    def _api_key(self) -> str | None:
        env = self.settings.api_key_env
        if not env:  # None, or "" from a TOML file: a keyless server (A1111, a local compatible gateway)
            return None
        if self._key is None:
            value = os.environ.get(env)
            if not value:
                raise ConfigError(f"environment variable `{env}` is not set; it must hold the API key "
                                  f"of backend `{self.name}` ({self.kind})")
            register_secret(value)
            self._key = value
        return self._key

    def _limits(self) -> httpx.Limits:
        s = self.settings
        return httpx.Limits(max_connections=s.max_connections, max_keepalive_connections=s.max_keepalive_connections)

    def _sync_client(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    # built once, on first use: construction costs ~30 ms (TLS context)
                    self._client = httpx.Client(transport=self._transport, limits=self._limits(),
                                                follow_redirects=False, trust_env=False)
                client = self._client
        return client

    def _async_client(self) -> httpx.AsyncClient:
        if self._aclient is None:
            transport = self._async_transport
            if transport is None and self.settings.async_transport == "aiohttp":
                transport = _aiohttp_transport(self._limits(), self.name)
            self._aclient = httpx.AsyncClient(transport=transport, limits=self._limits(),
                                              follow_redirects=False, trust_env=False)
        return self._aclient


# -- shared pure helpers --------------------------------------------------------------------


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


def decode_image(data: bytes, max_pixels: int, backend: str) -> Any:
    """Decode untrusted bytes: refuse non-images, truncation and decompression bombs."""
    from PIL import Image, UnidentifiedImageError

    def invalid(why: str) -> InvalidOutput:
        return InvalidOutput(f"backend `{backend}`: {why}", backend=backend)

    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size  # read from the header, before any pixel is decoded
            if width * height > max_pixels:
                raise invalid(f"image of {width}x{height} exceeds max_image_pixels={max_pixels}")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise invalid("image refused as a decompression bomb") from exc
    except UnidentifiedImageError as exc:
        raise invalid("response is not an image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise invalid(f"image is truncated or corrupt ({type(exc).__name__})") from exc
    return image


def retry_after(reply: Reply) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    ms = reply.headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = reply.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def _aiohttp_transport(limits: httpx.Limits, backend: str) -> httpx.AsyncBaseTransport:
    try:
        from httpx_aiohttp import AiohttpTransport
    except ImportError as exc:
        raise ConfigError(f"backend `{backend}`: `async_transport = \"aiohttp\"` needs the optional extra: "
                          "pip install 'pixelroute[aiohttp]'") from exc
    transport: httpx.AsyncBaseTransport = AiohttpTransport(limits=limits, trust_env=False)
    return transport


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _resolve_sync(host: str, port: int) -> list[str]:
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except OSError as exc:
        raise InvalidOutput(f"result URL host `{host}` does not resolve") from exc


def _url_for_message(url: str) -> str:
    # signed result URLs carry credentials in the query string: never show it
    return redact(url.split("?", 1)[0])


def _socket_watchdog(response: httpx.Response, seconds: float | None) -> threading.Timer | None:
    """Shut the socket at the deadline so a slow-drip body cannot hold a sync call past it."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is None or seconds is None:
        return None

    def shut() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, shut)
    timer.daemon = True
    timer.start()
    return timer


def _finish(output: BackendOutput, run: _Run) -> BackendOutput:
    output.extra.setdefault("retries", run.retries)
    return output


def _async_sleep(sleep: Callable[[float], Any] | None) -> Callable[[float], Awaitable[None]]:
    if sleep is None:
        return asyncio.sleep
    if inspect.iscoroutinefunction(sleep):
        return sleep

    async def fake(seconds: float) -> None:  # an injected sync fake (tests): call it, do not block
        sleep(seconds)

    return fake
