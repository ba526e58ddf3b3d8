"""Evaluate routing policies: online replay on a simulated workload, off-policy on logged records.

* :func:`compare_policies` with a simulated workload replays every policy on the SAME requests
  with the same luck (outcomes are deterministic per request, backend and steps) and reports the
  realised cost per accepted image, SLA attainment and mean correction seconds;
* with logged §4 records instead, it estimates each policy's value off-policy from the logged
  propensities: IPS, self-normalised IPS (SNIPS) and doubly robust (DR, the router's own
  predicted expected cost as the direct model).

Baselines: always-cheapest, always-fastest, LiteLLM-style (lowest mean of the last ten observed
latencies per backend), RouteLLM-style (one threshold on prompt difficulty: hard prompts to the
strongest declared backend, the rest to the cheapest). The oracle knows every true outcome.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import _priors
from ._router import Router
from ._types import BackendProfile, RouteContext, RouteRequest, SLASpec
from .features import scenario_probabilities
from .policy import expand_options
from .simulate import REJECT_ABOVE_S, SimBackend, WorkItem, realise

Option = tuple[BackendProfile, int | None]
#: a policy maps (request, sla, context, options) to an index into options, or None (refuse)
PolicyFn = Callable[[RouteRequest, SLASpec, RouteContext, list[Option]], int | None]
#: RouteLLM-style difficulty threshold on the largest scenario probability
ROUTELLM_THRESHOLD = 0.5


def router_policy(router: Router) -> PolicyFn:
    """A router as a policy: exploration off (evaluation measures the greedy rule) and best effort on,
    because every baseline always tries something; a refusal would count as a missed SLA."""
    greedy = Router(router.predictor, replace(router.config, exploration=0.0, best_effort=True), seed=0)

    def choose(req: RouteRequest, sla: SLASpec, ctx: RouteContext, options: list[Option]) -> int | None:
        d = greedy.decide(req, sla, [p for p, _ in _unique_profiles(options)], ctx)
        if d.backend is None:
            return None
        return next(i for i, (p, s) in enumerate(options) if p.name == d.backend and s == d.steps)

    return choose


def _unique_profiles(options: list[Option]) -> list[Option]:
    seen: dict[str, Option] = {}
    for p, s in options:
        seen.setdefault(p.name, (p, s))
    return list(seen.values())


def _usable(ctx: RouteContext, options: list[Option]) -> list[int]:
    return [i for i, (p, _) in enumerate(options) if ctx.get(p.name).breaker != "open"] or list(range(len(options)))


def _prices(req: RouteRequest, options: list[Option]) -> np.ndarray:
    out = []
    for p, s in options:
        mp = _priors.megapixels(p, req.width, req.height)
        steps = _priors.effective_steps(p, req.steps, s)
        out.append(_priors.price_usd(p, mp, req.n, _priors.prior_latency_s(p, mp, steps, req.n)))
    return np.asarray(out)


def always_cheapest(req: RouteRequest, sla: SLASpec, ctx: RouteContext, options: list[Option]) -> int | None:
    usable = _usable(ctx, options)
    prices = _prices(req, options)
    return min(usable, key=lambda i: prices[i])


def always_fastest(req: RouteRequest, sla: SLASpec, ctx: RouteContext, options: list[Option]) -> int | None:
    usable = _usable(ctx, options)

    def prior(i: int) -> float:
        p, s = options[i]
        mp = _priors.megapixels(p, req.width, req.height)
        return _priors.prior_latency_s(p, mp, _priors.effective_steps(p, req.steps, s), req.n)

    return min(usable, key=prior)


def routellm_threshold(req: RouteRequest, sla: SLASpec, ctx: RouteContext, options: list[Option]) -> int | None:
    usable = _usable(ctx, options)
    hard = max(scenario_probabilities(req.prompt).values()) >= ROUTELLM_THRESHOLD
    if not hard:
        return always_cheapest(req, sla, ctx, options)
    strength = [np.mean(list(options[i][0].strengths.values()) or [0.5]) for i in range(len(options))]
    # equal declared strengths (none declared, say): the dearer one, as RouteLLM's strong model is the
    # expensive one; a tie left to the options' order would make this "the first backend"
    prices = _prices(req, options)
    return max(usable, key=lambda i: (strength[i], prices[i]))


class LiteLLMLatency:
    """LiteLLM-style latency routing: lowest mean of the last ten observed latencies per backend."""

    def __init__(self) -> None:
        self.history: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=10))

    def __call__(self, req: RouteRequest, sla: SLASpec, ctx: RouteContext, options: list[Option]) -> int | None:
        usable = [i for i in _usable(ctx, options) if options[i][1] in (None, options[i][0].step_options[:1][0]
                                                                        if options[i][0].step_options else None)]
        # an unseen backend has mean 0 and is tried first, as LiteLLM does with no latency data
        return min(usable, key=lambda i: float(np.mean(self.history[options[i][0].name] or [0.0])))

    def observe(self, backend: str, latency_s: float) -> None:
        self.history[backend].append(latency_s)


#: attempts per request, as the SDK's default ``max_attempts``
MAX_ATTEMPTS = 3


@dataclass
class Outcomes:
    """Per-request results of one policy replayed on a workload (arrays over the requests)."""

    cost_usd: np.ndarray       # money spent plus the correction time valued per hour
    accepted: np.ndarray       # an image came back and needed at most REJECT_ABOVE_S of correction
    on_time: np.ndarray        # an image came back within the deadline and budget (SLA attained)
    correction_s: np.ndarray   # NaN when no image came back
    refused: np.ndarray

    def summary(self) -> dict[str, float]:
        n = len(self.cost_usd)
        have = ~np.isnan(self.correction_s)
        return {"requests": n, "cost_per_accepted_usd": float(self.cost_usd.sum()) / max(int(self.accepted.sum()), 1),
                "sla_attainment": float(self.on_time.mean()) if n else math.nan,
                "accepted_share": float(self.accepted.mean()) if n else math.nan,
                "refused_share": float(self.refused.mean()) if n else math.nan,
                "mean_correction_s": float(self.correction_s[have].mean()) if have.any() else math.nan,
                "total_usd": float(self.cost_usd.sum())}


def replay(policy: PolicyFn, workload: Sequence[WorkItem], backends: Sequence[SimBackend],
           correction_cost_per_hour: float = 60.0) -> dict[str, float]:
    """Run ``policy`` on every request of ``workload`` against the simulator's true outcomes (summary)."""
    return replay_outcomes(policy, workload, backends, correction_cost_per_hour).summary()


def replay_outcomes(policy: PolicyFn, workload: Sequence[WorkItem], backends: Sequence[SimBackend],
                    correction_cost_per_hour: float = 60.0) -> Outcomes:
    """Per-request outcomes of ``policy`` on ``workload``.

    Like the SDK, a failed attempt (not a timeout) falls back: the policy is asked again without
    the failed backend, with the deadline and budget that are left, up to :data:`MAX_ATTEMPTS`.
    """
    profiles = [b.profile() for b in backends]
    by_name = {b.name: b for b in backends}
    all_options = expand_options(profiles)
    rate = correction_cost_per_hour / 3600.0
    n = len(workload)
    cost, corrections = np.zeros(n), np.full(n, math.nan)
    accepted, on_time, refused = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for k, item in enumerate(workload):
        options = list(all_options)
        elapsed, paid = 0.0, 0.0
        final: dict[str, Any] | None = None
        for _ in range(MAX_ATTEMPTS):
            sla = SLASpec(None if item.sla.deadline_s is None else item.sla.deadline_s - elapsed,
                          None if item.sla.max_cost_usd is None else max(item.sla.max_cost_usd - paid, 0.0))
            if sla.deadline_s is not None and sla.deadline_s <= 0 or not options:
                break
            i = policy(item.request, sla, item.context, options)
            if i is None:
                refused[k] = elapsed == 0.0
                break
            p, s = options[i]
            res = realise(by_name[p.name], replace(item, sla=sla), s)
            out = res["outcome"]
            elapsed += float(out["latency_s"])
            paid += float(out["cost_usd"])
            if isinstance(policy, LiteLLMLatency) and out["ok"]:
                policy.observe(p.name, float(out["latency_s"]))
            if out["ok"] or out["error"] == "timeout":
                final = res
                break
            options = [o for o in options if o[0].name != p.name]
        seconds = final["correction"]["seconds"] if final and final["correction"] else None
        ok = bool(final and final["outcome"]["ok"])
        cost[k] = paid + (seconds or 0.0) * rate
        accepted[k] = ok and seconds is not None and seconds <= REJECT_ABOVE_S
        on_time[k] = ok and elapsed <= item.sla.remaining_s and paid <= item.sla.budget_usd + 1e-12
        if seconds is not None:
            corrections[k] = seconds
    return Outcomes(cost, accepted, on_time, corrections, refused)


def paired_cost(a: Outcomes, b: Outcomes) -> tuple[float, float, int]:
    """Mean cost of ``a`` and of ``b`` over the requests BOTH delivered accepted and on time.

    Cost per accepted image alone rewards missing the SLA on hard prompts (a timed-out request costs
    nothing and leaves the average), so policies with different attainment are compared on the
    same requests: equal SLA by construction. Biased towards the riskier policy: its failures drop
    the request from the set while the other policy's price for avoiding them stays in (see
    :func:`delivery_cost`, which averages over luck instead).
    """
    both = a.accepted & a.on_time & b.accepted & b.on_time
    k = int(both.sum())
    if k == 0:
        return math.nan, math.nan, 0
    return float(a.cost_usd[both].mean()), float(b.cost_usd[both].mean()), k


def luck_draws(workload: Sequence[WorkItem], draws: int) -> list[list[WorkItem]]:
    """``draws`` copies of ``workload`` with other luck (outcome seeds): the same requests, SLAs and
    contexts, other latencies, failures and defects. Draw 0 is the workload itself."""
    return [list(workload) if d == 0 else [replace(it, seed=(it.seed * 1_000_003 + d) % (1 << 62)) for it in workload]
            for d in range(draws)]


def delivery_cost(a: Sequence[Outcomes], b: Sequence[Outcomes], min_delivery: float = 0.5) -> tuple[float, float, int]:
    """Mean cost per delivered image of ``a`` and of ``b`` on the requests both deliver (accepted and on
    time) in at least ``min_delivery`` of the luck draws (``a[d]``, ``b[d]``: replays of draw ``d``).

    Per request, cost per delivery = everything spent over the draws (failed attempts, fallbacks,
    correction) / the draws that delivered. Unlike :func:`paired_cost`, which keeps the requests
    both delivered in ONE draw, this does not condition on either policy's luck: a risky choice
    that happened to succeed is charged for the draws where it failed.
    """
    def per_request(runs: Sequence[Outcomes]) -> tuple[np.ndarray, np.ndarray]:
        good = np.array([r.accepted & r.on_time for r in runs], dtype=float)
        spent = np.array([r.cost_usd for r in runs])
        return good.mean(axis=0), spent.sum(axis=0) / np.maximum(good.sum(axis=0), 1.0)

    rate_a, cost_a = per_request(a)
    rate_b, cost_b = per_request(b)
    both = (rate_a >= min_delivery) & (rate_b >= min_delivery)
    k = int(both.sum())
    if k == 0:
        return math.nan, math.nan, 0
    return float(cost_a[both].mean()), float(cost_b[both].mean()), k


def oracle(backends: Sequence[SimBackend], workload: Sequence[WorkItem],
           correction_cost_per_hour: float = 60.0) -> PolicyFn:
    """Knows every true outcome of ``workload``: the cheapest option that meets the SLA and is accepted."""
    by_name = {b.name: b for b in backends}
    rate = correction_cost_per_hour / 3600.0
    items = {id(item.request): item for item in workload}

    def choose(req: RouteRequest, sla: SLASpec, ctx: RouteContext, options: list[Option]) -> int | None:
        item = items[id(req)]
        scored = []
        for i, (p, s) in enumerate(options):
            res = realise(by_name[p.name], replace(item, sla=sla), s)
            out, corr = res["outcome"], res["correction"]
            seconds = corr["seconds"] if corr else 0.0
            accepted = bool(out["ok"]) and seconds <= REJECT_ABOVE_S
            on_time = bool(out["ok"]) and out["latency_s"] <= sla.remaining_s and out["cost_usd"] <= sla.budget_usd
            scored.append((not on_time, not accepted, float(out["cost_usd"]) + seconds * rate, i))
        return min(scored)[3]

    return choose


def baseline_policies() -> dict[str, PolicyFn]:
    return {"always_cheapest": always_cheapest, "always_fastest": always_fastest,
            "litellm_latency": LiteLLMLatency(), "routellm_threshold": routellm_threshold}


def compare_policies(router: Router, records_or_workload: Sequence[WorkItem] | Iterable[dict[str, Any]],
                     backends: Sequence[SimBackend] | None = None, *, correction_cost_per_hour: float = 60.0,
                     include_oracle: bool = False, extra: dict[str, Router] | None = None,
                     ) -> dict[str, dict[str, float]]:
    """Per policy: cost per accepted image, SLA attainment, mean correction seconds (and more).

    ``records_or_workload``: a simulated workload (list of :class:`WorkItem`, replayed online against
    ``backends``, default the simulator's) or logged §4 records (estimated off-policy).
    """
    from .simulate import DEFAULT_BACKENDS

    items: list[Any] = list(records_or_workload)
    if items and not isinstance(items[0], WorkItem):
        from .ope import off_policy_report

        return off_policy_report(router, items, backends=[b.profile() for b in (backends or DEFAULT_BACKENDS)],
                                 correction_cost_per_hour=correction_cost_per_hour)
    work: list[WorkItem] = items
    sims = list(backends or DEFAULT_BACKENDS)
    policies: dict[str, PolicyFn] = {router.policy_name: router_policy(router)}
    for name, r in (extra or {}).items():
        policies[name] = router_policy(r)
    if router.policy_name != "cold_start" and "cold_start" not in policies:
        policies["cold_start"] = router_policy(Router.cold_start(correction_cost_per_hour=correction_cost_per_hour))
    policies.update(baseline_policies())
    out = {name: replay(fn, work, sims, correction_cost_per_hour) for name, fn in policies.items()}
    if include_oracle:
        out["oracle"] = replay(oracle(sims, work, correction_cost_per_hour), work, sims, correction_cost_per_hour)
    return out


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table of :func:`compare_policies` output."""
    lines = ["| policy | cost per accepted image (USD) | SLA attainment | accepted | mean correction (s) |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        if "cost_per_accepted_usd" not in r:
            continue
        lines.append(f"| {name} | {r['cost_per_accepted_usd']:.4f} | {r['sla_attainment']:.3f} | "
                     f"{r['accepted_share']:.3f} | {r['mean_correction_s']:.1f} |")
    return "\n".join(lines)
