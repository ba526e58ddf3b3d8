"""The decision rule shared by the cold-start and the trained policies.

Per candidate (backend x step option) a predictor gives the median latency, a log-space spread,
P(fail), expected correction seconds and the price. Then:

* ``p_on_time = P(latency <= deadline left)`` under a lognormal through those numbers;
* feasible = ``p_on_time >= sla_confidence`` and price <= budget left and breaker not open;
* ``expected_total_usd = price + p_fail * failure_cost + correction_s / 3600 * correction_cost_per_hour``
  where ``failure_cost`` = the median candidate's price + correction value (what a retry elsewhere
  costs) plus the failed attempt's median latency valued at the same hourly rate (time lost);
* pick the feasible minimum; fallbacks = the other feasible backends (best option each) in order;
* exploration: with probability ``exploration``, and only when the best and the alternative both
  meet the deadline and budget with slack (at 60% of what is left), pick a uniformly random
  alternative instead. ``propensity`` is the exact probability of what was chosen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ._types import BackendProfile, Candidate, Decision, RouteContext, SLASpec

#: share of the remaining deadline and budget an exploration candidate must fit in
SLACK_SHARE = 0.6
#: exploration never picks a candidate expected to cost more than this multiple of the best (+2 cents)
EXPLORE_MAX_COST_RATIO = 3.0
_Z = NormalDist()


@dataclass
class Predictions:
    """Arrays over the candidate options, all the same length."""

    latency_p50_s: np.ndarray
    #: log-space standard deviation of latency (the lognormal's shape)
    latency_sigma: np.ndarray
    p_fail: np.ndarray
    correction_s: np.ndarray
    price_usd: np.ndarray


@dataclass(frozen=True)
class PolicyConfig:
    """How decisions trade money, time and risk (the ``[router]`` config section)."""

    correction_cost_per_hour: float = 60.0
    exploration: float = 0.02
    sla_confidence: float = 0.95
    best_effort: bool = False

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
) -> Decision:
    """Apply the SLA-constrained minimum-expected-cost rule to predicted candidates."""
    n = len(options)
    if n == 0:
        return Decision(backend=None, reason="no backends were offered", policy=policy_name,
                        router_version=router_version)
    deadline, budget = sla.remaining_s, sla.budget_usd
    z_sla = _Z.inv_cdf(config.sla_confidence)
    p50 = np.maximum(preds.latency_p50_s, 1e-3)
    sigma = preds.latency_sigma
    on_time = p_on_time(p50, sigma, deadline)
    p95 = p50 * np.exp(1.6448536 * sigma)
    p_sla = p50 * np.exp(z_sla * sigma)  # the latency quantile the SLA asks for
    rate = config.correction_cost_per_hour / 3600.0
    # a failed attempt still leaves the person needing an image: a retry elsewhere costs a typical
    # candidate's price and correction, and the wait for the failed attempt is time lost too
    failure_cost = float(np.median(preds.price_usd + preds.correction_s * rate)) + p50 * rate
    expected = preds.price_usd + preds.p_fail * failure_cost + preds.correction_s * rate
    candidates: list[Candidate] = []
    feasible = np.zeros(n, dtype=bool)
    for i, (profile, steps) in enumerate(options):
        why: list[str] = []
        if context.get(profile.name).breaker == "open":
            why.append("circuit breaker is open")
        if on_time[i] < config.sla_confidence:
            why.append(f"P(on time)={on_time[i]:.2f} < {config.sla_confidence:.2f} with {deadline:.2f} s left "
                       f"(p{round(config.sla_confidence * 100)} latency {p_sla[i]:.2f} s)")
        if preds.price_usd[i] > budget:
            why.append(f"price ${preds.price_usd[i]:.4f} > ${budget:.4f} left")
        feasible[i] = not why
        candidates.append(Candidate(
            backend=profile.name, steps=steps, feasible=bool(feasible[i]),
            latency_p50_s=float(p50[i]), latency_p95_s=float(p95[i]), p_on_time=float(on_time[i]),
            p_fail=float(preds.p_fail[i]), correction_s=float(preds.correction_s[i]),
            cost_usd=float(preds.price_usd[i]), expected_total_usd=float(expected[i]),
            why_not="; ".join(why) or None,
        ))
    if not feasible.any():
        return _infeasible(candidates, on_time, context, config, policy_name, router_version)
    order = [i for i in np.argsort(expected, kind="stable") if feasible[i]]
    best = order[0]
    chosen, propensity, explored = best, 1.0, False
    # exploration: only alternatives that, like the best, fit in a fraction of what is left
    slack = feasible & (p_on_time(p50, sigma, deadline * SLACK_SHARE) >= config.sla_confidence) \
        & (preds.price_usd <= budget * SLACK_SHARE) \
        & (expected <= expected[best] * EXPLORE_MAX_COST_RATIO + 0.02)
    alternatives = [i for i in order[1:] if slack[i]]
    if config.exploration > 0 and slack[best] and alternatives:
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
              f"lowest expected total cost ${c.expected_total_usd:.4f} among {int(feasible.sum())} feasible "
              f"of {n} candidates")
    return Decision(backend=c.backend, steps=c.steps, fallbacks=fallbacks, candidates=candidates,
                    propensity=propensity, explored=explored, reason=reason, policy=policy_name,
                    router_version=router_version)


def _infeasible(candidates: list[Candidate], on_time: np.ndarray, context: RouteContext, config: PolicyConfig,
                policy_name: str, router_version: str) -> Decision:
    if config.best_effort:
        usable = [i for i, c in enumerate(candidates) if context.get(c.backend).breaker != "open"]
        if usable:
            best = max(usable, key=lambda i: (on_time[i], -candidates[i].expected_total_usd))
            c = candidates[best]
            return Decision(backend=c.backend, steps=c.steps, candidates=candidates, propensity=1.0,
                            reason=f"best effort: nothing meets the SLA; {c.backend} has the highest "
                                   f"P(on time)={c.p_on_time:.2f}",
                            policy=policy_name, router_version=router_version)
    return Decision(backend=None, candidates=candidates, propensity=1.0,
                    reason=f"no feasible candidate among {len(candidates)}",
                    policy=policy_name, router_version=router_version)
