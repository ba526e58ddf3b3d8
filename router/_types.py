"""Plain input and output types of the router. ``router`` imports nothing from ``sdk``.

The SDK converts its own request, SLA and backends into these; any other program can too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class RouteRequest:
    """What the router needs to know about one request (``None`` = the backend's default)."""

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    n: int = 1
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    scheduler: str | None = None

    @classmethod
    def from_dict(cls, prompt: str, params: dict[str, Any] | None, negative_prompt: str | None = None) -> RouteRequest:
        p = params or {}
        return cls(
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=p.get("width"),
            height=p.get("height"),
            n=int(p.get("n") or 1),
            steps=p.get("steps"),
            guidance=p.get("guidance"),
            seed=p.get("seed"),
            scheduler=p.get("scheduler"),
        )


@dataclass(frozen=True)
class SLASpec:
    """The caller's constraints for what is left of the call."""

    deadline_s: float | None = None
    max_cost_usd: float | None = None

    @property
    def remaining_s(self) -> float:
        return math.inf if self.deadline_s is None else self.deadline_s

    @property
    def budget_usd(self) -> float:
        return math.inf if self.max_cost_usd is None else self.max_cost_usd


@dataclass(frozen=True)
class BackendProfile:
    """A backend as the router sees it (the SDK builds it from ``Backend.describe()``)."""

    name: str
    kind: str = "custom"
    local: bool = False
    #: one of per_image / per_megapixel / per_gpu_second, as in the config's ``price``
    price: dict[str, float] = field(default_factory=dict)
    default_steps: int | None = None
    default_guidance: float | None = None
    default_width: int = 1024
    default_height: int = 1024
    step_options: tuple[int, ...] = ()
    #: declared strengths in [0, 1] per scenario: typography, counting, composition, reflection, anatomy
    strengths: dict[str, float] = field(default_factory=dict)
    typical_latency_s: float | None = None
    typical_failure_rate: float | None = None
    supports_negative_prompt: bool = True
    supports_steps: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackendProfile:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known and v is not None}
        if "step_options" in kwargs:
            kwargs["step_options"] = tuple(kwargs["step_options"])
        return cls(**kwargs)


@dataclass
class BackendState:
    """Live context for one backend at decision time."""

    in_flight: int = 0
    queue_depth: int = 0
    breaker: BreakerState = "closed"
    recent_failure_rate: float = 0.0


@dataclass
class RouteContext:
    """Live context for every backend, keyed by backend name."""

    backends: dict[str, BackendState] = field(default_factory=dict)

    def get(self, name: str) -> BackendState:
        return self.backends.get(name) or BackendState()

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RouteContext:
        """Accept ``{"backends": {name: {...}}}`` or the telemetry shape ``{"in_flight": 2, ...}``."""
        if not d:
            return cls()
        per = d.get("backends") or {}
        return cls({name: BackendState(**{k: v for k, v in s.items() if k in BackendState.__dataclass_fields__})
                    for name, s in per.items()})


@dataclass
class Candidate:
    """One (backend, knobs) option with every prediction and why it was or was not chosen."""

    backend: str
    steps: int | None = None
    feasible: bool = True
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    p_on_time: float = 1.0
    p_fail: float = 0.0
    correction_s: float = 0.0
    cost_usd: float = 0.0
    expected_total_usd: float = 0.0
    why_not: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # every field is a scalar: a plain comprehension is ~10x cheaper than dataclasses.asdict,
        # which deep-copies, and this runs for every candidate of every decision
        return {name: getattr(self, name) for name in _CANDIDATE_FIELDS}


_CANDIDATE_FIELDS = tuple(Candidate.__dataclass_fields__)


@dataclass
class Decision:
    """The router's answer. ``backend is None`` when nothing is feasible (see ``candidates``)."""

    backend: str | None
    steps: int | None = None
    fallbacks: list[Candidate] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    propensity: float = 1.0
    explored: bool = False
    reason: str = ""
    policy: str = "cold_start"
    router_version: str = "cold-start"

    @property
    def chosen(self) -> Candidate | None:
        for c in self.candidates:
            if c.backend == self.backend and c.steps == self.steps:
                return c
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "steps": self.steps,
            "fallbacks": [c.backend for c in self.fallbacks],
            "propensity": self.propensity,
            "explored": self.explored,
            "reason": self.reason,
            "policy": self.policy,
            "router_version": self.router_version,
            "candidates": [c.to_dict() for c in self.candidates],
        }
