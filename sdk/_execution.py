"""How a planned attempt is executed: plainly, hedged, or as the first step of a cascade.

Sync and async twins over the same engine calls. The engine decides and records; these
functions only run backends and wait.

- **Hedging** (Dean & Barroso, "The Tail at Scale"): when ``SLA(hedge=True)`` and the primary
  has not answered by its predicted latency quantile, start the next affordable candidate;
  the first good result wins and the loser is cancelled (local: interrupted in its denoising
  loop; remote: cancelled where the protocol allows, otherwise abandoned and its cost counted).
- **Cascade**: generate on the cheap, fast candidate, score the image with a gate, and
  escalate to the high-fidelity candidate only when the score is below the threshold and
  what is left of the deadline and budget still allows it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from typing import TYPE_CHECKING

from ._errors import DeadlineExceeded, PixelrouteError
from .gates import Gate

if TYPE_CHECKING:
    from router import Candidate, Decision

    from ._engine import Call, Engine, Plan
    from ._types import Result
    from .backends.base import BackendOutput

#: how long a winner waits for a local loser to stop (it stops within one denoising step)
LOSER_GRACE_S = 2.0


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


# -- sync ------------------------------------------------------------------------------------


def run_sync(engine: Engine, call: Call, pool: cf.Executor, gate: Gate | None, threshold: float) -> Result:
    if gate is not None and call.pinned is None:
        result = _cascade_sync(engine, call, pool, gate, threshold)
        if result is not None:
            return result
    while True:
        result = attempt_sync(engine, call, engine.plan(call), pool)
        if result is not None:
            return result


def _call(plan: Plan) -> BackendOutput:
    return plan.backend.generate(plan.request, plan.deadline)


def attempt_sync(engine: Engine, call: Call, plan: Plan, pool: cf.Executor) -> Result | None:
    delay = engine.hedge_delay(plan) if call.sla.hedge and call.pinned is None else None
    engine.begin(plan)
    if delay is None:
        try:
            output = _call(plan)
        except Exception as exc:  # mapped and judged by the engine
            return engine.complete(call, plan, None, exc)
        return engine.complete(call, plan, output, None)
    primary = pool.submit(_call, plan)
    cf.wait([primary], timeout=min(delay, plan.deadline.remaining()))
    if primary.done():
        return _finish_sync(engine, call, plan, primary)
    hedge = engine.plan_hedge(call, plan)
    if hedge is None:
        return _finish_sync(engine, call, plan, primary)
    call.notes["hedge"] = {"primary": plan.backend.name, "hedge": hedge.backend.name, "after_s": round(delay, 4)}
    engine.begin(hedge)
    return _race_sync(engine, call, {primary: plan, pool.submit(_call, hedge): hedge})


def _finish_sync(engine: Engine, call: Call, plan: Plan, fut: cf.Future[BackendOutput]) -> Result | None:
    try:
        output = fut.result()
    except Exception as exc:
        return engine.complete(call, plan, None, exc)
    return engine.complete(call, plan, output, None)


def _race_sync(engine: Engine, call: Call, pending: dict[cf.Future[BackendOutput], Plan]) -> Result | None:
    while pending:
        done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            plan = pending.pop(fut)
            exc = fut.exception()
            if exc is None:
                result = engine.complete(call, plan, fut.result(), None)
                for loser in pending.values():
                    assert loser.deadline.cancel is not None
                    loser.deadline.cancel.cancel()
                    engine.lost_race(call, loser)
                call.notes["hedge"]["winner"] = plan.backend.name
                cf.wait(pending, timeout=LOSER_GRACE_S)  # local losers stop within a step
                if result is not None:
                    result.trace = engine.trace(call, result.backend)
                return result
            judged = not pending  # the last one standing is judged: fall back, stop or raise
            result = engine.complete(call, plan, None, exc, judge=judged)
            if judged:
                return result
    _after_failed_race(engine, call)
    return None


def _after_failed_race(engine: Engine, call: Call) -> None:
    """Both racers failed: past the deadline that is final, otherwise the caller re-plans."""
    if call.deadline.expired():
        raise DeadlineExceeded(f"the deadline of {call.sla.deadline_s} s passed during a hedged race") from (
            call.last_error
        )


def _cascade_sync(engine: Engine, call: Call, pool: cf.Executor, gate: Gate, threshold: float) -> Result | None:
    plan, hifi = _cascade_plan(engine, call)
    engine.begin(plan)
    output: BackendOutput | None = None
    exc: BaseException | None = None
    try:
        output = _call(plan)
    except Exception as err:
        exc = err
    score = _score(gate, output, plan, call, threshold, hifi)
    result = engine.complete(call, plan, output, exc)
    upgrade = _escalation(engine, call, result, hifi, score, threshold)
    if upgrade is None:
        return _refresh(engine, call, result)
    try:
        better = engine.complete(call, upgrade, _call(upgrade), None, judge=False)
    except Exception as err:
        better = engine.complete(call, upgrade, None, err, judge=False)
    return _refresh(engine, call, better or result)


# -- async -----------------------------------------------------------------------------------


async def run_async(engine: Engine, call: Call, gate: Gate | None, threshold: float) -> Result:
    if gate is not None and call.pinned is None:
        result = await _cascade_async(engine, call, gate, threshold)
        if result is not None:
            return result
    while True:
        result = await attempt_async(engine, call, engine.plan(call))
        if result is not None:
            return result


async def _acall(engine: Engine, call: Call, plan: Plan) -> BackendOutput:
    return await plan.backend.agenerate(plan.request, plan.deadline)


async def _guarded(engine: Engine, call: Call, plan: Plan) -> tuple[BackendOutput | None, BaseException | None]:
    """Run one attempt; asyncio cancellation is recorded, then propagates."""
    try:
        return await _acall(engine, call, plan), None
    except asyncio.CancelledError:
        engine.cancelled(call, plan)
        raise
    except Exception as exc:
        return None, exc


async def attempt_async(engine: Engine, call: Call, plan: Plan) -> Result | None:
    delay = engine.hedge_delay(plan) if call.sla.hedge and call.pinned is None else None
    engine.begin(plan)
    if delay is None:
        output, exc = await _guarded(engine, call, plan)
        return engine.complete(call, plan, output, exc)
    primary = asyncio.ensure_future(_acall(engine, call, plan))
    tasks: dict[asyncio.Future[BackendOutput], Plan] = {primary: plan}
    try:
        done, _ = await asyncio.wait({primary}, timeout=min(delay, plan.deadline.remaining()))
        if not done:
            hedge = engine.plan_hedge(call, plan)
            if hedge is not None:
                call.notes["hedge"] = {"primary": plan.backend.name, "hedge": hedge.backend.name,
                                       "after_s": round(delay, 4)}
                engine.begin(hedge)
                tasks[asyncio.ensure_future(_acall(engine, call, hedge))] = hedge
        return await _race_async(engine, call, tasks)
    except asyncio.CancelledError:
        for task, p in tasks.items():
            task.cancel()
            engine.cancelled(call, p)
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _race_async(engine: Engine, call: Call, pending: dict[asyncio.Future[BackendOutput], Plan]) -> Result | None:
    while pending:
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            plan = pending.pop(task)
            exc = task.exception()
            if exc is None:
                result = engine.complete(call, plan, task.result(), None)
                for loser_task, loser in pending.items():
                    loser_task.cancel()  # local: interrupts the denoising loop; remote: cancels the job
                    engine.lost_race(call, loser)
                await asyncio.gather(*pending, return_exceptions=True)  # nothing is left running
                if "hedge" in call.notes:
                    call.notes["hedge"]["winner"] = plan.backend.name
                return _refresh(engine, call, result)
            judged = len(pending) > 0
            result = engine.complete(call, plan, None, exc, judge=not judged)
            if not judged:
                return result
    _after_failed_race(engine, call)
    return None


async def _cascade_async(engine: Engine, call: Call, gate: Gate, threshold: float) -> Result | None:
    plan, hifi = _cascade_plan(engine, call)
    engine.begin(plan)
    output, exc = await _guarded(engine, call, plan)
    score = _score(gate, output, plan, call, threshold, hifi)
    result = engine.complete(call, plan, output, exc)
    upgrade = _escalation(engine, call, result, hifi, score, threshold)
    if upgrade is None:
        return _refresh(engine, call, result)
    out2, exc2 = await _guarded(engine, call, upgrade)
    better = engine.complete(call, upgrade, out2, exc2, judge=False)
    return _refresh(engine, call, better or result)


# -- shared ----------------------------------------------------------------------------------


def _cascade_plan(engine: Engine, call: Call) -> tuple[Plan, str | None]:
    plan = engine.plan(call)
    pair = cascade_pair(plan.decision)
    if pair is None:
        call.notes["cascade"] = {"skipped": "fewer than two feasible backends"}
        return plan, None
    cheap, hifi = pair
    if plan.backend.name != cheap:
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


def _refresh(engine: Engine, call: Call, result: Result | None) -> Result | None:
    """Bring a result's trace and cost up to date with everything the call did."""
    if result is not None:
        result.trace = engine.trace(call, result.backend)
        result.cost_usd = call.spent_usd
    return result
