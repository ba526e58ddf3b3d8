"""The recorder: ``generate()`` only enqueues, a background thread batches records into the store.

Request path cost is one ``deque.append`` and two length checks (well under a microsecond; the
target is p99 <= 20 µs). Everything slow (retention, JSON, redaction, SQL) runs on the writer
thread. The queue is bounded; when it is full the policy is explicit:

* ``on_full="drop"``: the record is dropped and counted;
* ``on_full="block"``: the caller waits up to ``block_timeout_s`` for room, then drops and counts.

A drop is never silent: ``stats()["dropped"]``, a rate-limited ``logging.warning``, and a row in
the store's ``losses`` table that ``pixelroute stats`` (any process) reports. The writer commits
at least every ``flush_interval_s``, on :meth:`flush`, on :meth:`close` and at interpreter exit,
so a crash loses at most the last flush window. A failing store is retried with backoff; the
batch is kept meanwhile (while it is, new records fill the queue and then count as drops).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
import weakref
from collections import deque
from typing import Any, Literal

from .._errors import ConfigError, PixelrouteError, ValidationError
from .._redact import redact, register_secret
from ._record import RETENTION_MODES, apply_retention
from ._store import Store, encode

log = logging.getLogger("sdk.telemetry")

OnFull = Literal["drop", "block"]
#: at most one drop / write-error warning per this many seconds per recorder
WARN_INTERVAL_S = 10.0
_CREDENTIAL_ENV = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)


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
        # counters written by the writer thread only, except _dropped (under _drop_lock)
        self._taken = 0
        self._written = 0
        self._invalid = 0
        self._write_errors = 0
        self._dropped = 0
        self._dropped_persisted = 0
        self._drop_lock = threading.Lock()
        self._last_drop_warning = 0.0
        self._last_error_warning = 0.0
        self._flush_requests = 0
        self._flush_done = 0
        self._close_attempts = 0
        self._closing = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pixelroute-telemetry", daemon=True)
        self._thread.start()
        # a weak reference: registering the bound method would keep every recorder alive forever
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            recorder = ref()
            if recorder is not None:
                recorder.close()

        self._atexit = close_at_exit
        atexit.register(close_at_exit)

    # -- request path ----------------------------------------------------------------------
    def record(self, record: dict[str, Any]) -> bool:
        """Enqueue one record (never blocks with ``on_full="drop"``). False if it was dropped."""
        queue = self._queue
        if len(queue) < self.queue_size and not self._closing:
            queue.append(record)
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
                    return True
        self._count_drop("queue_full")
        return False

    def _count_drop(self, reason: str) -> None:
        with self._drop_lock:
            self._dropped += 1
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
        """Block until every record enqueued before this call is in the store.

        Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds (e.g. the store
        is down and the writer keeps retrying).
        """
        if self._closed or threading.current_thread() is self._thread:
            return
        with self._flushed:
            self._flush_requests += 1
            ticket = self._flush_requests
            self._wake.set()
            ok = self._flushed.wait_for(lambda: self._flush_done >= ticket or self._closed, timeout)
        if not ok:
            raise TimeoutError(f"telemetry flush did not finish within {timeout} s ({self.stats()})")

    def close(self) -> None:
        """Flush what is queued and stop the writer thread. Safe to call twice."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        with self._room:
            self._room.notify_all()
        self._thread.join()
        atexit.unregister(self._atexit)
        if self._queue:  # a record() that raced with close(): write it here, the writer is gone
            leftovers = list(self._queue)
            self._queue.clear()
            self._taken += len(leftovers)
            if not self._write(leftovers):
                with self._drop_lock:
                    self._dropped += len(leftovers)
                log.error("pixelroute telemetry lost %d records at close: the store failed", len(leftovers))

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

    # -- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
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
            # This pass covers what is queued now, no more: under sustained load a pass still
            # ends, so flush() returns and losses get persisted.
            budget = len(self._queue)
            failed = False
            while pending or budget > 0:
                if not pending:
                    pending = self._take(min(budget, self.batch_size))
                    budget -= len(pending)
                if not self._write(pending):
                    failed = True
                    break
                pending = []
            self._persist_losses()
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
        self._closed = True
        with self._flushed:
            self._flushed.notify_all()

    def _take(self, count: int) -> list[dict[str, Any]]:
        popleft = self._queue.popleft
        batch = [popleft() for _ in range(count)]
        self._taken += count
        if self.on_full == "block":
            with self._room:
                self._room.notify_all()
        return batch

    def _write(self, batch: list[dict[str, Any]]) -> bool:
        mode = self.prompt_retention
        records = batch if mode == "full" else [apply_retention(r, mode) for r in batch]
        try:
            self.store.write_batch(records)
        except ValidationError:
            self._write_one_by_one(records)
        except Exception as exc:  # noqa: BLE001 - any store failure is retried, never raised into a thread
            self._write_errors += 1
            self._warn_error(exc, len(batch))
            return False
        else:
            self._written += len(batch)
        return True

    def _write_one_by_one(self, records: list[dict[str, Any]]) -> None:
        """A malformed record must not sink its batch: write the good ones, count and log the rest."""
        good = []
        for record in records:
            try:
                encode(record)
                good.append(record)
            except ValidationError as exc:
                self._invalid += 1
                log.warning("pixelroute telemetry refused a malformed record: %s", redact(str(exc)))
        if good:
            self.store.write_batch(good)
        self._written += len(good)

    def _warn_error(self, exc: BaseException, size: int) -> None:
        now = time.monotonic()
        if now - self._last_error_warning >= WARN_INTERVAL_S:
            self._last_error_warning = now
            message = redact(f"{type(exc).__name__}: {exc}")
            log.warning("pixelroute telemetry could not write %d records, will retry: %s", size, message)

    def _persist_losses(self) -> None:
        new = self._dropped - self._dropped_persisted
        if new <= 0:
            return
        try:
            self.store.record_losses(new, "queue_full")
            self._dropped_persisted += new
        except (PixelrouteError, Exception) as exc:  # noqa: BLE001 - retried on the next pass
            self._warn_error(exc, 0)

    def _give_up(self, pending: list[dict[str, Any]]) -> bool:
        """At close, after a few retries, count what cannot be written as dropped (and say so loudly)."""
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
