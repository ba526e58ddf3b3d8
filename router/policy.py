"""The decision rule shared by the cold-start and the trained policies.

Per candidate (backend x step option) a predictor gives the median latency, a log-space spread,
P(fail), expected correction seconds and the price. Then:

* ``p_on_time = P(latency <= deadline left)`` under a lognormal through those numbers;
* feasible = the backend serves the request's operation (an edit never goes to a backend that
  only generates) and ``p_on_time >= sla_confidence`` and price <= budget left and breaker not open;
* ``expected_total_usd = price + p_fail * failure_cost + correction_s / 3600 * correction_cost_per_hour``
  where ``failure_cost`` = the median candidate's price + correction value (what a retry elsewhere
  costs) plus the failed attempt's median latency valued at the same hourly rate (time lost);
* pick the feasible minimum; fallbacks = the other feasible backends (best option each) in order;
* exploration: with probability ``exploration``, and only when the best and the alternative both
  meet the deadline and budget with slack (at 60% of what is left), pick a uniformly random
  alternative instead. ``propensity`` is the exact probability of what was chosen;
* nothing feasible: best effort (the default) picks the candidate most likely on time among those
  within the budget and with a closed breaker, marked ``predicted_to_miss``; refusal (or nothing
  affordable) returns ``backend=None`` with ``why_not`` on every candidate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from ._types import BackendProfile, Candidate, Decision, RouteContext, SLASpec

#: share of the remaining deadline and budget an exploration candidate must fit in
SLACK_SHARE = 0.6
#: exploration never picks a candidate expected to cost more than this multiple of the best (+2 cents)
EXPLORE_MAX_COST_RATIO = 3.0
_Z = NormalDist()
_Z95 = 1.6448536269514722
_SQRT2 = math.sqrt(2.0)


@lru_cache(maxsize=64)
def _z_of(confidence: float) -> float:
    return _Z.inv_cdf(confidence)


@dataclass
class Predictions:
    """Arrays over the candidate options, all the same length."""

    latency_p50_s: np.ndarray
    #: log-space standard deviation of latency (the lognormal's shape)
    latency_sigma: np.ndarray
    p_fail: np.ndarray
    correction_s: np.ndarray
    price_usd: np.ndarray
    #: the cold-start prior's median before the recent-latency correction (see ``Candidate.reference_latency_s``)
    reference_latency_s: np.ndarray | None = None


@dataclass(frozen=True)
class PolicyConfig:
    """How decisions trade money, time and risk (the ``[router]`` config section)."""

    correction_cost_per_hour: float = 60.0
    exploration: float = 0.02
    sla_confidence: float = 0.95
    #: nothing meets the SLA: try the candidate most likely on time within the budget (True), or refuse
    best_effort: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.exploration <= 1.0:
            raise ValueError(f"`exploration` must be between 0 and 1 but is {self.exploration!r}")
        if not 0.0 < self.sla_confidence < 1.0:
            raise ValueError(f"`sla_confidence` must be strictly between 0 and 1 but is {self.sla_confidence!r}")
        if not self.correction_cost_per_hour >= 0:
            raise ValueError(f"`correction_cost_per_hour` must be >= 0 but is {self.correction_cost_per_hour!r}")


def expand_options(backends: Sequence[BackendProfile]) -> list[tuple[BackendProfile, int | None]]:
    """One option per backend, or one per step count for a backend that declares ``step_options``."""
    out: list[tuple[BackendProfile, int | None]] = []
    for b in backends:
        if b.step_options:
            out.extend((b, s) for s in b.step_options)
        else:
            out.append((b, None))
    return out


def p_on_time(p50: np.ndarray, sigma: np.ndarray, deadline_s: float) -> np.ndarray:
    if math.isinf(deadline_s):
        return np.ones_like(p50)
    z = (math.log(max(deadline_s, 1e-9)) - np.log(p50)) / np.maximum(sigma, 1e-6)
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


def _erf(x: np.ndarray) -> np.ndarray:
    # numpy has no erf; Abramowitz-Stegun 7.1.26 is accurate to 1.5e-7, plenty for a feasibility test
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t \
        * np.exp(-a * a)
    out: np.ndarray = sign * y
    return out


def decide(
    options: Sequence[tuple[BackendProfile, int | None]],
    preds: Predictions,
    sla: SLASpec,
    context: RouteContext,
    config: PolicyConfig,
    rng: np.random.Generator,
    *,
    policy_name: str,
    router_version: str,
    operation: str = "generate",
) -> Decision:
    """Apply the SLA-constrained minimum-expected-cost rule to predicted candidates.

    Runs on Python floats, not numpy: for ~10 candidates one numpy call (~1 us) costs more than
    the whole loop body, and this is on every request's path.
    """
    n = len(options)
    if n == 0:
        return Decision(backend=None, reason="no backends were offered", policy=policy_name,
                        router_version=router_version)
    deadline, budget = sla.remaining_s, sla.budget_usd
    conf = config.sla_confidence
    z_sla = _z_of(conf)
    rate = config.correction_cost_per_hour / 3600.0
    p50s = [v if v > 1e-3 else 1e-3 for v in preds.latency_p50_s.tolist()]
    sigmas = [v if v > 1e-6 else 1e-6 for v in preds.latency_sigma.tolist()]
    p_fails = preds.p_fail.tolist()
    corrs = preds.correction_s.tolist()
    prices = preds.price_usd.tolist()
    refs = preds.reference_latency_s.tolist() if preds.reference_latency_s is not None else p50s
    # a failed attempt still leaves the person needing an image: a retry elsewhere costs a typical
    # candidate's price and correction, and the wait for the failed attempt is time lost too
    retry = _median([pr + c * rate for pr, c in zip(prices, corrs, strict=True)])
    log_deadline = math.log(max(deadline, 1e-9)) if math.isfinite(deadline) else math.inf
    # context.get gives a backend's own state, else the flat default: one lookup serves both shapes
    states = {p.name: context.get(p.name) for p, _ in options}
    open_breakers = {name for name, st in states.items() if st.breaker == "open"}
    # a backend that cannot do what is asked is never chosen, not even as best effort
    unable = {p.name for p, _ in options if operation not in p.operations}
    cold = {p.name for p, _ in options if p.local and not states[p.name].loaded}
    candidates: list[Candidate] = []
    expected: list[float] = []
    p_sla: list[float] = []
    feasible: list[bool] = []
    for i, (profile, steps) in enumerate(options):
        p50, sigma, price = p50s[i], sigmas[i], prices[i]
        exp_total = price + p_fails[i] * (retry + p50 * rate) + corrs[i] * rate
        q_sla = p50 * math.exp(z_sla * sigma)  # the latency quantile the SLA asks for
        on_time = 1.0 if log_deadline == math.inf else \
            0.5 * (1.0 + math.erf((log_deadline - math.log(p50)) / (sigma * _SQRT2)))
        ok = on_time >= conf and price <= budget and profile.name not in open_breakers and profile.name not in unable
        why = None
        if not ok:
            reasons = []
            if profile.name in unable:
                reasons.append(f"cannot {operation} (serves {', '.join(profile.operations)})")
            if profile.name in open_breakers:
                reasons.append("circuit breaker is open")
            if on_time < conf:
                reasons.append(f"P(on time)={on_time:.2f} < {conf:.2f} with {deadline:.2f} s left "
                               f"(p{round(conf * 100)} latency {q_sla:.2f} s)")
            if price > budget:
                reasons.append(f"price ${price:.4f} > ${budget:.4f} left")
            why = "; ".join(reasons)
        candidates.append(Candidate(profile.name, steps, ok, p50, p50 * math.exp(_Z95 * sigma), on_time,
                                    p_fails[i], corrs[i], price, exp_total, why, profile.name not in cold, refs[i]))
        expected.append(exp_total)
        p_sla.append(q_sla)
        feasible.append(ok)
    if not any(feasible):
        return _infeasible(candidates, budget, open_breakers | unable, config, policy_name, router_version)
    order = sorted((i for i in range(n) if feasible[i]), key=expected.__getitem__)
    best = order[0]
    chosen, propensity, explored = best, 1.0, False
    if config.exploration > 0 and len(order) > 1:
        # exploration: only alternatives that, like the best, fit in a fraction of what is left
        def slack(i: int) -> bool:
            return (p_sla[i] <= deadline * SLACK_SHARE and prices[i] <= budget * SLACK_SHARE
                    and expected[i] <= expected[best] * EXPLORE_MAX_COST_RATIO + 0.02)

        alternatives = [i for i in order[1:] if slack(i)]
        if alternatives and slack(best):
            eps = config.exploration
            if rng.random() < eps:
                chosen = alternatives[int(rng.integers(len(alternatives)))]
                propensity, explored = eps / len(alternatives), True
            else:
                propensity = 1.0 - eps
    c = candidates[chosen]
    seen = {c.backend}
    fallbacks: list[Candidate] = []
    for i in order:
        if candidates[i].backend not in seen:
            seen.add(candidates[i].backend)
            fallbacks.append(candidates[i])
    reason = (f"explored {c.backend} (propensity {propensity:.4f}) instead of {candidates[best].backend}"
              if explored else
              f"lowest expected total cost ${c.expected_total_usd:.4f} among {len(order)} feasible "
              f"of {n} candidates")
    return Decision(backend=c.backend, steps=c.steps, fallbacks=fallbacks, candidates=candidates,
                    propensity=propensity, explored=explored, reason=reason, policy=policy_name,
                    router_version=router_version)


def _median(values: list[float]) -> float:
    """``statistics.median`` (the same float) without its type dispatch: this runs on every decision."""
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _infeasible(candidates: list[Candidate], budget: float, excluded: set[str], config: PolicyConfig,
                policy_name: str, router_version: str) -> Decision:
    """Nothing meets the SLA. Best effort tries the candidate most likely on time among those the
    budget allows, whose breaker is not open and that serve the operation (``excluded`` names the
    others; the deadline still ends the call; the budget is a price, not a prediction, so it is
    never exceeded); refusal, or nothing affordable, returns ``backend=None`` with ``why_not`` on
    every candidate."""
    if config.best_effort:
        usable = [i for i, c in enumerate(candidates) if c.cost_usd <= budget and c.backend not in excluded]
        if usable:
            best = max(usable, key=lambda i: (candidates[i].p_on_time, -candidates[i].expected_total_usd))
            c = candidates[best]
            return Decision(backend=c.backend, steps=c.steps, candidates=candidates, propensity=1.0,
                            reason=f"best effort: nothing meets the SLA; {c.backend} has the highest "
                                   f"P(on time)={c.p_on_time:.2f} within the budget",
                            policy=policy_name, router_version=router_version, predicted_to_miss=True)
        reason = (f"no candidate among {len(candidates)} fits the budget left with its breaker closed "
                  f"and serves the operation")
    else:
        reason = f"no feasible candidate among {len(candidates)} (on_infeasible = refuse)"
    return Decision(backend=None, candidates=candidates, propensity=1.0, reason=reason,
                    policy=policy_name, router_version=router_version)
