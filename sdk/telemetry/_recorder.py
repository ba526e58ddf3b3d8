"""The recorder: ``generate()`` only enqueues, a background thread batches records into the store.

Request path cost is one ``deque.append`` and two length checks (well under a microsecond; the
target is p99 <= 20 µs). Everything slow (retention, JSON, redaction, SQL) runs on the writer
thread. The queue is bounded; when it is full the policy is explicit:

* ``on_full="drop"``: the record is dropped and counted;
* ``on_full="block"``: the caller waits up to ``block_timeout_s`` for room, then drops and counts.

A drop is never silent: ``stats()["dropped"]``, a rate-limited ``logging.warning``, and a row in
the store's ``losses`` table that ``pixelroute stats`` (any process) reports. The writer commits
at least every ``flush_interval_s``, on :meth:`flush`, on :meth:`close` and at interpreter exit,
so a crash loses at most what was queued: the last flush window (plus, while the store is down,
what piled up). A failing store is retried with backoff; the batch is kept meanwhile (while it
is, new records fill the queue and then count as drops).

Nothing blocks for ever or dies quietly:

* a record the store cannot hold (a lone surrogate, a missing key) is quarantined and counted in
  ``losses`` as ``invalid``; the rest of its batch is written (see ``_encode``);
* the writer survives any single record and any store error; ``flush(timeout)`` and
  ``close(timeout)`` are bounded;
* every enqueued record is counted in a memory-mapped marker file (see ``_marker``), so the
  next recorder on the store counts what a ``kill -9`` lost, in ``losses`` as ``unwritten``.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import re
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Literal, Protocol

from .._errors import ConfigError, ValidationError
from .._redact import redact, register_secret
from . import _marker
from ._encode import EncodedBatch, encode, is_data_error, reject
from ._record import RETENTION_MODES, apply_retention
from ._store import Store

log = logging.getLogger("pixelroute.telemetry")

OnFull = Literal["drop", "block"]
#: at most one drop / write-error warning per this many seconds per recorder
WARN_INTERVAL_S = 10.0
#: how long a read of what was just recorded (trace, report_correction, stats) waits for the writer
READ_FLUSH_TIMEOUT_S = 10.0
#: how long close() (and so interpreter exit, SIGTERM) waits for the writer to drain the queue
CLOSE_TIMEOUT_S = 30.0
_SLOT_MASK = _marker.SLOTS - 1
_CREDENTIAL_ENV = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)


class Flushable(Protocol):
    def flush(self, timeout: float | None = None) -> None: ...


def flush_before_read(recorder: Flushable, timeout: float | None = None) -> bool:
    """Flush so a read sees what was just recorded, but never hang: after ``timeout`` s (default
    :data:`READ_FLUSH_TIMEOUT_S`), log and go on.

    Returns False when the writer was not done (the read then sees what is stored so far).
    """
    try:
        recorder.flush(timeout=READ_FLUSH_TIMEOUT_S if timeout is None else timeout)
    except TimeoutError as exc:
        log.warning("pixelroute telemetry is behind; reading what is stored so far: %s", exc)
        return False
    return True


def register_environment_secrets() -> None:
    """Defense in depth: treat credential-named environment values as secrets to redact."""
    for name, value in os.environ.items():
        if _CREDENTIAL_ENV.search(name) and len(value) >= 12:
            register_secret(value)


class Recorder:
    """Queue records on the request path; write them in batches on a background thread.

    Usage::

        rec = Recorder(open_store("sqlite:///pixelroute.db"))
        rec.record(record_dict)   # True, or False if dropped (counted, logged, persisted)
        rec.flush()               # everything enqueued so far is in the store
        rec.close()               # flush and stop (also runs at interpreter exit)

    The record dict belongs to the recorder once handed over: do not modify it afterwards.
    """

    def __init__(
        self,
        store: Store,
        queue_size: int = 100_000,
        on_full: OnFull = "drop",
        block_timeout_s: float = 0.05,
        flush_interval_s: float = 1.0,
        batch_size: int = 2000,
        prompt_retention: str = "full",
        marker_dir: str | Path | None = None,
    ) -> None:
        if on_full not in ("drop", "block"):
            raise ConfigError(f"`on_full` must be 'drop' or 'block' but is {on_full!r}")
        if prompt_retention not in RETENTION_MODES:
            raise ConfigError(
                f"`prompt_retention` must be one of {', '.join(RETENTION_MODES)} but is {prompt_retention!r}"
            )
        for name, value in (("queue_size", queue_size), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer but is {value!r}")
        for name, seconds in (("flush_interval_s", flush_interval_s), ("block_timeout_s", block_timeout_s)):
            if not seconds >= 0:
                raise ConfigError(f"`{name}` must be a non-negative number of seconds but is {seconds!r}")
        self.store = store
        self.queue_size = queue_size
        self.on_full = on_full
        self.block_timeout_s = block_timeout_s
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.prompt_retention = prompt_retention
        register_environment_secrets()

        self._queue: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._room = threading.Condition()  # the writer notifies it after draining, for on_full="block"
        self._flushed = threading.Condition()  # the writer notifies it after each batch
        # counters written by the writer thread only, except _dropped/_queue_drops (under _drop_lock)
        self._taken = 0
        self._written = 0
        self._invalid = 0
        self._accounted = 0  # written or quarantined: what the store's session counter holds
        self._write_errors = 0
        self._dropped = 0
        self._queue_drops = 0
        self._queue_drops_persisted = 0
        self._drop_lock = threading.Lock()
        self._last_drop_warning = 0.0
        self._last_error_warning = 0.0
        self._flush_requests = 0
        self._flush_done = 0
        self._close_attempts = 0
        self._closing = False
        self._closed = False
        self._writer_done = False

        # the write-ahead count: request threads store the running count in the mapped file
        self.marker_dir = Path(marker_dir) if marker_dir is not None else _default_marker_dir(store)
        self._marker = _marker.open_marker(self.marker_dir)
        self._session = self._marker.session if self._marker else None
        self._marks = self._marker.slots if self._marker else _private_slots()
        self._sequence = itertools.count(1)
        self._orphans_pending = True

        self._thread = threading.Thread(target=self._run, name="pixelroute-telemetry", daemon=True)
        self._thread.start()
        # a weak reference: registering the bound method would keep every recorder alive forever
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            recorder = ref()
            if recorder is not None:
                recorder.close()

        def forget_marker_in_child() -> None:
            recorder = ref()
            if recorder is not None:
                recorder._forget_marker()

        self._atexit = close_at_exit
        atexit.register(close_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=forget_marker_in_child)

    # -- request path ----------------------------------------------------------------------
    def record(self, record: dict[str, Any]) -> bool:
        """Enqueue one record (never blocks with ``on_full="drop"``). False if it was dropped."""
        queue = self._queue
        if len(queue) < self.queue_size and not self._closing:
            queue.append(record)
            count = next(self._sequence)
            self._marks[count & _SLOT_MASK] = count
            if len(queue) >= self.batch_size and not self._wake.is_set():
                self._wake.set()
            return True
        return self._full(record)

    def _full(self, record: dict[str, Any]) -> bool:
        if self._closing:
            self._count_drop("closed")
            return False
        if self.on_full == "block":
            deadline = time.monotonic() + self.block_timeout_s
            self._wake.set()
            with self._room:
                while len(self._queue) >= self.queue_size and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._room.wait(left)
                if len(self._queue) < self.queue_size and not self._closing:
                    self._queue.append(record)
                    count = next(self._sequence)
                    self._marks[count & _SLOT_MASK] = count
                    return True
        self._count_drop("queue_full")
        return False

    def _count_drop(self, reason: str) -> None:
        with self._drop_lock:
            self._dropped += 1
            if reason == "queue_full":
                self._queue_drops += 1
            now = time.monotonic()
            warn = now - self._last_drop_warning >= WARN_INTERVAL_S
            if warn:
                self._last_drop_warning = now
        if warn:
            log.warning(
                "pixelroute telemetry dropped a record (%s; %d dropped so far, queue_size=%d, on_full=%s)",
                reason,
                self._dropped,
                self.queue_size,
                self.on_full,
            )
        self._wake.set()  # let the writer persist the loss count

    # -- control ---------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Block until every record enqueued before this call is in the store (or quarantined).

        Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds (e.g. the store
        is down and the writer keeps retrying). ``None`` waits as long as it takes: callers on
        a request path pass a timeout (see :func:`flush_before_read`).
        """
        if self._closed or self._writer_done or threading.current_thread() is self._thread:
            return
        with self._flushed:
            self._flush_requests += 1
            ticket = self._flush_requests
            self._wake.set()
            ok = self._flushed.wait_for(lambda: self._flush_done >= ticket or self._writer_done, timeout)
        if not ok:
            raise TimeoutError(f"telemetry flush did not finish within {timeout} s ({self.stats()})")

    def close(self, timeout: float | None = CLOSE_TIMEOUT_S) -> None:
        """Flush what is queued and stop the writer thread. Safe to call twice.

        Waits at most ``timeout`` seconds for the writer (a store that hangs must not stop a
        process from exiting); what is still queued then is logged, and the next recorder on the
        store counts it in ``losses`` as ``unwritten``.
        """
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        with self._room:
            self._room.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._closed = True
            log.error(
                "pixelroute telemetry writer did not finish within %s s (%s); what it has not written is "
                "counted in losses as 'unwritten' when a recorder next opens this store",
                timeout,
                self.stats(),
            )
            return  # the marker stays locked until this process exits: the writer may still finish
        atexit.unregister(self._atexit)
        if self._queue:  # a record() that raced with close(): write it here, the writer is gone
            leftovers = list(self._queue)
            self._queue.clear()
            self._taken += len(leftovers)
            if self._write(leftovers):
                with self._drop_lock:
                    self._dropped += len(leftovers)
                log.error("pixelroute telemetry lost %d records at close: the store failed", len(leftovers))
        self._release_marker()
        self._closed = True

    def stats(self) -> dict[str, int]:
        """Counters: enqueued, written, dropped, queue_depth, write_errors (plus invalid)."""
        depth = len(self._queue)
        return {
            "enqueued": self._taken + depth,
            "written": self._written,
            "dropped": self._dropped,
            "queue_depth": depth,
            "write_errors": self._write_errors,
            "invalid": self._invalid,
        }

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the write-ahead marker ------------------------------------------------------------
    def _release_marker(self) -> None:
        marker = self._marker
        if marker is None:
            return
        settled = self._accounted >= self._taken and not self._queue
        marker.release(delete=settled)
        self._marker = None
        if settled and self._session is not None:
            try:
                self.store.forget_session(self._session)
            except Exception as exc:  # noqa: BLE001 - a leftover counter row is harmless
                self._warn_error(exc, 0)

    def _forget_marker(self) -> None:
        """In a forked child: the marker is the parent's; count nothing more into it."""
        self._marks = _private_slots()
        if self._marker is not None:
            self._marker.forget_in_child()
            self._marker = None
        self._session = None

    def _settle_orphans(self) -> None:
        """Count what processes that are gone enqueued and never wrote (kill -9, crash)."""
        self._orphans_pending = False
        directory = self.marker_dir
        for session, pid, enqueued, fd in _marker.orphans(directory, self._session):
            if enqueued is None:
                log.warning("pixelroute telemetry removed a damaged marker file %s", directory / session)
                _marker.remove(directory, session, fd)
                continue
            try:
                lost = self.store.settle_session(session, enqueued, pid)
            except Exception as exc:  # noqa: BLE001 - kept for the next pass
                _marker.keep(fd)
                self._orphans_pending = True
                self._warn_error(exc, 0)
                return
            _marker.remove(directory, session, fd)
            try:
                self.store.forget_session(session)
            except Exception as exc:  # noqa: BLE001 - a leftover counter row is harmless
                self._warn_error(exc, 0)
            if lost:
                log.warning(
                    "pixelroute telemetry: process %s stopped with %d records enqueued and never written "
                    "(kill -9, crash or a store that was down at exit); counted in losses as 'unwritten'",
                    pid,
                    lost,
                )

    # -- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._writer_done = True
            with self._flushed:
                self._flushed.notify_all()

    def _loop(self) -> None:
        pending: list[dict[str, Any]] = []
        backoff = 0.0
        while True:
            if backoff:
                time.sleep(backoff)  # the store is failing: producers waking us must not make a busy loop
            else:
                self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            closing = self._closing
            with self._flushed:
                ticket = self._flush_requests
            failed = False
            try:
                if self._orphans_pending:
                    self._settle_orphans()
                # This pass covers what is queued now, no more: under sustained load a pass still
                # ends, so flush() returns and losses get persisted.
                budget = len(self._queue)
                while pending or budget > 0:
                    if not pending:
                        pending = self._take(min(budget, self.batch_size))
                        budget -= len(pending)
                    pending = self._write(pending)
                    if pending:
                        failed = True
                        break
                self._persist_losses()
            except Exception as exc:  # noqa: BLE001 - the writer outlives any bug: log, back off, go on
                failed = True
                self._write_errors += 1
                log.exception("pixelroute telemetry writer hit an unexpected error; retrying: %s", redact(str(exc)))
            if failed:
                backoff = min(max(backoff * 2, 0.05), max(self.flush_interval_s, 0.05))
                if closing and self._give_up(pending):
                    break
                continue
            backoff = 0.0
            with self._flushed:
                self._flush_done = max(self._flush_done, ticket)
                self._flushed.notify_all()
            if closing and not self._queue:
                break
            if closing or len(self._queue) >= self.batch_size:
                self._wake.set()

    def _take(self, count: int) -> list[dict[str, Any]]:
        popleft = self._queue.popleft
        batch = [popleft() for _ in range(count)]
        self._taken += count
        if self.on_full == "block":
            with self._room:
                self._room.notify_all()
        return batch

    def _encode(self, batch: list[dict[str, Any]]) -> EncodedBatch:
        """Retention, then rows; a record that cannot be stored is set aside, never raised."""
        mode = self.prompt_retention
        encoded = EncodedBatch()
        for index, record in enumerate(batch):
            try:
                row, correction = encode(record if mode == "full" else apply_retention(record, mode), index)
            except ValidationError as exc:
                encoded.rejected.append(reject(record, str(exc), exc.field))
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. an object whose str() raises: the record's fault
                encoded.rejected.append(reject(record, f"record {index}: {type(exc).__name__}: {exc}"))
                continue
            encoded.rows.append(row)
            if correction is not None:
                encoded.corrections.append(correction)
        return encoded

    def _write(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write ``batch``; returns what is left to retry (``[]`` when all of it is accounted for)."""
        encoded = self._encode(batch)
        try:
            self.store.write_encoded(encoded, self._session)
        except Exception as exc:  # noqa: BLE001 - any store failure is retried or isolated, never raised
            if not is_data_error(exc):
                self._write_errors += 1
                self._warn_error(exc, len(batch))
                return batch
            if len(batch) > 1:  # the store refused something in the data: find the record, one by one
                for i, record in enumerate(batch):
                    if self._write([record]):
                        return batch[i:]
                return []
            message = f"the store refused it: {type(exc).__name__}: {exc}"
            encoded = EncodedBatch(rejected=[reject(batch[0], message)])
            try:
                self.store.write_encoded(encoded, self._session)
            except Exception as again:  # noqa: BLE001 - the store itself is failing now: retry later
                self._write_errors += 1
                self._warn_error(again, 1)
                return batch
        self._written += len(encoded.rows)
        self._invalid += len(encoded.rejected)
        self._accounted += len(batch)
        for rejected in encoded.rejected:
            log.warning("pixelroute telemetry quarantined a record it cannot store: %s", rejected.message)
        return []

    def _warn_error(self, exc: BaseException, size: int) -> None:
        now = time.monotonic()
        if now - self._last_error_warning >= WARN_INTERVAL_S:
            self._last_error_warning = now
            message = redact(f"{type(exc).__name__}: {exc}")
            log.warning("pixelroute telemetry could not write %d records, will retry: %s", size, message)

    def _persist_losses(self) -> None:
        new = self._queue_drops - self._queue_drops_persisted
        if new <= 0:
            return
        try:
            self.store.record_losses(new, "queue_full")
            self._queue_drops_persisted += new
        except Exception as exc:  # noqa: BLE001 - retried on the next pass
            self._warn_error(exc, 0)

    def _give_up(self, pending: list[dict[str, Any]]) -> bool:
        """At close, after a few retries, count what cannot be written as dropped (and say so loudly).

        The marker file is kept, so the next recorder on this store counts them in ``losses``.
        """
        self._close_attempts += 1
        if self._close_attempts < 3:
            return False
        lost = len(pending) + len(self._queue)
        self._taken += len(self._queue)
        self._queue.clear()
        with self._drop_lock:
            self._dropped += lost
        log.error("pixelroute telemetry lost %d records at close: the store kept failing", lost)
        return True


def _default_marker_dir(store: Store) -> Path:
    path = getattr(store, "path", None)
    return _marker.marker_dir_for(store.url, path if isinstance(path, str) else None)


def _private_slots() -> memoryview:
    return memoryview(bytearray(8 * _marker.SLOTS)).cast("Q")
