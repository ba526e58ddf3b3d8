"""Progress events of one generation: what was decided, what runs, how far it has got, how it ended.

Pass a callback, or iterate::

    client.generate("a red bicycle", on_progress=print)          # any callable taking one event

    async for event in aclient.stream("a red bicycle", previews=2):
        if isinstance(event, Step) and event.previews:
            show(event.previews[0])                                # a partial image
        elif isinstance(event, Done):
            save(event.result.image)

The events, in the order a call sends them (``type`` is each one's name on the wire):

- :class:`Decided` -- the router chose a backend for an attempt, and why.
- :class:`AttemptStarted` -- that attempt was handed to its backend.
- :class:`Step` -- a local pipeline finished denoising step ``step`` of ``steps``.
- :class:`JobStatus` -- a job API reported its job ``queued`` or ``processing`` (Replicate).
- :class:`Fallback` -- an attempt failed and the call looks for another backend (it raises
  when none fits what is left of the deadline and budget).
- :class:`Done` -- the call's result (the last event of a call that succeeds; a failed call
  raises instead).

A hedge or a cascade escalation is one more ``Decided`` + ``AttemptStarted`` pair, with its own
attempt number. Events are cheap when nobody listens: without a callback nothing is built, and
a pipeline step costs one attribute check. A callback that raises is logged once per call and
never breaks the generation. Callbacks of :class:`~pixelroute.Client` may run on a worker
thread (the pipeline's, a hedge's); those of :class:`~pixelroute.AsyncClient` run on its event
loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from ._types import Result

logger = logging.getLogger("pixelroute")

#: the most partial images a call may ask for (a VAE decode each)
MAX_PREVIEWS = 50


@dataclass(frozen=True, slots=True)
class Decided:
    """The router chose ``backend`` for attempt ``attempt``; ``why`` is its reason."""

    type: ClassVar[str] = "decided"
    request_id: str
    attempt: int
    backend: str
    why: str
    policy: str
    #: the chosen candidate's predictions (``None`` when the backend was pinned without one)
    latency_p50_s: float | None = None
    cost_usd: float | None = None
    #: a second attempt beside a slow one (``SLA(hedge=True)``)
    hedge: bool = False


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    """Attempt ``attempt`` was handed to ``backend``, with ``deadline_s`` left (``None``: no deadline)."""

    type: ClassVar[str] = "attempt_started"
    request_id: str
    attempt: int
    backend: str
    deadline_s: float | None
    hedge: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """A local pipeline finished denoising step ``step`` of ``steps`` (1-based).

    ``previews`` holds one partial image per requested image (PIL, the intermediate latents
    decoded) on the steps a call's ``previews`` count picked, and is empty on the others.
    """

    type: ClassVar[str] = "step"
    request_id: str
    attempt: int
    backend: str
    step: int
    steps: int
    previews: tuple[Any, ...] = ()
    #: which of the call's partial images this is (0-based), when ``previews`` is not empty
    preview_index: int | None = None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job API reported its job ``queued`` (accepted, not running yet) or ``processing``.

    ``provider_status`` is the provider's own word (Replicate: ``starting``, ``processing``).
    """

    type: ClassVar[str] = "job_status"
    request_id: str
    attempt: int
    backend: str
    status: Literal["queued", "processing"]
    provider_status: str
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class Fallback:
    """Attempt ``attempt`` on ``backend`` failed with ``error`` (a stable code); the call looks for another."""

    type: ClassVar[str] = "fallback"
    request_id: str
    attempt: int
    backend: str
    error: str
    message: str


@dataclass(frozen=True, slots=True)
class Done:
    """The call succeeded: ``result`` is what ``generate()`` returns."""

    type: ClassVar[str] = "done"
    request_id: str
    backend: str
    result: Result = field(repr=False)


Event = Decided | AttemptStarted | Step | JobStatus | Fallback | Done
Listener = Callable[[Event], object]


def to_dict(event: Event) -> dict[str, Any]:
    """The event as JSON-ready data: its ``type`` and fields, without images (``previews`` is a count)."""
    data: dict[str, Any] = {"type": event.type}
    for name in event.__dataclass_fields__:
        value = getattr(event, name)
        if name == "previews":
            data["previews"] = len(value)
        elif name == "result":
            data.update(cost_usd=value.cost_usd, latency_s=value.latency_s, images=len(value.images))
        else:
            data[name] = value
    return data


class SafeListener:
    """A caller's callback that can never break a generation: its first error is logged, the rest dropped."""

    __slots__ = ("callback", "failed")

    def __init__(self, callback: Listener) -> None:
        self.callback = callback
        self.failed = False

    def __call__(self, event: Event) -> None:
        try:
            self.callback(event)
        except Exception:
            if not self.failed:
                self.failed = True
                logger.warning("pixelroute: the on_progress callback raised on a %s event; the generation "
                               "goes on and its later errors are not logged", event.type, exc_info=True)


class AttemptProgress:
    """How a backend reports an attempt's progress: ``deadline.progress`` when someone listens, else ``None``.

    ``step`` (local pipelines) and ``status`` (job APIs) build an event only when called, so a
    backend pays one ``is None`` check when nobody listens.
    """

    __slots__ = ("emit", "request_id", "attempt", "backend", "previews", "_at", "_sent")

    def __init__(self, emit: Listener, request_id: str, attempt: int, backend: str, previews: int = 0) -> None:
        self.emit = emit
        self.request_id = request_id
        self.attempt = attempt
        self.backend = backend
        #: how many partial images the call asked for
        self.previews = previews
        self._at: tuple[int, frozenset[int]] | None = None
        self._sent = 0

    def wants_preview(self, step: int, steps: int) -> bool:
        """Whether step ``step`` of ``steps`` should carry partial images (decoding them is the backend's cost)."""
        if not self.previews:
            return False
        if self._at is None or self._at[0] != steps:
            self._at = (steps, preview_steps(self.previews, steps))
        return step in self._at[1]

    def step(self, step: int, steps: int, previews: tuple[Any, ...] = ()) -> None:
        index = None
        if previews:
            index, self._sent = self._sent, self._sent + 1
        self.emit(Step(self.request_id, self.attempt, self.backend, step, steps, previews, index))

    def status(self, status: Literal["queued", "processing"], provider_status: str, job_id: str | None = None) -> None:
        self.emit(JobStatus(self.request_id, self.attempt, self.backend, status, provider_status, job_id))


def preview_steps(previews: int, steps: int) -> frozenset[int]:
    """The steps (1-based) that carry partial images: ``previews`` of them spread evenly, never the last.

    The last step's image is the result itself, so a run of fewer steps than ``previews + 1``
    sends fewer partial images (OpenAI's ``partial_images`` allows that: the final image may
    come first).
    """
    if previews <= 0 or steps <= 1:
        return frozenset()
    picked = {math.ceil(steps * (i + 1) / (previews + 1)) for i in range(previews)}
    return frozenset(s for s in picked if 1 <= s < steps)


__all__ = [
    "AttemptProgress",
    "AttemptStarted",
    "Decided",
    "Done",
    "Event",
    "Fallback",
    "JobStatus",
    "Listener",
    "Step",
    "preview_steps",
    "to_dict",
]
