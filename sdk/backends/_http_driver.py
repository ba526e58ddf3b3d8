"""The two drivers that run a protocol generator: one over ``httpx.Client``, one over ``httpx.AsyncClient``.

The protocol (see :mod:`pixelroute.backends._http_protocol`) yields :class:`Call` / :class:`Pause` and
does no I/O; the drivers execute each step, retry what may be retried and map transport errors,
in the same order on both paths (tenacity's "pure engine + two drivers" shape) so the sync and
async paths cannot drift apart.

Deadline rules (docs/concepts.md, SLA semantics): every exchange, retry sleep, poll and download gets only what
is left of the call's :class:`~pixelroute._deadline.Deadline`. A retry whose sleep does not fit is not
started; a ``Retry-After`` that does not fit ends the call at once with ``RateLimited`` so the
engine can fall back. httpx's timeouts are per socket operation, so a server trickling its
headers or body a byte at a time would defeat them: the sync driver binds the deadline to its
thread and the pooled transport clamps every socket operation to it (:mod:`._http_deadline`);
the async driver wraps the whole exchange in ``asyncio.timeout``.

Best-effort exchanges after an attempt is abandoned (a job cancel, an interrupt) either run
inline within their own ``grace_s`` budget (``Call.grace_s`` yielded by a protocol) or, with
:meth:`HttpDriver.fire_and_forget`, on a background thread or task so that the caller's
deadline is not spent waiting for them; ``close()`` / ``aclose()`` wait for those.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
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
    DeadlineExceeded,
    InvalidOutput,
    PixelrouteError,
    RateLimited,
    ServerError,
)
from .._redact import redact
from . import _http_deadline as io_deadline
from ._http_protocol import Call, Pause, Protocol, Reply, RunState
from ._http_safety import pin_address
from .base import BackendOutput

if TYPE_CHECKING:
    from ._http_settings import RemoteSettings

logger = logging.getLogger("pixelroute.backends")

#: how much of a provider's error text reaches an exception (after redaction)
MAX_MESSAGE_CHARS = 500
MAX_REDIRECTS = 3
#: parsed relative URLs kept per backend (its routes; beyond this they are parsed each time)
_URL_CACHE_SIZE = 64
#: how long close() waits for one fire-and-forget exchange beyond its own grace_s
_BACKGROUND_JOIN_SLACK_S = 1.0


class HttpDriver:
    """Runs protocols over httpx (mixed into ``RemoteBackend``, which provides the hooks below)."""

    name: str
    settings: RemoteSettings
    base_url: str
    _clock: Callable[[], float]
    _sleep: Callable[[float], Any]
    _asleep: Callable[[float], Awaitable[None]]
    #: fire-and-forget threads still running, with their grace_s
    _background: dict[threading.Thread, float]
    _background_tasks: set[asyncio.Task[None]]
    _background_lock: threading.Lock
    _urls: dict[str, httpx.URL]

    if TYPE_CHECKING:  # provided by RemoteBackend and ResponseSafety

        def error(
            self, cls: type[BackendError], message: str, reply: Reply | None = None, **kw: Any
        ) -> BackendError: ...

        def error_for(self, reply: Reply) -> BackendError: ...

        def auth_headers(self, key: str) -> dict[str, str]: ...

        def _api_key(self) -> str | None: ...

        def _sync_client(self) -> tuple[httpx.Client, httpx.BaseTransport]: ...

        def _async_client(self) -> tuple[httpx.AsyncClient, httpx.AsyncBaseTransport]: ...

        def _resolve(self, host: str, port: int) -> list[str]: ...

        def _body_cap(self, response: httpx.Response) -> int: ...

        def _redirect(self, call: Call, reply: Reply) -> httpx.URL | None: ...

        def _check_download(self, url: httpx.URL, resolve: Callable[[str, int], list[str]]) -> str: ...

        async def _acheck_download(
            self, url: httpx.URL, resolve: Callable[[str, int], Awaitable[list[str]]]
        ) -> str: ...

        async def _aresolve(self, host: str, port: int) -> list[str]: ...

    def _drive(self, gen: Protocol, deadline: Deadline) -> BackendOutput:
        run = RunState()
        value: Reply | None = None
        error: BaseException | None = None
        while True:
            try:
                action = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return _finish(stop.value, run)
            except PixelrouteError as exc:
                exc.retries = run.retries  # type: ignore[attr-defined]  # a failed attempt's count is recorded too
                raise
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
        run = RunState()
        value: Reply | None = None
        error: BaseException | None = None
        while True:
            try:
                action = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return _finish(stop.value, run)
            except PixelrouteError as exc:
                exc.retries = run.retries  # type: ignore[attr-defined]  # a failed attempt's count is recorded too
                raise
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

    def _retrying_kwargs(self, call: Call, deadline: Deadline, run: RunState) -> dict[str, Any]:
        attempts = self._attempts(call)
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
            retry=retry_if_exception(_retryable),
            before_sleep=count,
            reraise=True,
        )

    # The first try runs outside tenacity: most exchanges succeed at once, and building a retry
    # loop per exchange cost ~10% of the CPU of a request at high rates. A first failure that may
    # be retried is handed to tenacity as the outcome of its attempt 1, so the schedule, the stop
    # rules and the retry count are exactly those of one loop over every attempt.

    def _exchange(self, call: Call, deadline: Deadline, run: RunState) -> Reply:
        try:
            return self._exchange_once(call, deadline)
        except BackendError as exc:
            if not self._may_retry(call, exc):
                raise
            first: BackendError | None = exc
        reply: Reply | None = None
        for attempt in Retrying(sleep=self._sleep, **self._retrying_kwargs(call, deadline, run)):
            with attempt:
                if first is not None:
                    failed, first = first, None
                    raise failed
                reply = self._exchange_once(call, deadline)
        assert reply is not None
        return reply

    async def _aexchange(self, call: Call, deadline: Deadline, run: RunState) -> Reply:
        try:
            return await self._aexchange_once(call, deadline)
        except BackendError as exc:
            if not self._may_retry(call, exc):
                raise
            first: BackendError | None = exc
        reply: Reply | None = None
        async for attempt in AsyncRetrying(sleep=self._asleep, **self._retrying_kwargs(call, deadline, run)):
            with attempt:
                if first is not None:
                    failed, first = first, None
                    raise failed
                reply = await self._aexchange_once(call, deadline)
        assert reply is not None
        return reply

    def _attempts(self, call: Call) -> int:
        return 1 + (self.settings.max_retries if call.retry else 0)

    def _may_retry(self, call: Call, exc: BackendError) -> bool:
        """Whether the retry loop would try again after ``exc`` as its first outcome (same rules)."""
        return self._attempts(call) > 1 and _retryable(exc)

    def _exchange_once(self, call: Call, deadline: Deadline) -> Reply:
        url = self._url(call.url)
        for _ in range(MAX_REDIRECTS + 1):
            self._check(deadline)
            address = self._check_download(url, resolve=self._resolve) if call.download else None
            reply = self._send_sync(call, url, deadline, address)
            next_url = self._redirect(call, reply)
            if next_url is None:
                return self._accept(reply)
            url = next_url
        raise self.error(InvalidOutput, f"more than {MAX_REDIRECTS} redirects")

    async def _aexchange_once(self, call: Call, deadline: Deadline) -> Reply:
        url = self._url(call.url)
        for _ in range(MAX_REDIRECTS + 1):
            self._check(deadline)
            address = await self._acheck_download(url, resolve=self._aresolve) if call.download else None
            reply = await self._send_async(call, url, deadline, address)
            next_url = self._redirect(call, reply)
            if next_url is None:
                return self._accept(reply)
            url = next_url
        raise self.error(InvalidOutput, f"more than {MAX_REDIRECTS} redirects")

    # Requests are built by the client (its default headers, the timeout extension) and sent on
    # its transport: see new_sync_client for what the client's own send would add.

    def _send_sync(self, call: Call, url: httpx.URL, deadline: Deadline, address: str | None = None) -> Reply:
        client, pool = self._sync_client()
        request = client.build_request(**self._request_args(call, url, deadline, address))
        outer = io_deadline.bind(deadline)  # connect, headers and body: every socket operation
        try:
            response = pool.handle_request(request)
            response.request = request
            try:
                body = self._read_sync(response, deadline)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, deadline) from exc
        finally:
            io_deadline.bind(outer)
        return Reply(response.status_code, response.headers, body, str(url))

    async def _send_async(self, call: Call, url: httpx.URL, deadline: Deadline, address: str | None = None) -> Reply:
        client, pool = self._async_client()
        request = client.build_request(**self._request_args(call, url, deadline, address))
        try:
            async with asyncio.timeout(deadline.timeout()):
                response = await pool.handle_async_request(request)
                response.request = request
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

    def _request_args(self, call: Call, url: httpx.URL, deadline: Deadline, address: str | None) -> dict[str, Any]:
        headers = dict(call.headers)
        if not call.download:
            key = self._api_key()
            if key is not None:
                headers.update(self.auth_headers(key))
        left = deadline.timeout(self.settings.timeout_s)
        args: dict[str, Any] = {"method": call.method, "url": url, "headers": headers,
                                "timeout": httpx.Timeout(left, connect=min(left or 10.0, 10.0))}
        if address is not None:  # a checked result URL: connect to the address that was checked
            args["url"], pinned_headers, args["extensions"] = pin_address(url, address)
            headers.update(pinned_headers)
        if call.json is not None:
            args["json"] = call.json
        if call.form is not None:
            args["data"] = dict(call.form)
            # without a file, an empty part forces multipart/form-data, which Stability and Ideogram
            # v3 require: what `requests` sends for files={"none": ""}
            args["files"] = dict(call.files) if call.files else {"none": ("none", b"")}
        return args

    def _accept(self, reply: Reply) -> Reply:
        if 200 <= reply.status < 300:
            return reply
        raise self.error_for(reply)

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
        if url.startswith(("http://", "https://")):  # job and result URLs: each is used once or twice
            return httpx.URL(url)
        parsed = self._urls.get(url)
        if parsed is None:  # the protocol's own routes: a handful per backend, parsed once
            parsed = httpx.URL(self.base_url + url)
            if len(self._urls) < _URL_CACHE_SIZE:  # a route with a job id in it must not grow it unbounded
                self._urls[url] = parsed
        return parsed

    # -- best effort, not waited for ------------------------------------------------------

    def fire_and_forget(self, call: Call) -> None:
        """Send ``call`` on a background thread and return at once; failures are logged, not raised.

        For work after an attempt was abandoned (an interrupt) that must not hold the caller
        past its deadline. ``call.grace_s`` (required) bounds the exchange; :meth:`close` waits for it.
        """
        budget = _grace(call)
        thread = threading.Thread(target=self._best_effort, args=(call, budget), daemon=True,
                                  name=f"pixelroute-{self.name}-{call.method.lower()}")
        with self._background_lock:
            self._background[thread] = budget
        thread.start()

    def afire_and_forget(self, call: Call, loop: asyncio.AbstractEventLoop) -> None:
        """The async twin: schedule ``call`` as a task on ``loop``; safe to call from any thread.

        :meth:`aclose` waits for it; a loop that is already closed means the call is dropped.
        """
        budget = _grace(call)

        def spawn() -> None:
            task = loop.create_task(self._abest_effort(call, budget))
            self._background_tasks.add(task)
            task.add_done_callback(self._background_tasks.discard)

        try:
            if _running_loop() is loop:
                spawn()  # at once, so an aclose() right after sees the task
            else:
                loop.call_soon_threadsafe(spawn)
        except RuntimeError:  # the loop is closed: nobody is left to send it
            logger.info("backend %s: best-effort %s %s dropped (event loop closed)", self.name, call.method, call.url)

    def _best_effort(self, call: Call, budget: float) -> None:
        try:
            self._exchange_once(call, Deadline(budget, clock=self._clock))
        except Exception as exc:  # best effort: any failure (refused, timeout, closed client) is only logged
            logger.info("backend %s: best-effort %s %s failed: %s", self.name, call.method, call.url,
                        redact(str(exc)))
        finally:
            with self._background_lock:
                self._background.pop(threading.current_thread(), None)

    async def _abest_effort(self, call: Call, budget: float) -> None:
        try:
            await self._aexchange_once(call, Deadline(budget, clock=self._clock))
        except Exception as exc:  # as in _best_effort
            logger.info("backend %s: best-effort %s %s failed: %s", self.name, call.method, call.url,
                        redact(str(exc)))

    def _join_background(self) -> None:
        """Wait for fire-and-forget threads (each bounded by its grace_s), so none outlives close()."""
        with self._background_lock:
            threads = list(self._background.items())
        for thread, budget in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=budget + _BACKGROUND_JOIN_SLACK_S)

    async def _await_background_tasks(self) -> None:
        await asyncio.sleep(0)  # let spawns scheduled from other threads run first
        tasks = [t for t in self._background_tasks if t is not asyncio.current_task()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, BackendError) and exc.retryable


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _grace(call: Call) -> float:
    if call.grace_s is None:
        raise ValueError(f"a fire-and-forget {call.method} {call.url} needs `grace_s` to bound it")
    return call.grace_s


def _finish(output: BackendOutput, run: RunState) -> BackendOutput:
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
