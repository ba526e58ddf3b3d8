"""Plain input and output types of the router. ``pixelroute.router`` imports nothing from the rest of ``pixelroute``.

The SDK converts its own request, SLA and backends into these; any other program can too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

BreakerState = Literal["closed", "open", "half_open"]
#: what a request asks for: an image from text, or a change to a given image
Operation = Literal["generate", "edit"]
OPERATIONS: tuple[str, ...] = ("generate", "edit")


@dataclass(frozen=True)
class RouteRequest:
    """What the router needs to know about one request (``None`` = the backend's default).

    An edit (``operation="edit"``) also carries its ``strength`` (``None`` = the backend's
    default) and whether a ``masked`` area is repainted; its size is the output's.
    """

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    n: int = 1
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    scheduler: str | None = None
    operation: Operation = "generate"
    strength: float | None = None
    masked: bool = False

    @classmethod
    def from_dict(cls, prompt: str, params: dict[str, Any] | None, negative_prompt: str | None = None,
                  operation: Any = None) -> RouteRequest:
        """From the telemetry / ``route`` shape; a bad value is a ``ValueError`` naming ``params.<key>``.

        ``operation`` missing (records written before edits existed) reads as ``"generate"``.
        """
        p = params or {}
        if not isinstance(p, dict):
            raise ValueError(f"`params` must be an object but is {_short(p)}")
        if operation not in (None, *OPERATIONS):
            raise ValueError(f"`operation` must be one of {', '.join(OPERATIONS)} but is {_short(operation)}")
        op: Operation = "edit" if operation == "edit" else "generate"
        strength = p.get("strength")
        if strength is not None and (isinstance(strength, bool) or not isinstance(strength, int | float)
                                     or not 0.0 < strength <= 1.0):
            raise ValueError(f"`params.strength` must be a number in (0, 1] or null but is {_short(strength)}")
        masked = p.get("masked")
        if masked is not None and not isinstance(masked, bool):
            raise ValueError(f"`params.masked` must be true, false or null but is {_short(masked)}")
        if not isinstance(prompt, str):
            raise ValueError(f"`prompt` must be a string but is {_short(prompt)}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(f"`negative_prompt` must be a string or null but is {_short(negative_prompt)}")
        n = _whole(p.get("n"), "params.n", 1, 10_000)
        guidance = p.get("guidance")
        if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, int | float)
                                     or not math.isfinite(guidance)):
            raise ValueError(f"`params.guidance` must be a finite number or null but is {_short(guidance)}")
        seed = p.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`params.seed` must be an integer or null but is {_short(seed)}")
        scheduler = p.get("scheduler")
        return cls(
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=_whole(p.get("width"), "params.width", 1, 1_000_000),
            height=_whole(p.get("height"), "params.height", 1, 1_000_000),
            n=1 if n is None else n,
            steps=_whole(p.get("steps"), "params.steps", 1, 100_000),
            guidance=None if guidance is None else float(guidance),
            seed=seed,
            scheduler=None if scheduler is None else str(scheduler),
            operation=op,
            strength=None if strength is None else float(strength),
            masked=bool(masked),
        )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RouteRequest:
        """The request of a telemetry record (or a ``route`` input line): what training and serving both read."""
        return cls.from_dict(record.get("prompt") or "", record.get("params"), record.get("negative_prompt"),
                             record.get("operation"))


def _whole(v: Any, where: str, lo: int, hi: int) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v != int(v) \
            or not lo <= v <= hi:
        raise ValueError(f"`{where}` must be a whole number between {lo} and {hi} or null but is {_short(v)}")
    return int(v)


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
    #: seconds a local pipeline takes to load before its first request (``None``: the kind's preset)
    typical_load_s: float | None = None
    supports_negative_prompt: bool = True
    supports_steps: bool = True
    #: the operations the backend serves; the policy never routes a request to one that lacks its operation
    operations: tuple[str, ...] = ("generate",)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackendProfile:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known and v is not None}
        for key in ("step_options", "operations"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


#: the live-state keys of a backend, as telemetry's ``context`` and ``route``'s input carry them
STATE_KEYS: tuple[str, ...] = ("in_flight", "queue_depth", "breaker", "recent_failure_rate", "loaded",
                               "recent_latency_ratio")
_BREAKER_STATES = ("closed", "open", "half_open")
#: ``recent_latency_ratio`` is clipped to this range: one stuck request must not make a backend look 1000x slow
LATENCY_RATIO_RANGE = (0.25, 8.0)


@dataclass
class BackendState:
    """Live context for one backend at decision time.

    ``loaded``: a local pipeline is in memory (``False`` = the next request pays the load time);
    remote backends are always loaded. ``recent_latency_ratio``: the geometric mean, over the
    client's recent attempts on this backend, of observed latency / the cold-start prior's
    expectation for that request (1.0 = as expected, or too few recent attempts to tell).
    """

    in_flight: int = 0
    queue_depth: int = 0
    breaker: BreakerState = "closed"
    recent_failure_rate: float = 0.0
    loaded: bool = True
    recent_latency_ratio: float = 1.0

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "context") -> BackendState:
        """Parse one backend's state (unknown keys are ignored; a bad value is a ``ValueError`` naming it)."""
        if not isinstance(d, dict):
            raise ValueError(f"`{where}` must be an object but is {_short(d)}")
        return cls(
            in_flight=_count(d.get("in_flight"), f"{where}.in_flight"),
            queue_depth=_count(d.get("queue_depth"), f"{where}.queue_depth"),
            breaker=_breaker(d.get("breaker"), f"{where}.breaker"),
            recent_failure_rate=_unit(d.get("recent_failure_rate"), f"{where}.recent_failure_rate"),
            loaded=_flag(d.get("loaded"), f"{where}.loaded"),
            recent_latency_ratio=_ratio(d.get("recent_latency_ratio"), f"{where}.recent_latency_ratio"),
        )


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _count(v: Any, where: str) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0 or v != int(v) \
            or v > 1_000_000:
        raise ValueError(f"`{where}` must be a whole number between 0 and 1000000 but is {_short(v)}")
    return int(v)


def _unit(v: Any, where: str) -> float:
    if v is None:
        return 0.0
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
        raise ValueError(f"`{where}` must be a number between 0 and 1 but is {_short(v)}")
    return float(v)


def _ratio(v: Any, where: str) -> float:
    if v is None:
        return 1.0
    if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"`{where}` must be a positive number but is {_short(v)}")
    lo, hi = LATENCY_RATIO_RANGE
    return float(min(max(v, lo), hi))


def _flag(v: Any, where: str) -> bool:
    if v is None:
        return True
    if not isinstance(v, bool):
        raise ValueError(f"`{where}` must be true or false but is {_short(v)}")
    return v


def _breaker(v: Any, where: str) -> BreakerState:
    if v is None:
        return "closed"
    if v not in _BREAKER_STATES:
        raise ValueError(f"`{where}` must be one of closed, open, half_open but is {_short(v)}")
    state: BreakerState = v
    return state


@dataclass
class RouteContext:
    """Live context: per-backend states, and a default for backends without their own.

    The one parser of the telemetry ``context`` object (training, ``pixelroute route``, the SDK and
    the simulator all go through :meth:`from_dict`). Two shapes, which may be combined:

    * flat, ``{"in_flight": 2, "breaker": "closed", ...}``: the state of every backend the request
      could go to (the SDK writes the state of the backend an attempt went to this way);
    * per backend, ``{"backends": {"sd35": {"in_flight": 2}, ...}}``: a backend listed there has its
      own state; its missing keys come from the flat part, then from the defaults.
    """

    backends: dict[str, BackendState] = field(default_factory=dict)
    #: the state of a backend not in ``backends`` (``None`` = idle, closed, loaded)
    default: BackendState | None = None

    def get(self, name: str) -> BackendState:
        return self.backends.get(name) or self.default or _IDLE

    @property
    def empty(self) -> bool:
        return not self.backends and self.default is None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RouteContext:
        """Parse either shape (see the class docstring); a bad value is a ``ValueError`` naming its key."""
        if not d:
            return cls()
        if not isinstance(d, dict):
            raise ValueError(f"`context` must be an object but is {_short(d)}")
        flat = {k: d[k] for k in STATE_KEYS if k in d}
        default = BackendState.from_dict(flat, "context") if flat else None
        per = d.get("backends")
        per = {} if per is None else per
        if not isinstance(per, dict):
            raise ValueError(f"`context.backends` must be an object of backend name -> state but is {_short(per)}")
        states = {}
        for name, s in per.items():
            if not isinstance(s, dict):
                raise ValueError(f"`context.backends.{name}` must be an object but is {_short(s)}")
            states[str(name)] = BackendState.from_dict({**flat, **s}, f"context.backends.{name}")
        return cls(states, default)

    def state_dict(self, name: str) -> dict[str, Any]:
        """``name``'s state as the flat telemetry object."""
        s = self.get(name)
        return {k: getattr(s, k) for k in STATE_KEYS}


_IDLE = BackendState()


def state_of(context: dict[str, Any] | None, backend: str) -> BackendState:
    """The state of ``backend`` in a telemetry ``context`` object (either shape): what training reads."""
    return RouteContext.from_dict(context).get(backend)


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
    #: the backend's pipeline is in memory (``False``: this candidate's latency includes loading it)
    loaded: bool = True
    #: the cold-start prior's median for this request and load, before the recent-latency correction:
    #: what the SDK divides an observed latency by to keep ``recent_latency_ratio``
    reference_latency_s: float = 0.0

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
    #: nothing met the SLA and the backend was chosen anyway (best effort, or pinned by the caller)
    predicted_to_miss: bool = False

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
            "predicted_to_miss": self.predicted_to_miss,
            "candidates": [c.to_dict() for c in self.candidates],
        }
