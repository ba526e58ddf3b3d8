"""Progress events delivered where the caller is: on its event loop, or through a generator it drains.

:class:`LoopListener` hands events raised on worker threads (a pipeline's, ``asyncio.to_thread``)
to the loop with ``call_soon_threadsafe``, which queues them ahead of the result an attempt's
future reports later from the same thread, so they keep their order. :func:`stream_async` and
:func:`stream_sync` turn a callback into an iterator that ends with :class:`~pixelroute.events.Done`
(or raises the call's error); leaving the iterator early cancels the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING

from ._deadline import CancelToken
from .events import MAX_PREVIEWS, Done, Event, Listener, SafeListener

if TYPE_CHECKING:
    from ._types import Result

#: how long a generator left early waits for its cancelled call to stop (a denoising step, a cancel call)
_STOP_GRACE_S = 5.0
_END = object()


class LoopListener:
    """Calls ``listener`` on the event loop that built it, whichever thread the event comes from."""

    __slots__ = ("listener", "loop", "thread")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()

    def __call__(self, event: Event) -> None:
        if threading.get_ident() == self.thread:
            self.listener(event)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: a late racer's step has no one to hear it
            self.loop.call_soon_threadsafe(self.listener, event)


def listener_for(on_progress: Listener | None, *, on_loop: bool = False) -> Listener | None:
    """The call's listener: the caller's callback made safe (and loop-bound for the async client)."""
    if on_progress is None:
        return None
    safe = SafeListener(on_progress)
    return LoopListener(safe) if on_loop else safe


def check_previews(previews: object, listener: Listener | None) -> int:
    """``previews`` validated: an integer in range, and someone to hand the partial images to."""
    if isinstance(previews, bool) or not isinstance(previews, int) or not 0 <= previews <= MAX_PREVIEWS:
        from ._errors import ValidationError

        raise ValidationError(f"`previews` must be an integer from 0 to {MAX_PREVIEWS} but is {previews!r}",
                              field="previews", value=previews)
    if previews and listener is None:
        from ._errors import ValidationError

        raise ValidationError(f"`previews` needs `on_progress` (or `stream()`) to receive the partial images "
                              f"but is {previews} without it", field="previews", value=previews)
    return previews


def done_event(result: Result) -> Done:
    return Done(result.request_id, result.backend, result)


async def stream_async(
    run: Callable[[Listener], Awaitable[Result]], stop: Callable[[], None] | None = None
) -> AsyncGenerator[Event, None]:
    """Run ``run(listener)`` as a task and yield what it hears, then its result as ``Done``.

    Leaving early cancels the task, after ``stop()`` (what stops work a task cannot interrupt).
    """
    events: asyncio.Queue[object] = asyncio.Queue()
    task = asyncio.ensure_future(run(events.put_nowait))
    # scheduled after every event the call delivered before it finished
    task.add_done_callback(lambda _: events.put_nowait(_END))
    finished = False
    try:
        while (event := await events.get()) is not _END:
            finished = finished or isinstance(event, Done)
            yield event  # type: ignore[misc]
        result = task.result()  # raises the call's error
        if not finished:  # the call joined an identical one in flight (dedupe): it heard nothing itself
            yield done_event(result)
    finally:
        if not task.done():
            if stop is not None:
                stop()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def stream_threaded(run: Callable[[Listener, CancelToken], Result]) -> AsyncGenerator[Event, None]:
    """A sync client's call (``run(listener, token)``) on a worker thread, its events yielded on this loop.

    For async views over the sync :class:`~pixelroute.Client` (Django): leaving early cancels the
    call's token, which stops it at its next step or poll.
    """
    token = CancelToken()

    async def call(listener: Listener) -> Result:
        return await asyncio.to_thread(run, LoopListener(listener), token)

    return stream_async(call, stop=token.cancel)


def stream_sync(
    run: Callable[[Listener, CancelToken], Result], cancel: CancelToken | None
) -> Generator[Event, None, None]:
    """Run ``run(listener, token)`` on a thread and yield what it hears, then its result as ``Done``."""
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    token = CancelToken()
    if cancel is not None:
        cancel.on_cancel(token.cancel)
    outcome: list[Result | BaseException] = []

    def work() -> None:
        try:
            outcome.append(run(events.put, token))
        except BaseException as exc:  # handed to the iterating thread, which raises it
            outcome.append(exc)
        finally:
            events.put(_END)

    thread = threading.Thread(target=work, name="pixelroute-stream", daemon=True)
    thread.start()
    finished = False
    try:
        while (event := events.get()) is not _END:
            finished = finished or isinstance(event, Done)
            yield event  # type: ignore[misc]
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        if not finished:
            yield done_event(result)
    finally:
        if thread.is_alive():  # left early: stop the call rather than pay for an unread result
            token.cancel()
            thread.join(_STOP_GRACE_S)
