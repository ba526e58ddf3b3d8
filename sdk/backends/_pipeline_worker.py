"""One worker thread per loaded pipeline: diffusers pipelines are not thread-safe.

Callers put :class:`Job` objects on the worker's queue and wait on the job's future; the worker
runs them one call at a time, so calls on one pipeline are serialised while different
pipelines (different backends) run in parallel, with no global lock.

Micro-batching: when a job allows batching (``batch_limit > 1``), the worker gathers jobs with
the same ``key`` (same pipeline call shape) into one call, up to ``batch_limit`` images,
waiting at most ``window_s`` for more to arrive; jobs that queued while the previous call ran
join without any wait (``window_s = 0`` batches only those). A job whose deadline cannot
afford the wait is not held back: the worker waits only as long as every job still fits.
Incompatible jobs seen while gathering keep their order and run next.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .._deadline import Deadline
from .._errors import Cancelled, DeadlineExceeded

log = logging.getLogger("pixelroute.diffusers")

#: runs a batch of compatible jobs and settles every job's future
Runner = Callable[[list["Job"]], None]
#: predicted seconds for a batch (``None`` when nothing has been measured yet)
Predictor = Callable[[list["Job"]], float | None]


@dataclass(eq=False)
class Job:
    """One request waiting for (or inside) a pipeline call."""

    payload: Any
    deadline: Deadline
    runner: Runner
    #: jobs batch together only when their keys are equal; ``None`` never batches
    key: Hashable | None = None
    images: int = 1
    batch_limit: int = 1
    window_s: float = 0.0
    predict: Predictor | None = None
    future: Future[Any] = field(default_factory=Future)
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _started: bool = False
    _state_lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel(self) -> None:
        """Drop the job if it is still queued, else interrupt its denoising loop at the next step."""
        self._cancelled.set()
        with self._state_lock:
            queued = not self._started
        if queued:
            self.fail(Cancelled("the request was cancelled before its pipeline call started"))

    def start(self) -> bool:
        """Mark the job running; ``False`` if it was settled (cancelled) first."""
        with self._state_lock:
            if self.future.done():
                return False
            self._started = True
            return True

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set() or self.deadline.cancelled or self.future.cancelled()

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def succeed(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)


_STOP = object()


class PipelineWorker:
    """A thread and a queue in front of one pipeline; started on the first job."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending: collections.deque[Job] = collections.deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._busy = 0  # jobs submitted and not yet settled
        #: ``time.thread_time`` is only meaningful on the thread that runs the pipeline
        self.thread_id: int | None = None

    @property
    def busy(self) -> int:
        return self._busy

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"pipeline worker {self.name} is closed")
            self._busy += 1
            job.future.add_done_callback(self._settled)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"pixelroute-{self.name}",
                                                daemon=True)
                self._thread.start()
        self._queue.put(job)

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish queued jobs, then stop the thread (jobs queued after this are refused)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def _settled(self, _: Future[Any]) -> None:
        with self._lock:
            self._busy -= 1

    # -- the worker thread ------------------------------------------------------------------

    def _loop(self) -> None:
        self.thread_id = threading.get_ident()
        while True:
            job = self._pending.popleft() if self._pending else self._queue.get()
            if job is _STOP:
                if self._pending:  # jobs put back while gathering still run before stopping
                    self._queue.put(_STOP)
                    continue
                return
            if _refuse_if_dead(job):
                continue
            batch = self._gather(job) if job.batch_limit > 1 and job.key is not None else [job]
            batch = [j for j in batch if j.start()]
            if not batch:
                continue
            try:
                job.runner(batch)
            except BaseException as exc:  # the runner settles futures; this is the safety net
                log.exception("pipeline worker %s: runner failed", self.name)
                for j in batch:
                    j.fail(exc)

    def _gather(self, first: Job) -> list[Job]:
        batch = [first]
        images = first.images
        # jobs already waiting (put back while gathering an earlier batch) come first
        for job in list(self._pending):
            if images >= first.batch_limit:
                break
            if job.key == first.key and images + job.images <= first.batch_limit and _fits(batch + [job]):
                self._pending.remove(job)
                batch.append(job)
                images += job.images
        wait_until = time.monotonic() + _affordable_wait(batch, first.window_s)
        while images < first.batch_limit:
            left = wait_until - time.monotonic()
            try:
                # jobs that queued while the previous call ran join at once, even with no window
                # left: that is where batching pays without making anyone wait
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                self._pending.append(job)
                break
            if _refuse_if_dead(job):
                continue
            if job.key == first.key and images + job.images <= first.batch_limit and _fits(batch + [job]):
                batch.append(job)
                images += job.images
                # a newcomer with a tighter deadline shortens the wait for everyone
                wait_until = min(wait_until, time.monotonic() + _affordable_wait(batch, first.window_s))
            else:
                self._pending.append(job)
        return batch


def _refuse_if_dead(job: Job) -> bool:
    """Settle a job that was cancelled or whose deadline passed while it queued."""
    if job.future.done():
        return True
    if job.cancelled:
        job.fail(Cancelled("the request was cancelled before its pipeline call started"))
        return True
    if job.deadline.expired():
        job.fail(DeadlineExceeded("the deadline passed while the request waited for the pipeline"))
        return True
    return False


def _affordable_wait(batch: list[Job], window_s: float) -> float:
    """How long the batch may wait for more jobs: the window, cut to the tightest slack."""
    predicted = _predicted(batch)
    slack = min(j.deadline.remaining() for j in batch) - predicted
    return max(0.0, min(window_s, slack))


def _fits(batch: list[Job]) -> bool:
    """Whether the bigger batch would still finish before every member's deadline."""
    predicted = _predicted(batch)
    return all(j.deadline.remaining() >= predicted for j in batch)


def _predicted(batch: list[Job]) -> float:
    predict = batch[0].predict
    value = predict(batch) if predict is not None else None
    return 0.0 if value is None or math.isnan(value) else value
