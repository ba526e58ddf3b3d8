"""The two drivers that carry out a call's actions: one on threads, one on asyncio.

:class:`~pixelroute._execution.Execution` decides every step; a driver only runs backend calls, waits
with the timeouts it is given, cancels, and reports outcomes back, in the same order on both
paths. An attempt runs on the calling thread or coroutine unless it races another (a hedge):
then it runs on the client's thread pool or as an asyncio task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ._errors import Cancelled
from ._execution import GRACE_S, Attempt, Done, Execution, Start, Wait

if TYPE_CHECKING:
    from ._engine import Call, Engine, Plan
    from ._types import Result
    from .backends.base import BackendOutput
    from .gates import Gate

OutputOrError = tuple["BackendOutput | None", "BaseException | None"]
_F = TypeVar("_F", "cf.Future[BackendOutput]", "asyncio.Future[BackendOutput]")


def run_sync(
    engine: Engine, call: Call, pool: Callable[[], cf.Executor], gate: Gate | None, threshold: float
) -> Result:
    """Run ``call`` to its result on this thread; ``pool()`` is asked for threads only when attempts race."""
    execution = Execution(engine, call, gate, threshold)
    running: dict[cf.Future[BackendOutput], Plan] = {}
    try:
        while True:
            action = execution.next()
            if isinstance(action, Attempt):
                plan = action.plan
                try:
                    output = plan.backend.run(plan.request, plan.deadline)
                except Exception as exc:  # mapped and judged by the engine
                    execution.report(plan, None, exc)
                else:
                    execution.report(plan, output, None)
            elif isinstance(action, Done):
                return action.result
            elif isinstance(action, Start):
                plan = action.plan
                running[pool().submit(plan.backend.run, plan.request, plan.deadline)] = plan
            elif isinstance(action, Wait):
                done, _ = cf.wait(running, timeout=action.timeout, return_when=cf.FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: running[f].attempt):
                    execution.report(running.pop(fut), *_outcome(fut))
            else:
                stopping = _cancel(action.plans, running)
                cf.wait(stopping, timeout=action.grace_s)
    except BaseException:
        _cancel(execution.interrupt(), running)
        raise


async def run_async(engine: Engine, call: Call, gate: Gate | None, threshold: float) -> Result:
    """The asyncio twin of :func:`run_sync`; cancelling the awaiting task cancels every attempt."""
    execution = Execution(engine, call, gate, threshold)
    running: dict[asyncio.Future[BackendOutput], Plan] = {}
    try:
        while True:
            action = execution.next()
            if isinstance(action, Attempt):
                plan = action.plan
                try:
                    output = await plan.backend.arun(plan.request, plan.deadline)
                except Exception as exc:  # mapped and judged by the engine
                    execution.report(plan, None, exc)
                else:
                    execution.report(plan, output, None)
            elif isinstance(action, Done):
                return action.result
            elif isinstance(action, Start):
                plan = action.plan
                running[asyncio.ensure_future(plan.backend.arun(plan.request, plan.deadline))] = plan
            elif isinstance(action, Wait):
                done, _ = await asyncio.wait(running, timeout=action.timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: running[t].attempt):
                    execution.report(running.pop(task), *_outcome(task))
            else:
                stopping = _cancel(action.plans, running)
                if stopping:
                    await asyncio.wait(stopping, timeout=action.grace_s)
    except BaseException:
        stopping = _cancel(execution.interrupt(), running)
        if stopping:  # nothing is left running behind a cancelled call
            await asyncio.wait(stopping, timeout=GRACE_S)
        raise


def _cancel(plans: list[Plan], running: dict[_F, Plan]) -> list[_F]:
    """Cancel ``plans``' attempts (their tokens, and their tasks or queued futures); return their futures."""
    attempts = {plan.attempt for plan in plans}
    stopping = [fut for fut, plan in running.items() if plan.attempt in attempts]
    for plan in plans:
        if plan.deadline.cancel is not None:
            plan.deadline.cancel.cancel()  # local: the denoising loop stops; remote: the job is cancelled
    for fut in stopping:
        fut.cancel()  # a task is interrupted at its next await; a queued thread job never starts
        del running[fut]
    return stopping


def _outcome(fut: cf.Future[BackendOutput] | asyncio.Future[BackendOutput]) -> OutputOrError:
    if fut.cancelled():
        return None, Cancelled("the attempt was cancelled")
    exc = fut.exception()
    return (None, exc) if exc is not None else (fut.result(), None)
