"""The pure engine behind ``Client`` and ``AsyncClient``: decide, plan an attempt, judge it.

It does no I/O of its own (tenacity's shape: the engine decides, thin loops execute). The
call's state machine (:class:`pixelroute._execution.Execution`) asks :meth:`Engine.plan` for the next
attempt, hands it to a driver as an action (run, start, wait, cancel, done), and passes each
reported outcome to :meth:`Engine.complete`, which records it and returns a :class:`Result`,
``None`` (try the next candidate) or raises.

One deadline covers the call: every attempt's deadline is what is left of the SLA, every
re-decision sees only the time and money that are left, and cost already spent counts
against ``max_cost_usd``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._deadline import CancelToken, Deadline
from ._errors import (
    BackendUnavailable,
    Cancelled,
    ContentRejected,
    DeadlineExceeded,
    NoFeasibleBackend,
    PixelrouteError,
    ValidationError,
    error_code,
)
from ._health import BackendHealth
from ._records import (
    as_pixelroute_error,
    candidates_note,
    decision_record,
    sla_text,
    utc_ms,
    why_not_note,
)
from ._redact import redact
from ._types import SLA, GenerateRequest, Result
from .events import AttemptProgress

if TYPE_CHECKING:
    from pixelroute.router import Candidate, Decision, Router

    from ._config import Settings
    from ._observe import Observer
    from .backends.base import Backend, BackendOutput
    from .events import Listener

logger = logging.getLogger("pixelroute")

SCHEMA = "pixelroute.telemetry/1"


class Recorderlike:
    """What the engine needs from a telemetry recorder (``pixelroute.telemetry.Recorder``)."""

    def record(self, record: dict[str, Any]) -> bool:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass
class Call:
    """The state of one ``generate()`` call across its attempts."""

    request_id: str
    request: GenerateRequest
    sla: SLA
    deadline: Deadline
    started: float
    pinned: str | None = None
    spent_usd: float = 0.0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    excluded_kinds: set[str] = field(default_factory=set)
    last_error: PixelrouteError | None = None
    #: attempt numbers are handed out when planned: a hedge runs beside an unfinished attempt
    planned: int = 0
    #: per-call extras the drivers attach (hedge, cascade, gate scores)
    notes: dict[str, Any] = field(default_factory=dict)
    #: who hears the call's progress events (``None``: nobody, and none is built)
    listener: Listener | None = None
    #: partial images asked for (local pipelines decode them on a few steps)
    previews: int = 0

    @property
    def attempt_no(self) -> int:
        return len(self.attempts)


@dataclass
class Plan:
    """One attempt the driver should run."""

    backend: Backend
    request: GenerateRequest
    deadline: Deadline
    decision: Decision
    candidate: Candidate | None
    attempt: int
    started: float
    #: wall-clock start, seconds since the epoch (``time.time()``), for the record's ``ts``
    ts: float
    context: dict[str, Any]
    hedge: bool = False
    #: the decision as recorded once in the trace, reused for the attempt's telemetry record
    decision_dict: dict[str, Any] = field(default_factory=dict)
    #: the attempt's OpenTelemetry span while it runs (:mod:`pixelroute._tracing`)
    span: Any = None


class Engine:
    """Decision and bookkeeping for a client; shared by the sync and async drivers."""

    def __init__(
        self,
        settings: Settings,
        backends: dict[str, Backend],
        router: Router,
        recorder: Recorderlike,
        health: dict[str, BackendHealth],
        clock: Callable[[], float],
        make_request_id: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.router = router
        self.recorder = recorder
        self.health = health
        self.clock = clock
        self.make_request_id = make_request_id
        self._profiles: dict[str, Any] = {}
        self._artifact: str | None = None
        self._build_router: Callable[[Settings], Router] | None = None
        self._next_artifact_check = 0.0
        #: live metrics and tracing (:mod:`pixelroute._observe`); None when neither is installed
        self.observer: Observer | None = None

    def watch_artifact(self, model_dir: str | None, build: Callable[[Settings], Router]) -> None:
        """Load the artifact at ``model_dir`` once it appears (the router reloads it after that).

        An artifact that appears broken keeps the cold-start policy: requests go on, the problem is
        logged once, and the artifact is tried again when its manifest or files change.
        """
        self._artifact = model_dir
        self._build_router = build
        self._artifact_failed: tuple[Any, ...] | None = None
        self._artifact_lock = threading.Lock()

    def _current_router(self) -> Router:
        if self._artifact and self.router.policy_name == "cold_start" and self._build_router is not None:
            now = self.clock()
            if now >= self._next_artifact_check:  # a stat at most once a second
                self._next_artifact_check = now + 1.0
                self._try_artifact(self._artifact, self._build_router)
        else:
            self.router.maybe_reload()
        return self.router

    def _try_artifact(self, model_dir: str, build: Callable[[Settings], Router]) -> None:
        fingerprint = self.router.artifact_fingerprint(model_dir)
        if fingerprint is None or fingerprint == self._artifact_failed:
            return  # no manifest yet, or the same broken artifact as last time
        if not self._artifact_lock.acquire(blocking=False):
            return  # another request is loading it right now
        try:
            try:
                router = build(self.settings)
            except Exception as exc:  # a broken artifact must not fail requests: stay on the cold-start policy
                self._artifact_failed = fingerprint
                logger.warning("pixelroute: router artifact %s cannot be loaded; keeping the cold-start policy "
                               "until it changes: %s", model_dir, exc)
                return
            self.router = router
            logger.info("pixelroute: loaded router artifact %s", model_dir)
        finally:
            self._artifact_lock.release()

    # -- start -------------------------------------------------------------------------------

    def start(
        self,
        request: GenerateRequest,
        sla: SLA,
        *,
        backend: str | None = None,
        cancel: CancelToken | None = None,
        listener: Listener | None = None,
        previews: int = 0,
    ) -> Call:
        if backend is not None and backend not in self.backends:
            raise ValidationError(
                f"`backend` must be one of {', '.join(sorted(self.backends))} but is {backend!r}",
                field="backend",
                value=backend,
            )
        if backend is not None and request.operation not in self.backends[backend].operations:
            able = sorted(n for n, b in self.backends.items() if request.operation in b.operations)
            raise ValidationError(
                f"`backend` {backend!r} cannot {request.operation} images (it serves "
                f"{', '.join(self.backends[backend].operations)}); backends that can: {', '.join(able) or 'none'}",
                field="backend",
                value=backend,
            )
        now = self.clock()
        return Call(
            request_id=self.make_request_id(),
            request=request,
            sla=sla,
            deadline=Deadline(sla.deadline_s, clock=self.clock, cancel=cancel),
            started=now,
            pinned=backend,
            listener=listener,
            previews=previews,
        )

    # -- decide ------------------------------------------------------------------------------

    def plan(self, call: Call, *, only: set[str] | None = None, hedge: bool = False) -> Plan:
        """Decide the next attempt with what is left, or raise why there is none.

        ``only`` restricts the candidates (the cascade's escalation step); ``hedge`` marks a
        hedged second attempt that runs beside one still in flight.
        """
        router_api = _router_api()
        if call.deadline.cancelled:
            raise Cancelled(f"request {call.request_id} was cancelled")
        if call.attempt_no >= self.settings.execution.max_attempts and call.last_error is not None:
            raise call.last_error
        if call.attempt_no and call.deadline.expired():
            raise DeadlineExceeded(
                f"the deadline of {call.sla.deadline_s} s passed after {call.attempt_no} attempt(s)"
            ) from call.last_error

        why_not: dict[str, str] = {}
        pool: list[Backend] = []
        validation_errors: list[ValidationError] = []
        names = [call.pinned] if call.pinned else list(self.backends)
        if only is not None:
            names = [n for n in names if n in only]
        for name in names:
            be = self.backends[name]
            if name in call.tried:
                why_not[name] = "already tried in this call"
                continue
            if be.kind in call.excluded_kinds:
                why_not[name] = f"provider `{be.kind}` rejected the content; falling back to another provider"
                continue
            if self.health[name].breaker.state == "open":
                why_not[name] = "circuit breaker open"
                continue
            if call.request.operation not in be.operations:
                why_not[name] = f"cannot {call.request.operation} images (serves {', '.join(be.operations)})"
                continue
            try:
                be.validate(call.request)
            except ValidationError as exc:
                if call.pinned:
                    raise
                why_not[name] = f"cannot serve the request: {exc}"
                validation_errors.append(exc)
                continue
            pool.append(be)

        if not pool:
            if hedge:
                raise NoFeasibleBackend("no second candidate for a hedge: " + why_not_note(why_not))
            if call.last_error is not None:
                call.last_error.add_note(why_not_note(why_not))
                raise call.last_error
            if validation_errors and len(validation_errors) == len(names):
                raise _every_limit(validation_errors)
            if all(r == "circuit breaker open" for r in why_not.values()):
                msg = "every backend's circuit breaker is open: " + ", ".join(why_not)
                if not hedge:
                    self._record_refusal(call, msg, [])
                raise BackendUnavailable(msg)
            msg = "no backend can serve this request: " + why_not_note(why_not)
            if not hedge:
                self._record_refusal(call, msg, [])
            refused = [{"backend": k, "feasible": False, "why_not": v} for k, v in why_not.items()]
            raise NoFeasibleBackend(msg, refused)

        remaining = call.deadline.remaining()
        budget = None if call.sla.max_cost_usd is None else max(0.0, call.sla.max_cost_usd - call.spent_usd)
        spec = router_api.SLASpec(deadline_s=None if math.isinf(remaining) else remaining, max_cost_usd=budget)
        # one snapshot per candidate: the router sees it as BackendState objects (no dict round
        # trip) and the chosen backend's attempt record carries the same one it was chosen on
        snapshots = {b.name: self.health[b.name].snapshot(_loaded(b)) for b in pool}
        context = router_api.RouteContext(
            {name: router_api.BackendState(**snap) for name, snap in snapshots.items()}
        )
        router = self._current_router()
        profiles = [self._profile(b) for b in pool]
        observer = self.observer
        decide_t0 = time.perf_counter() if observer is not None else 0.0
        decision = router.decide(self._route_request(call.request), spec, profiles, context)
        if observer is not None:
            observer.decided(time.perf_counter() - decide_t0, decision)
        call.notes.setdefault("excluded", {}).update(why_not)

        chosen_name = decision.backend
        if chosen_name is None and call.pinned:
            chosen_name = self._pinned_despite_prediction(call, decision)
        if chosen_name is None and hedge:
            cands_note = candidates_note([c.to_dict() for c in decision.candidates])
            raise NoFeasibleBackend("no affordable hedge: " + cands_note)
        if chosen_name is None:
            self._record_decision(call, decision, why_not)
            cands = [c.to_dict() for c in decision.candidates] + [
                {"backend": k, "feasible": False, "why_not": v} for k, v in why_not.items()
            ]
            if call.last_error is not None:
                call.last_error.add_note("no fallback fits what is left: " + candidates_note(cands))
                raise call.last_error
            msg = "no backend can meet the SLA " + sla_text(call.sla) + ": " + candidates_note(cands)
            if not hedge:
                self._record_refusal(call, msg, cands, decision)
            raise NoFeasibleBackend(msg, cands)

        decision_dict = self._record_decision(call, decision, why_not)
        backend = self.backends[chosen_name]
        if not self.health[chosen_name].breaker.allow():
            # a half-open breaker lets one probe through at a time; this request goes elsewhere
            call.tried.add(chosen_name)
            return self.plan(call, only=only, hedge=hedge)
        candidate = decision.chosen
        request = call.request
        if candidate is not None and candidate.steps is not None and request.steps is None:
            request = request.model_copy(update={"steps": candidate.steps})
        attempt_no, call.planned = call.planned, call.planned + 1
        deadline = _attempt_deadline(call.deadline)
        if call.listener is not None:
            deadline.progress = AttemptProgress(call.listener, call.request_id, attempt_no, chosen_name, call.previews)
        return Plan(
            backend=backend,
            request=request,
            deadline=deadline,
            decision=decision,
            candidate=candidate,
            attempt=attempt_no,
            started=self.clock(),
            ts=time.time(),
            context=snapshots[chosen_name],
            hedge=hedge,
            decision_dict=decision_dict,
        )

    def _pinned_despite_prediction(self, call: Call, decision: Decision) -> str | None:
        """A pinned backend runs even when predicted late (the deadline still binds), not over budget."""
        cand = decision.candidates[0] if decision.candidates else None
        budget = call.sla.max_cost_usd
        if cand is not None and budget is not None and cand.cost_usd > budget - call.spent_usd:
            return None
        decision.backend = call.pinned
        decision.steps = cand.steps if cand else None
        decision.predicted_to_miss = True
        decision.reason = f"pinned by the caller, predicted to miss the SLA ({decision.reason or 'infeasible'})"
        return call.pinned

    # -- judge -------------------------------------------------------------------------------

    def begin(self, plan: Plan) -> None:
        self.health[plan.backend.name].enter()
        if self.observer is not None:
            self.observer.attempt_started(plan)

    def complete(
        self,
        call: Call,
        plan: Plan,
        output: BackendOutput | None,
        exc: BaseException | None,
        *,
        judge: bool = True,
    ) -> Result | None:
        """Record the attempt; return the result, ``None`` to try a fallback, or raise.

        With ``judge=False`` (an attempt racing a hedge) a failure is recorded and ``None``
        returned: whether the call goes on is decided once both attempts are in.
        """
        health = self.health[plan.backend.name]
        health.leave()
        ended = self.clock()
        latency = ended - plan.started
        call.tried.add(plan.backend.name)
        if output is not None:
            cost = output.cost_usd
            if cost is None:
                cost = plan.backend.estimate_cost(plan.request, output.gpu_s)
            call.spent_usd += cost
            health.breaker.record(True)
            _observe_latency(health, plan, latency)
            record = self._attempt_record(call, plan, latency, ok=True, output=output, cost=cost)
            self._emit(call, record)
            return Result(
                images=output.images,
                request_id=call.request_id,
                backend=plan.backend.name,
                latency_s=ended - call.started,
                cost_usd=call.spent_usd,
                gpu_s=output.gpu_s,
                trace=self.trace(call, plan.backend.name),
            )

        err = as_pixelroute_error(exc, plan.backend.name)
        code = error_code(err)
        health.breaker.record(False, code)
        if isinstance(err, DeadlineExceeded):
            _observe_latency(health, plan, latency)  # a lower bound on how slow it is: still evidence
        cost = getattr(err, "cost_usd", None) or 0.0  # abandoned paid jobs report what they cost
        call.spent_usd += cost
        record = self._attempt_record(call, plan, latency, ok=False, error=err, cost=cost)
        self._emit(call, record)
        call.last_error = err
        if isinstance(err, ContentRejected) and self.settings.execution.on_content_rejected == "fallback":
            call.excluded_kinds.add(plan.backend.kind)
        if not judge:
            return None
        logger.info(
            "pixelroute attempt %d on %s failed: %s (%s)",
            plan.attempt,
            plan.backend.name,
            code,
            redact(str(err)),
        )
        if isinstance(err, ValidationError | Cancelled):
            raise err
        stop_on_rejection = self.settings.execution.on_content_rejected == "stop" or call.pinned
        if isinstance(err, ContentRejected) and stop_on_rejection:
            raise err
        if call.deadline.expired():
            if isinstance(err, DeadlineExceeded):
                raise err
            raise DeadlineExceeded(
                f"the deadline of {call.sla.deadline_s} s passed; last attempt on "
                f"`{plan.backend.name}` failed with {code}"
            ) from err
        if call.pinned:
            raise err
        return None

    def plan_hedge(self, call: Call, primary: Plan) -> Plan | None:
        """A second attempt beside a slow ``primary``, if one fits what is left once it is paid for."""
        reserved = primary.candidate.cost_usd if primary.candidate else primary.backend.estimate_cost(primary.request)
        call.spent_usd += reserved
        call.tried.add(primary.backend.name)
        try:
            return self.plan(call, hedge=True)
        except PixelrouteError as exc:
            call.notes.setdefault("hedge", {})["skipped"] = str(exc)
            return None
        finally:
            call.spent_usd -= reserved

    def hedge_delay(self, plan: Plan) -> float | None:
        """When to hedge: the primary's predicted latency quantile (Dean & Barroso's tail hedge)."""
        cand = plan.candidate
        if cand is None:
            return None
        delay = cand.latency_p95_s if self.settings.execution.hedge_quantile == "p95" else cand.latency_p50_s
        return delay if delay and math.isfinite(delay) else None

    def lost_race(self, call: Call, plan: Plan) -> None:
        """Record an attempt that lost a hedge race and was cancelled or abandoned."""
        self.abandon(call, plan, Cancelled(f"attempt on `{plan.backend.name}` lost a hedge race and was cancelled"))
        call.last_error = None

    def abandon(self, call: Call, plan: Plan, err: PixelrouteError) -> None:
        """Record an attempt the call gives up on while it still runs (the driver cancels it).

        A local attempt is interrupted in its denoising loop and costs nothing more. A remote
        one is cancelled where the protocol allows; otherwise it may still be billed, so its
        estimated price is counted (over-counting beats a budget that silently overruns).
        """
        cost = 0.0 if plan.backend.local else plan.backend.estimate_cost(plan.request)
        err.cost_usd = cost  # type: ignore[attr-defined]
        self.complete(call, plan, None, err, judge=False)

    def cancelled(self, call: Call, plan: Plan) -> None:
        """Record an attempt cut short by asyncio cancellation (the driver re-raises)."""
        self.complete_silently(call, plan, Cancelled(f"request {call.request_id} was cancelled"))

    def complete_silently(self, call: Call, plan: Plan, err: PixelrouteError) -> None:
        health = self.health[plan.backend.name]
        health.leave()
        health.breaker.record(False, error_code(err))
        call.tried.add(plan.backend.name)
        record = self._attempt_record(call, plan, self.clock() - plan.started, ok=False, error=err, cost=0.0)
        self._emit(call, record)

    # -- records and traces ------------------------------------------------------------------

    def trace(self, call: Call, backend: str | None = None) -> dict[str, Any]:
        return {
            "request_id": call.request_id,
            "backend": backend,
            "decision": call.decisions[0] if call.decisions else None,
            "redecisions": call.decisions[1:],
            "attempts": list(call.attempts),
            "excluded": dict(call.notes.get("excluded", {})),
            "latency_s": self.clock() - call.started,
            "cost_usd": call.spent_usd,
            "sla": call.sla.model_dump(),
            "seed": call.request.seed,
            "operation": call.request.operation,
            **({"input": call.request.inputs()} if call.request.operation == "edit" else {}),  # type: ignore[attr-defined]
            **{k: call.notes[k] for k in ("hedge", "cascade") if k in call.notes},
        }

    def _record_decision(self, call: Call, decision: Decision, why_not: dict[str, str]) -> dict[str, Any]:
        d = decision.to_dict()
        if why_not:
            d["excluded"] = dict(why_not)
        call.decisions.append(d)
        return d

    def _attempt_record(
        self,
        call: Call,
        plan: Plan,
        latency: float,
        *,
        ok: bool,
        cost: float,
        output: BackendOutput | None = None,
        error: PixelrouteError | None = None,
    ) -> dict[str, Any]:
        be = plan.backend
        width, height = be.effective_size(plan.request)
        params = plan.request.params()
        params.update(width=width, height=height, steps=be.effective_steps(plan.request))
        if params.get("guidance") is None:
            params["guidance"] = be.capabilities.default_guidance
        drawn_seed = None
        if output is not None:
            params.update({k: v for k, v in output.params.items()
                           if k in params and v is not None and k not in _CALLERS_KNOBS})
            # the caller's seed stays in `params` (training reads "fixed seed" from it, as serving
            # sees it); a seed the backend drew itself goes to the outcome, for reproducing the image.
            # The same for an edit's strength: the caller's (or null) in params, the one used in the outcome
            drawn_seed = output.params.get("seed")
        cand = plan.candidate
        outcome: dict[str, Any] = {
            "ok": ok,
            "error": None if ok else error_code(error) if error else "internal_error",
            "latency_s": round(latency, 6),
            "queue_s": round(output.queue_s, 6) if output else None,
            "gpu_s": None if output is None or output.gpu_s is None else round(output.gpu_s, 6),
            "cost_usd": round(cost, 8),
            "model": output.model if output else None,
            "job_id": output.job_id if output else getattr(error, "job_id", None),
            "hedge": plan.hedge,
        }
        if drawn_seed is not None and plan.request.seed is None:
            outcome["seed"] = drawn_seed
        if output is not None and output.params.get("strength") is not None and params.get("strength") is None:
            outcome["strength"] = output.params["strength"]
        if error is not None:
            outcome["error_message"] = redact(str(error))[:500]
        if output is not None:
            outcome.update({k: v for k, v in output.extra.items() if k in ("retries", "gate_score")})
        elif isinstance(getattr(error, "retries", None), int):  # remote drivers put a failure's retries on it
            outcome["retries"] = error.retries  # type: ignore[union-attr]
        attempt_trace = {
            "attempt": plan.attempt,
            "backend": be.name,
            "steps": params.get("steps"),
            "params": params,
            "started_s": round(plan.started - call.started, 6),
            **outcome,
        }
        call.attempts.append(attempt_trace)
        if self.observer is not None:
            self.observer.attempt_ended(plan, outcome)
        return self._base_record(
            call,
            attempt=plan.attempt,
            backend=be.name,
            params=params,
            context=plan.context,
            decision=decision_record(plan.decision_dict, cand),
            outcome=outcome,
            ts=plan.ts,
        )

    def _record_refusal(
        self, call: Call, reason: str, candidates: list[dict[str, Any]], decision: Decision | None = None
    ) -> None:
        """A request refused before any backend ran is recorded too, with the reason."""
        dec: dict[str, Any] = (
            decision_record(decision.to_dict(), None) if decision else {"policy": None, "propensity": None}
        )
        dec["candidates"] = candidates
        record = self._base_record(
            call,
            attempt=call.planned,
            backend=None,
            params=call.request.params(),
            context={},
            decision=dec,
            outcome={
                "ok": False,
                "error": "no_feasible_backend",
                "latency_s": round(self.clock() - call.started, 6),
                "queue_s": None,
                "gpu_s": None,
                "cost_usd": 0.0,
                "refused_reason": redact(reason)[:2000],
            },
            ts=time.time(),
        )
        self._emit(call, record)

    def _base_record(
        self,
        call: Call,
        *,
        attempt: int,
        backend: str | None,
        params: dict[str, Any],
        context: dict[str, Any],
        decision: dict[str, Any],
        outcome: dict[str, Any],
        ts: float,
    ) -> dict[str, Any]:
        req = call.request
        record = {
            "schema": SCHEMA,
            "request_id": call.request_id,
            "attempt": attempt,
            "ts": utc_ms(ts),
            "backend": backend,
            "operation": req.operation,
            "prompt": req.prompt,
            "prompt_sha256": hashlib.sha256(req.prompt.encode()).hexdigest(),
            "negative_prompt": req.negative_prompt,
            "params": params,
            "sla": {"deadline_s": call.sla.deadline_s, "max_cost_usd": call.sla.max_cost_usd},
            "context": context,
            "decision": decision,
            "outcome": outcome,
            "correction": None,
        }
        if req.operation == "edit":
            record["input"] = req.inputs()  # type: ignore[attr-defined]  # an EditRequest, by its operation
        return record

    def _emit(self, call: Call, record: dict[str, Any]) -> None:
        self.recorder.record(record)

    # -- conversions -------------------------------------------------------------------------

    def _profile(self, backend: Backend) -> Any:
        prof = self._profiles.get(backend.name)
        if prof is None:
            prof = self._profiles[backend.name] = _router_api().BackendProfile.from_dict(backend.describe())
        return prof

    @staticmethod
    def _route_request(request: GenerateRequest) -> Any:
        if request.operation == "edit":
            return _edit_route_request(request)
        return _router_api().RouteRequest(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            width=request.width,
            height=request.height,
            n=request.n,
            steps=request.steps,
            guidance=request.guidance,
            seed=request.seed,
            scheduler=request.scheduler,
        )


def _edit_route_request(request: Any) -> Any:
    """An edit as the router sees it: the knobs as recorded in its telemetry ``params`` (so that
    training reads the same), and the output size, which an edit always knows (its input's)."""
    width, height = request.size_or(0, 0)
    return _router_api().RouteRequest(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=width,
        height=height,
        n=request.n,
        steps=request.steps,
        guidance=request.guidance,
        seed=request.seed,
        scheduler=request.scheduler,
        operation="edit",
        strength=request.strength,
        masked=request.mask is not None,
    )


#: knobs whose recorded value is the caller's (what serving saw), whatever the backend resolved them to
_CALLERS_KNOBS = frozenset({"seed", "strength"})


def _every_limit(errors: list[ValidationError]) -> ValidationError:
    """Why no backend accepts the request, naming each one's limit (not only the first backend's)."""
    first = errors[0]
    if len(errors) == 1:
        return first
    limits = "; ".join(str(err).rstrip(".") for err in errors)
    return ValidationError(f"no configured backend accepts this request: {limits}", field=first.field,
                           value=first.value)


def _loaded(backend: Backend) -> bool:
    """Whether ``backend`` can start at once (a local pipeline in memory); remote ones always can."""
    return bool(getattr(backend, "loaded", True))


def _observe_latency(health: BackendHealth, plan: Plan, latency: float) -> None:
    """Feed the backend's recent-latency window: observed / the prior's expectation for this request.

    The reference is the cold-start prior (with load and cold start), never the trained prediction:
    a ratio against the model's own output would feed back into it after every retrain.
    """
    cand = plan.candidate
    if cand is not None and cand.reference_latency_s > 0 and not plan.hedge:
        health.observe_latency(latency / cand.reference_latency_s)


_router_module: Any = None


def _router_api() -> Any:
    """The ``pixelroute.router`` package, imported on first use (``import pixelroute`` stays light) and then kept:
    a ``from pixelroute.router import ...`` per decision cost ~1.2 us in ``_handle_fromlist`` each time."""
    global _router_module
    if _router_module is None:
        import pixelroute.router

        _router_module = pixelroute.router
    return _router_module


def _attempt_deadline(call_deadline: Deadline) -> Deadline:
    """The call's deadline with a cancel token of the attempt's own, linked to the call's.

    Cancelling the call cancels every attempt; a hedge can cancel one attempt alone.
    """
    token = CancelToken()
    if call_deadline.cancel is not None:
        call_deadline.cancel.on_cancel(token.cancel)
    return Deadline(None, clock=call_deadline.clock, cancel=token, at=call_deadline.at)
