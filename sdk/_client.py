"""``Client`` and ``AsyncClient``: thin sync and async drivers over :class:`~pixelroute._engine.Engine`.

Both have the same methods (``generate``, ``edit``, ``report_correction``, ``trace``, ``stats``,
``close``/``aclose``) and share everything but the loop that runs an attempt.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import Settings, embedded_default, load_settings
from ._deadline import CancelToken
from ._drivers import run_async, run_sync
from ._engine import Call, Engine
from ._errors import ConfigError, PixelrouteError, ValidationError
from ._health import BackendHealth, CircuitBreaker
from ._streams import check_previews, done_event, listener_for, stream_async, stream_sync
from ._types import SLA, GenerateRequest, Result, build_request, build_sla
from .backends import create_backend
from .backends.base import Backend
from .gates import ContrastGate, Gate

if TYPE_CHECKING:
    from pixelroute.router import Router

    from .events import Event, Listener

logger = logging.getLogger("pixelroute")

ConfigSource = str | os.PathLike[str] | dict[str, Any] | Settings | None


class _NullRecorder:
    """Used when telemetry is disabled: records nothing, on purpose."""

    def record(self, record: dict[str, Any]) -> bool:
        return True

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {"enqueued": 0, "written": 0, "dropped": 0, "queue_depth": 0, "write_errors": 0}


class BaseClient:
    """Construction and the methods that do no generation I/O; see :class:`Client`."""

    def __init__(
        self,
        config: ConfigSource = None,
        *,
        backends: list[Backend] | None = None,
        router: Router | None = None,
        store: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        transport: Any = None,
        async_transport: Any = None,
        gate: Gate | None = None,
    ) -> None:
        self.settings = _settings(config, backends)
        #: the cascade's quality gate; ``ContrastGate`` unless you pass your own (e.g. ``ClipScoreGate``)
        self.gate: Gate = gate or ContrastGate()
        self._clock = clock
        self._closed = False
        built = backends if backends is not None else [
            create_backend(s, transport=transport, async_transport=async_transport, clock=clock)
            for s in self.settings.backends
        ]
        if not built:
            raise ConfigError("no backends configured: add at least one [[backends]] entry")
        if backends is None:
            _warn_of_mocks_beside_real_backends(self.settings)
        names = [b.name for b in built]
        if len(set(names)) != len(names):
            raise ConfigError(f"backend names must be unique but are {names}")
        self.backends: dict[str, Backend] = {b.name: b for b in built}
        ex = self.settings.execution
        self._health = {
            b.name: BackendHealth(
                CircuitBreaker(failures=ex.breaker_failures, cooldown_s=ex.breaker_cooldown_s, clock=clock),
                capacity=b.settings.max_concurrency if b.settings else 1,
            )
            for b in built
        }
        self.router = router if router is not None else _build_router(self.settings)
        self._store_url = store or self.settings.telemetry_url()
        self.recorder, self._store = _build_recorder(self.settings, self._store_url)
        from .telemetry import make_request_id

        self._engine = Engine(
            self.settings, self.backends, self.router, self.recorder, self._health, clock, make_request_id
        )
        # a cold-start client switches to a trained artifact as soon as `pixelroute train` writes it
        self._engine.watch_artifact(self.settings.router.model if router is None else None, _build_router)
        from ._observe import build_observer

        # the observer reads the store, not the client: no reference cycle keeps a dropped client alive
        store_stats = functools.partial(_store_stats, self._store, self.recorder)
        self._observer = build_observer(store_stats, self.recorder.stats)
        self._engine.observer = self._observer
        self._inflight_lock = threading.Lock()

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **kwargs: Any) -> Any:
        """Build a client from a TOML file (validated; nothing is loaded until first use)."""
        return cls(load_settings(path), **kwargs)

    # -- requests ----------------------------------------------------------------------------

    def _prepare(
        self,
        prompt: str,
        sla: SLA | dict[str, Any] | None,
        knobs: dict[str, Any],
        backend: str | None,
        cancel: CancelToken | None,
        listener: Listener | None = None,
        previews: int = 0,
    ) -> Call:
        if self._closed:
            raise PixelrouteError("this client is closed")
        request = build_request(prompt=prompt, **knobs)
        previews = check_previews(previews, listener)
        return self._engine.start(request, build_sla(sla), backend=backend, cancel=cancel, listener=listener,
                                  previews=previews)

    def _prepare_edit(
        self,
        image: Any,
        prompt: str,
        sla: SLA | dict[str, Any] | None,
        knobs: dict[str, Any],
        backend: str | None,
        cancel: CancelToken | None,
        listener: Listener | None = None,
        previews: int = 0,
    ) -> Call:
        if self._closed:
            raise PixelrouteError("this client is closed")
        from ._edit import build_edit_request

        request = build_edit_request(image, prompt=prompt, **knobs)
        previews = check_previews(previews, listener)
        return self._engine.start(request, build_sla(sla), backend=backend, cancel=cancel, listener=listener,
                                  previews=previews)

    def _gate_for(self, cascade: bool | None) -> Gate | None:
        on = self.settings.execution.cascade if cascade is None else cascade
        return self.gate if on else None

    # -- feedback and introspection ---------------------------------------------------------

    def report_correction(self, request_id: str, seconds: float, verdict: str) -> None:
        """Attach a person's correction time and verdict (accepted | edited | rejected) to a request.

        Reporting twice keeps both in the history; the later report is the one the router learns from.
        """
        from .telemetry import validate_correction

        validate_correction(seconds, verdict)
        if self._store is None:
            raise ConfigError("telemetry is disabled (`telemetry.enabled = false`): no request to correct")
        self._flush_for_read()
        self._store.add_correction(request_id, float(seconds), verdict)

    def trace(self, request_id: str) -> dict[str, Any]:
        """The stored trace of a request: decision, candidates, attempts, timings, cost, correction."""
        from .telemetry.trace import stored_trace

        if self._store is None:
            raise ConfigError("telemetry is disabled (`telemetry.enabled = false`): no stored traces")
        self._flush_for_read()
        return stored_trace(self._store, request_id)

    def recent_requests(self, limit: int = 50) -> list[dict[str, Any]]:
        """One summary per request, newest first (time, backend, ok/error, latency, cost, correction)."""
        if self._store is None:
            raise ConfigError("telemetry is disabled (`telemetry.enabled = false`): no stored requests")
        self._flush_for_read()
        return self._store.recent_requests(limit)

    def stats(self, since: Any = None) -> dict[str, Any]:
        """Per-backend operational metrics from the store (see ``pixelroute stats``)."""
        return _store_stats(self._store, self.recorder, since)

    def metrics_text(self) -> str:
        """Prometheus text exposition: :meth:`stats`, the recorder's counters and this process's
        latency histograms (needs ``prometheus_client``: ``pip install 'pixelroute[metrics]'``)."""
        metrics = self._observer.metrics if self._observer is not None else None
        if metrics is None:  # prometheus_client was not there when the client was built
            from .telemetry import prometheus_text

            text: str = prometheus_text(self.stats(), recorder_stats=self.recorder.stats())  # or how to install it
            return text
        return metrics.text()

    def _flush_for_read(self) -> None:
        """Let a read see what was just recorded; bounded, so a stuck store never hangs the caller."""
        from .telemetry._recorder import flush_before_read

        flush_before_read(self.recorder)

    def health(self) -> dict[str, dict[str, object]]:
        """Live in-flight counts and circuit-breaker states per backend."""
        return {name: h.snapshot() for name, h in self._health.items()}

    def _close_common(self) -> None:
        self._closed = True
        self.recorder.close()
        if self._store is not None:
            self._store.close()


class Client(BaseClient):
    """The synchronous client.

    ::

        with Client.from_config("pixelroute.toml") as client:
            r = client.generate("a red bicycle", sla=SLA(deadline_s=8, max_cost_usd=0.05), seed=7)
            r.images[0].save("bike.png")
            client.report_correction(r.request_id, seconds=42.0, verdict="edited")

    ``Client()`` with no arguments is the embedded default: two tiny local pipelines (random
    weights, noise images) and SQLite telemetry in the user cache dir.
    """

    def __init__(self, config: ConfigSource = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._dedupe: dict[str, Future[Result]] = {}
        self._executor: ThreadPoolExecutor | None = None

    def generate(
        self,
        prompt: str,
        sla: SLA | dict[str, Any] | None = None,
        *,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        n: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        scheduler: str | None = None,
        seed: int | None = None,
        backend: str | None = None,
        cancel: CancelToken | None = None,
        dedupe: bool | None = None,
        cascade: bool | None = None,
        on_progress: Listener | None = None,
        previews: int = 0,
    ) -> Result:
        """Generate images for ``prompt`` within ``sla``; see the class docstring.

        ``backend`` pins a backend by name; ``cancel`` is a :class:`CancelToken`; ``dedupe``
        shares one execution among identical concurrent calls; ``cascade`` tries the cheap
        candidate first and escalates when :attr:`gate` scores it below the threshold.
        ``on_progress`` is called with each :mod:`pixelroute.events` event (possibly on a worker
        thread); ``previews`` asks local pipelines for that many partial images on its ``Step`` events.
        """
        knobs = dict(negative_prompt=negative_prompt, width=width, height=height, n=n, steps=steps,
                     guidance=guidance, scheduler=scheduler, seed=seed)
        call = self._prepare(prompt, sla, knobs, backend, cancel, listener_for(on_progress), previews)
        return self._execute(call, dedupe, cascade)

    def edit(
        self,
        image: Any,
        prompt: str,
        sla: SLA | dict[str, Any] | None = None,
        *,
        mask: Any = None,
        strength: float | None = None,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        n: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        scheduler: str | None = None,
        seed: int | None = None,
        backend: str | None = None,
        cancel: CancelToken | None = None,
        dedupe: bool | None = None,
        cascade: bool | None = None,
        on_progress: Listener | None = None,
        previews: int = 0,
    ) -> Result:
        """Edit ``image`` as ``prompt`` says, inside ``mask`` when given, within ``sla``; routed like
        :meth:`generate`, among the backends that can edit.

        ``image`` and ``mask`` are PIL images, PNG/JPEG/WebP bytes or paths; the mask is white where
        the image may change. ``strength`` in (0, 1] says how far the result may move from the
        input. ``width``/``height`` unset keep the input's size. The other arguments are
        :meth:`generate`'s. See the edits page of the docs.
        """
        knobs = dict(mask=mask, strength=strength, negative_prompt=negative_prompt, width=width, height=height,
                     n=n, steps=steps, guidance=guidance, scheduler=scheduler, seed=seed)
        call = self._prepare_edit(image, prompt, sla, knobs, backend, cancel, listener_for(on_progress), previews)
        return self._execute(call, dedupe, cascade)

    def _execute(self, call: Call, dedupe: bool | None, cascade: bool | None) -> Result:
        gate = self._gate_for(cascade)
        if dedupe if dedupe is not None else self.settings.execution.dedupe:
            return self._deduplicated(call, gate)
        return self._run(call, gate)

    def stream(
        self, prompt: str, sla: SLA | dict[str, Any] | None = None, *, cancel: CancelToken | None = None,
        **options: Any,
    ) -> Generator[Event, None, None]:
        """:meth:`generate` as an iterator of its events, ending with ``Done`` (its ``result``).

        Takes :meth:`generate`'s arguments but ``on_progress``. The call runs on a thread of its
        own from the first ``next()``; its error is raised by the iterator, and closing the
        iterator early cancels the call.
        """
        def run(listener: Listener, token: CancelToken) -> Result:
            return self.generate(prompt, sla, cancel=token, on_progress=listener, **options)

        return stream_sync(run, cancel)

    def stream_edit(
        self, image: Any, prompt: str, sla: SLA | dict[str, Any] | None = None, *,
        cancel: CancelToken | None = None, **options: Any,
    ) -> Generator[Event, None, None]:
        """:meth:`edit` as an iterator of its events, ending with ``Done``; as :meth:`stream`."""
        def run(listener: Listener, token: CancelToken) -> Result:
            return self.edit(image, prompt, sla, cancel=token, on_progress=listener, **options)

        return stream_sync(run, cancel)

    def _run(self, call: Call, gate: Gate | None) -> Result:
        if self._observer is None:
            return run_sync(self._engine, call, self._pool, gate, self.settings.execution.cascade_threshold)
        with self._observer.generate(call):  # the call's span, when tracing is installed
            return run_sync(self._engine, call, self._pool, gate, self.settings.execution.cascade_threshold)

    def _pool(self) -> ThreadPoolExecutor:
        with self._inflight_lock:
            if self._executor is None:
                # hedged attempts run here; created on first hedge, not per request
                self._executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pixelroute-hedge")
            return self._executor

    def _deduplicated(self, call: Call, gate: Gate | None) -> Result:
        key = _dedupe_key(call)
        with self._inflight_lock:
            shared = self._dedupe.get(key)
            owner = shared is None
            if owner:
                shared = self._dedupe[key] = Future()
        assert shared is not None
        if not owner:
            joined = shared.result(timeout=call.deadline.timeout())
            if call.listener is not None:  # it ran elsewhere: this caller hears only the end
                call.listener(done_event(joined))
            return joined
        try:
            result = self._run(call, gate)
            shared.set_result(result)
            return result
        except BaseException as exc:
            shared.set_exception(exc)
            raise
        finally:
            with self._inflight_lock:
                self._dedupe.pop(key, None)

    def warmup(self, backends: Iterable[str] | None = None) -> dict[str, float]:
        """Load what the first requests would load (local pipelines), so that they do not pay for it.

        ``backends`` names the ones to warm (default: all; remote ones have nothing to load).
        Idempotent; returns the seconds each took. A backend that fails to load raises an error
        naming it (the cause chained) and the ones after it are not loaded.
        """
        from . import _warmup

        if self._closed:
            raise PixelrouteError("this client is closed")
        targets = _warmup.warmup_targets(self.backends, backends)
        took: dict[str, float] = {}
        for backend in targets:
            try:
                took[backend.name] = backend.warmup()
            except Exception as exc:
                raise _warmup.warmup_failed(backend, exc) from exc
            _warmup.report(backend, took[backend.name])
        _warmup.check_still_loaded(targets)
        return took

    def resume(self, request_id: str, sla: SLA | dict[str, Any] | None = None) -> Result:
        """Collect a remote result that finished after this client gave up on it (already paid)."""
        from ._resume import resume_sync

        return resume_sync(self, request_id, build_sla(sla))

    def close(self) -> None:
        """Flush telemetry and release every backend's resources."""
        if self._closed:
            return
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        for b in self.backends.values():
            b.close()
        self._close_common()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(BaseClient):
    """The asyncio twin of :class:`Client`; cancellation of the awaiting task stops the work.

    ::

        async with AsyncClient.from_config("pixelroute.toml") as client:
            r = await client.generate("a red bicycle", sla=SLA(deadline_s=8))
    """

    def __init__(self, config: ConfigSource = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._dedupe_tasks: dict[str, asyncio.Task[Result]] = {}

    async def generate(
        self,
        prompt: str,
        sla: SLA | dict[str, Any] | None = None,
        *,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        n: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        scheduler: str | None = None,
        seed: int | None = None,
        backend: str | None = None,
        cancel: CancelToken | None = None,
        dedupe: bool | None = None,
        cascade: bool | None = None,
        on_progress: Listener | None = None,
        previews: int = 0,
    ) -> Result:
        """Generate images for ``prompt`` within ``sla``; see :meth:`Client.generate`.

        ``on_progress`` is called on this event loop, whichever thread an event comes from.
        """
        knobs = dict(negative_prompt=negative_prompt, width=width, height=height, n=n, steps=steps,
                     guidance=guidance, scheduler=scheduler, seed=seed)
        call = self._prepare(prompt, sla, knobs, backend, cancel, listener_for(on_progress, on_loop=True), previews)
        return await self._execute(call, dedupe, cascade)

    async def edit(
        self,
        image: Any,
        prompt: str,
        sla: SLA | dict[str, Any] | None = None,
        *,
        mask: Any = None,
        strength: float | None = None,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        n: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        scheduler: str | None = None,
        seed: int | None = None,
        backend: str | None = None,
        cancel: CancelToken | None = None,
        dedupe: bool | None = None,
        cascade: bool | None = None,
        on_progress: Listener | None = None,
        previews: int = 0,
    ) -> Result:
        """Edit ``image`` as ``prompt`` says within ``sla``; see :meth:`Client.edit`.

        Encoded inputs (bytes, paths) are decoded and checked in a worker thread, off the event
        loop (a 1024x1024 PNG takes tens of milliseconds); PIL images are checked in place.
        ``on_progress`` is called on this event loop, as for :meth:`generate`.
        """
        knobs = dict(mask=mask, strength=strength, negative_prompt=negative_prompt, width=width, height=height,
                     n=n, steps=steps, guidance=guidance, scheduler=scheduler, seed=seed)
        args = (image, prompt, sla, knobs, backend, cancel, listener_for(on_progress, on_loop=True), previews)
        if _decoded(image) and _decoded(mask):
            call = self._prepare_edit(*args)
        else:
            call = await asyncio.to_thread(self._prepare_edit, *args)
        return await self._execute(call, dedupe, cascade)

    async def _execute(self, call: Call, dedupe: bool | None, cascade: bool | None) -> Result:
        gate = self._gate_for(cascade)
        if dedupe if dedupe is not None else self.settings.execution.dedupe:
            key = _dedupe_key(call)
            task = self._dedupe_tasks.get(key)
            owner = task is None
            if task is None:
                task = asyncio.ensure_future(self._run(call, gate))
                self._dedupe_tasks[key] = task
                task.add_done_callback(functools.partial(self._forget_task, key))
            result = await asyncio.shield(task)
            if not owner and call.listener is not None:  # it ran elsewhere: this caller hears only the end
                call.listener(done_event(result))
            return result
        return await self._run(call, gate)

    def stream(
        self, prompt: str, sla: SLA | dict[str, Any] | None = None, **options: Any
    ) -> AsyncGenerator[Event, None]:
        """``async for event in client.stream(...)``: :meth:`generate`'s events, ending with ``Done``.

        Takes :meth:`generate`'s arguments but ``on_progress``; the call runs as a task from the
        first ``__anext__``, its error is raised by the iterator, and leaving early (``aclose()``,
        or cancelling the consuming task) cancels it.
        """
        async def run(listener: Listener) -> Result:
            return await self.generate(prompt, sla, on_progress=listener, **options)

        return stream_async(run)

    def stream_edit(
        self, image: Any, prompt: str, sla: SLA | dict[str, Any] | None = None, **options: Any
    ) -> AsyncGenerator[Event, None]:
        """``async for event in client.stream_edit(image, prompt, ...)``: :meth:`edit`'s events; as :meth:`stream`."""
        async def run(listener: Listener) -> Result:
            return await self.edit(image, prompt, sla, on_progress=listener, **options)

        return stream_async(run)

    def _forget_task(self, key: str, _task: object) -> None:
        self._dedupe_tasks.pop(key, None)

    async def _run(self, call: Call, gate: Gate | None) -> Result:
        if self._observer is None:
            return await run_async(self._engine, call, gate, self.settings.execution.cascade_threshold)
        with self._observer.generate(call):  # the call's span, when tracing is installed
            return await run_async(self._engine, call, gate, self.settings.execution.cascade_threshold)

    async def warmup(self, backends: Iterable[str] | None = None) -> dict[str, float]:
        """Async twin of :meth:`Client.warmup`; loads run off the event loop."""
        from . import _warmup

        if self._closed:
            raise PixelrouteError("this client is closed")
        targets = _warmup.warmup_targets(self.backends, backends)
        took: dict[str, float] = {}
        for backend in targets:
            try:
                took[backend.name] = await backend.awarmup()
            except Exception as exc:
                raise _warmup.warmup_failed(backend, exc) from exc
            _warmup.report(backend, took[backend.name])
        _warmup.check_still_loaded(targets)
        return took

    async def resume(self, request_id: str, sla: SLA | dict[str, Any] | None = None) -> Result:
        """Async twin of :meth:`Client.resume`."""
        from ._resume import resume_sync

        return await asyncio.to_thread(resume_sync, self, request_id, build_sla(sla))

    async def aclose(self) -> None:
        """Flush telemetry and release every backend's resources."""
        if self._closed:
            return
        for b in self.backends.values():
            await b.aclose()
        await asyncio.to_thread(self._close_common)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# -- construction helpers --------------------------------------------------------------------


def _settings(config: ConfigSource, backends: list[Backend] | None) -> Settings:
    if isinstance(config, Settings):
        return config
    if config is None:
        # explicit backends need no config; nothing at all means the embedded default
        return load_settings(None) if backends is not None else embedded_default()
    return load_settings(config)


def _store_stats(store: Any, recorder: Any, since: Any = None) -> dict[str, Any]:
    """:meth:`BaseClient.stats` of a client with this store and recorder (``{}`` without telemetry)."""
    from .telemetry import compute_stats
    from .telemetry._recorder import flush_before_read

    if store is None:
        return {}
    flush_before_read(recorder)  # let a read see what was just recorded
    out: dict[str, Any] = compute_stats(store.iter_records(since=since), since=since)
    out["losses"] = store.losses(since)  # drops by any process writing to this store
    return out


def _warn_of_mocks_beside_real_backends(settings: Settings) -> None:
    # A `mock` backend is free and instant, so a config that keeps one next to real backends
    # (a copied example) quietly answers most requests with solid-colour images: say so at start.
    mocks = [b.name for b in settings.backends if b.kind == "mock"]
    if mocks and len(mocks) < len(settings.backends):
        logger.warning(
            "backend(s) %s are kind `mock`: solid-colour images at no cost, so the router will send them "
            "most requests; mock backends are for tests and demos, remove them from a real config",
            ", ".join(f"`{name}`" for name in mocks),
        )


def _build_router(settings: Settings) -> Router:
    from pixelroute.router import Router

    rs = settings.router
    kwargs: dict[str, Any] = dict(
        correction_cost_per_hour=rs.correction_cost_per_hour,
        exploration=rs.exploration,
        sla_confidence=rs.sla_confidence,
        best_effort=rs.on_infeasible == "best_effort",
        seed=rs.seed,
    )
    if rs.model and (Path(rs.model) / "manifest.json").exists():
        try:
            return Router.load(rs.model, **kwargs)
        except (ValueError, OSError) as exc:  # pixelroute.router.ArtifactError (a ValueError) names the file at fault
            raise ConfigError(f"`router.model` {rs.model!r} cannot be loaded: {exc}") from exc
    if rs.model:
        logger.info("router artifact %r not found; using the cold-start policy", rs.model)
    return Router.cold_start(**kwargs)


def _build_recorder(settings: Settings, url: str) -> tuple[Any, Any]:
    if not settings.telemetry.enabled:
        return _NullRecorder(), None
    from .telemetry import Recorder, open_store

    t = settings.telemetry
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    store = open_store(url)
    recorder = Recorder(
        store,
        queue_size=t.queue_size,
        on_full=t.on_full,
        block_timeout_s=t.block_timeout_s,
        flush_interval_s=t.flush_interval_s,
        batch_size=t.batch_size,
        prompt_retention=t.prompt_retention,
    )
    return recorder, store


def _decoded(value: Any) -> bool:
    """Whether an edit input needs no decoding (absent, or a PIL image; Pillow is loaded by then)."""
    if value is None:
        return True
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(value, pil.Image)


def _dedupe_key(call: Call) -> str:
    req: GenerateRequest = call.request
    payload = json.dumps([*req.identity(), call.pinned], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


__all__ = ["AsyncClient", "BaseClient", "Client", "ValidationError"]
