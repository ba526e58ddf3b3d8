"""What a call does next: the execution state machine shared by the sync and async drivers.

tenacity's shape (``BaseRetrying.iter`` returns ``DoAttempt``/``DoSleep``): :meth:`Execution.next`
decides and returns one action, a thin driver carries it out and reports what happened, and
asks again. The sync driver runs attempts on the calling thread or a thread pool, the async one
awaits them or runs them as tasks (:mod:`pixelroute._drivers`); neither decides anything, so the two
cannot drift apart on cost, attempts or traces. Nothing here does I/O or waits.

The actions:

- :class:`Attempt` -- run this attempt to completion here and :meth:`~Execution.report` it
  (nothing else is in flight: the plain path, the cascade's steps).
- :class:`Start` -- start this attempt beside others (a hedged race) and go on.
- :class:`Wait` -- wait for any started attempt to finish, at most ``timeout`` seconds, and
  report each one that did (none, when the wait ran out).
- :class:`Cancel` -- cancel these started attempts (already recorded) and give them
  ``grace_s`` to stop.
- :class:`Done` -- return ``result``. A call that fails raises from :meth:`~Execution.next`.

How the calls run:

- **Plain**: plan, attempt, judge; a failure re-plans a fallback with what is left.
- **Hedging** (Dean & Barroso, "The Tail at Scale"): when ``SLA(hedge=True)`` and the primary
  has not answered by its predicted latency quantile, start the next affordable candidate;
  the first good result wins and the loser is cancelled (local: interrupted in its denoising
  loop; remote: cancelled where the protocol allows, otherwise abandoned and its cost counted).
  Racers still running ``GRACE_S`` after the deadline are abandoned and the call raises
  ``DeadlineExceeded``.
- **Cascade**: generate on the cheap, fast candidate, score the image with a gate, and
  escalate to the high-fidelity candidate only when the score is below the threshold and
  what is left of the deadline and budget still allows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import DeadlineExceeded, PixelrouteError, error_code
from .events import AttemptStarted, Decided, Fallback
from .events import Done as DoneEvent

if TYPE_CHECKING:
    from pixelroute.router import Candidate, Decision

    from ._engine import Call, Engine, Plan
    from ._types import Result
    from .backends.base import BackendOutput
    from .gates import Gate

#: how long to wait for an attempt that should stop by itself: a cancelled loser (local ones
#: stop within a denoising step) or a racer past the deadline (backends raise their own
#: ``DeadlineExceeded`` at it)
GRACE_S = 2.0


@dataclass(slots=True)
class Attempt:
    """Run ``plan`` to completion now and report its outcome."""

    plan: Plan


@dataclass(slots=True)
class Start:
    """Start ``plan`` concurrently (a thread, a task) and ask for the next action at once."""

    plan: Plan


@dataclass(slots=True)
class Wait:
    """Wait until a started attempt finishes, at most ``timeout`` seconds (``None``: no limit)."""

    timeout: float | None


@dataclass(slots=True)
class Cancel:
    """Cancel these started attempts and wait at most ``grace_s`` for them; do not report them."""

    plans: list[Plan]
    grace_s: float = GRACE_S


@dataclass(slots=True)
class Done:
    """The call's result."""

    result: Result


Action = Attempt | Start | Wait | Cancel | Done
Outcome = tuple["Plan", "BackendOutput | None", "BaseException | None"]


class Execution:
    """The decisions of one call, step by step; see the module docstring for the protocol."""

    # Built once per call, on the plain path too. The next step is kept as a plain function with
    # its inputs in slots, never as a bound method or closure: either would point back at the
    # object, and a reference cycle per call keeps the whole call alive until the cyclic GC runs.
    __slots__ = ("engine", "call", "gate", "threshold", "_then", "_reported", "_running", "_inline", "_raced",
                 "_primary", "_delay", "_hifi", "_kept")

    def __init__(self, engine: Engine, call: Call, gate: Gate | None, threshold: float) -> None:
        self.engine = engine
        self.call = call
        self.gate = gate
        self.threshold = threshold
        self._then: Callable[[Execution], Action] = (
            Execution._cascade_first if gate is not None and call.pinned is None else Execution._plan_next
        )
        self._reported: list[Outcome] = []
        #: started attempts by attempt number (a ``Plan`` is not hashable)
        self._running: dict[int, Plan] = {}
        #: the attempt an :class:`Attempt` action is running, until it is reported
        self._inline: Plan | None = None
        #: whether this round started a hedge beside its primary
        self._raced = False
        self._primary: Plan | None = None
        self._delay = 0.0
        self._hifi: str | None = None
        #: the result that stands while a step runs (a race's winner, the cascade's cheap result)
        self._kept: Result | None = None

    # -- the driver's side -------------------------------------------------------------------

    def next(self) -> Action:
        """The next action, once the previous one's outcome is reported; raises when the call fails."""
        return self._then(self)

    def report(self, plan: Plan, output: BackendOutput | None, exc: BaseException | None) -> None:
        """An attempt finished: with ``output``, or raising ``exc``."""
        if plan is self._inline:
            self._inline = None
        self._reported.append((plan, output, exc))

    def interrupt(self) -> list[Plan]:
        """The driver is torn down (asyncio cancellation, ``KeyboardInterrupt``): record what is
        in flight as cancelled and return it for the driver to cancel."""
        plans = list(self._running.values())
        self._running.clear()
        if self._inline is not None:
            plans.append(self._inline)
            self._inline = None
        for plan in plans:
            self.engine.cancelled(self.call, plan)
        return plans

    # -- plain attempts and fallbacks --------------------------------------------------------

    def _plan_next(self) -> Action:
        engine, call = self.engine, self.call
        plan = engine.plan(call)
        delay = engine.hedge_delay(plan) if call.sla.hedge and call.pinned is None else None
        engine.begin(plan)
        _announce(call, plan)
        if delay is None:
            self._inline = plan
            self._then = Execution._judge_alone
            return Attempt(plan)
        self._running[plan.attempt] = plan
        self._raced = False
        self._primary, self._delay = plan, delay
        self._then = Execution._wait_for_hedge_timer
        return Start(plan)

    def _judge_alone(self) -> Action:
        plan, output, exc = self._reported.pop()
        result = self.engine.complete(self.call, plan, output, exc)
        return self._fall_back(plan) if result is None else self._done(result)

    def _fall_back(self, failed: Plan) -> Action:
        """``failed`` did not give a result and the call goes on: plan the next attempt."""
        call = self.call
        if call.listener is not None and call.last_error is not None:
            err = call.last_error
            call.listener(Fallback(call.request_id, failed.attempt, failed.backend.name, error_code(err), str(err)))
        return self._plan_next()

    def _done(self, result: Result) -> Done:
        call = self.call
        if result.cost_usd != call.spent_usd or len(result.trace.get("attempts", ())) != len(call.attempts):
            # recorded after the result was built (a lost racer, an escalation): bring it up to date
            result.trace = self.engine.trace(call, result.backend)
            result.cost_usd = call.spent_usd
        if call.listener is not None:
            call.listener(DoneEvent(call.request_id, result.backend, result))
        return Done(result)

    def _done_with_kept(self) -> Action:
        assert self._kept is not None
        return self._done(self._kept)

    # -- hedging -----------------------------------------------------------------------------

    def _wait_for_hedge_timer(self) -> Action:
        self._then = Execution._after_hedge_timer
        return Wait(min(self._delay, self.call.deadline.remaining()))

    def _after_hedge_timer(self) -> Action:
        if self._reported:  # the primary answered before the timer: judged alone, as a plain attempt
            self._running.clear()
            return self._judge_alone()
        engine, call, primary = self.engine, self.call, self._primary
        assert primary is not None
        hedge = engine.plan_hedge(call, primary)
        if hedge is None:
            return self._wait_for_racers()
        call.notes["hedge"] = {"primary": primary.backend.name, "hedge": hedge.backend.name,
                               "after_s": round(self._delay, 4)}
        engine.begin(hedge)
        _announce(call, hedge)
        self._running[hedge.attempt] = hedge
        self._raced = True
        self._then = Execution._wait_for_racers
        return Start(hedge)

    def _wait_for_racers(self) -> Action:
        self._then = Execution._race_step
        left = self.call.deadline.timeout()
        return Wait(None if left is None else left + GRACE_S)

    def _race_step(self) -> Action:
        engine, call = self.engine, self.call
        if not self._reported:  # the wait ran out: past the deadline and its grace
            return self._overran()
        reported, self._reported = self._reported, []
        for plan, output, exc in reported:
            if self._running.pop(plan.attempt, None) is None:
                continue  # finished beside the winner: already recorded as the loser
            if exc is None and output is not None:
                return self._won(plan, engine.complete(call, plan, output, None))
            last = not self._running  # the last racer standing is judged: fall back, stop or raise
            engine.complete(call, plan, None, exc, judge=last)
            if last:
                return self._fall_back(plan)
        return self._wait_for_racers()

    def _won(self, winner: Plan, result: Result | None) -> Action:
        assert result is not None  # a successful attempt always makes a result
        losers = list(self._running.values())
        self._running.clear()
        for loser in losers:
            self.engine.lost_race(self.call, loser)
        if self._raced:
            self.call.notes["hedge"]["winner"] = winner.backend.name
        if not losers:
            return self._done(result)
        self._kept = result
        self._then = Execution._done_with_kept
        return Cancel(losers)

    def _overran(self) -> Action:
        """Racers still running well past the deadline: abandon them and fail the call."""
        losers = list(self._running.values())
        self._running.clear()
        for plan in losers:
            self.engine.abandon(self.call, plan, DeadlineExceeded(
                f"attempt on `{plan.backend.name}` was still running {GRACE_S} s after the deadline"))
        self._then = Execution._fail_overran
        return Cancel(losers)

    def _fail_overran(self) -> Action:
        raise DeadlineExceeded(f"the deadline of {self.call.sla.deadline_s} s passed during a hedged race")

    # -- the cascade -------------------------------------------------------------------------

    def _cascade_first(self) -> Action:
        plan, self._hifi = _cascade_plan(self.engine, self.call)
        self.engine.begin(plan)
        _announce(self.call, plan)
        self._inline = plan
        self._then = Execution._cascade_judged
        return Attempt(plan)

    def _cascade_judged(self) -> Action:
        engine, call = self.engine, self.call
        plan, output, exc = self._reported.pop()
        assert self.gate is not None
        score = _score(self.gate, output, plan, call, self.threshold, self._hifi)
        result = engine.complete(call, plan, output, exc)
        upgrade = _escalation(engine, call, result, self._hifi, score, self.threshold)
        if upgrade is None:
            return self._fall_back(plan) if result is None else self._done(result)
        _announce(call, upgrade)
        self._inline = upgrade
        self._kept = result
        self._then = Execution._cascade_upgraded
        return Attempt(upgrade)

    def _cascade_upgraded(self) -> Action:
        plan, output, exc = self._reported.pop()
        better = self.engine.complete(self.call, plan, output, exc, judge=False) or self._kept
        assert better is not None  # escalation only follows a cheap result
        return self._done(better)


def _announce(call: Call, plan: Plan) -> None:
    """Tell whoever listens that ``plan`` was decided and handed to its backend (nothing when nobody does)."""
    emit = call.listener
    if emit is None:
        return
    cand = plan.candidate
    name = plan.backend.name
    emit(Decided(call.request_id, plan.attempt, name, plan.decision.reason, plan.decision.policy,
                 cand.latency_p50_s if cand else None, cand.cost_usd if cand else None, plan.hedge))
    emit(AttemptStarted(call.request_id, plan.attempt, name, plan.deadline.timeout(), plan.hedge))


def cascade_pair(decision: Decision) -> tuple[str, str] | None:
    """(cheap-and-fast, high-fidelity) backends among the feasible candidates, if they differ."""
    best: dict[str, Candidate] = {}
    for c in decision.candidates:
        if c.feasible and (c.backend not in best or c.expected_total_usd < best[c.backend].expected_total_usd):
            best[c.backend] = c
    if len(best) < 2:
        return None
    cheap = min(best.values(), key=lambda c: (c.cost_usd, c.latency_p50_s))
    others = [c for c in best.values() if c.backend != cheap.backend]
    hifi = min(others, key=lambda c: (c.correction_s, c.p_fail, c.cost_usd))
    return cheap.backend, hifi.backend


def _cascade_plan(engine: Engine, call: Call) -> tuple[Plan, str | None]:
    plan = engine.plan(call)
    pair = cascade_pair(plan.decision)
    if pair is None:
        call.notes["cascade"] = {"skipped": "fewer than two feasible backends"}
        return plan, None
    cheap, hifi = pair
    if plan.backend.name != cheap:
        # the router's own pick never runs: its attempt number and decision go to the cheap attempt, so
        # attempts still count from 0 and the trace's decision is the one attempt 0 was made under
        call.planned = plan.attempt
        call.decisions.pop()
        plan = engine.plan(call, only={cheap})
    call.notes["cascade"] = {"first": cheap, "high_fidelity": hifi, "escalated": False}
    return plan, hifi


def _escalation(
    engine: Engine, call: Call, result: Result | None, hifi: str | None, score: float | None, threshold: float
) -> Plan | None:
    """The high-fidelity attempt to start after a gated cheap one, or ``None`` to keep what we have."""
    if result is None or hifi is None or score is None or score >= threshold:
        return None
    try:
        upgrade = engine.plan(call, only={hifi})
    except PixelrouteError as err:  # no time or money left for it: the cheap result stands
        call.notes["cascade"]["escalation_skipped"] = str(err)
        return None
    call.notes["cascade"]["escalated"] = True
    engine.begin(upgrade)
    return upgrade


def _score(
    gate: Gate, output: BackendOutput | None, plan: Plan, call: Call, threshold: float, hifi: str | None
) -> float | None:
    if output is None or hifi is None or not output.images:
        return None
    score = float(min(gate(image, plan.request) for image in output.images))
    output.extra["gate_score"] = round(score, 4)  # logged with the attempt: the router learns from it
    call.notes["cascade"].update(gate_score=round(score, 4), threshold=threshold)
    return score
