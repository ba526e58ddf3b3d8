"""Workload simulator: synthetic, clearly marked telemetry (``"simulated": true``) from backend profiles.

Each simulated backend has a *declared* side (what the router is told: a :class:`BackendProfile`
with price, typical latency and strengths) and a *true* side the router never sees: lognormal
latency around a median with a heavy tail, load sensitivity, rate-limit, content-rejection and
server-error rates, and a weakness per scenario that drives correction time. The defaults
(:data:`DEFAULT_BACKENDS`) are built from published backend figures (each cites its BF §n section; docs/router.md).

Logging policy (stated, so off-policy evaluation is exact): epsilon-greedy over the cold-start
router. With probability ``epsilon`` a uniformly random option among those whose breaker is not
open, otherwise the cold-start choice (best effort when nothing is feasible). The propensity of
the logged option is ``(1 - epsilon) * [greedy] + epsilon / K``.

Outcomes are deterministic per (request seed, backend, steps): every policy replayed on the same
workload meets the same luck (common random numbers), which keeps comparisons fair.
"""

from __future__ import annotations

import json
import math
import tomllib
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from . import _priors
from ._types import BackendProfile, BackendState, BreakerState, RouteContext, RouteRequest, SLASpec
from .features import SCENARIOS, prompt_vector, scenario_probabilities

#: minutes a person really spends per defect (the cold-start prior guesses differently on purpose)
TRUE_FIX_S = {"typography": 300.0, "counting": 70.0, "composition": 150.0, "reflection": 45.0, "anatomy": 120.0}
#: a result needing more than this much correction is rejected (not an accepted image)
REJECT_ABOVE_S = 400.0


@dataclass(frozen=True)
class SimBackend:
    """One simulated backend: its declared profile plus the hidden truth."""

    name: str
    kind: str
    local: bool
    price: dict[str, float]
    latency_s: float
    sigma: float
    weakness: dict[str, float]
    strengths: dict[str, float]
    default_steps: int | None = None
    default_guidance: float | None = None
    step_options: tuple[int, ...] = ()
    tail_prob: float = 0.01
    tail_mult: float = 3.0
    #: extra latency per in-flight request (remote) as a share of the median
    load_sensitivity: float = 0.03
    #: extra latency per 77 prompt tokens (prompt rewriting, long text encoders)
    length_sensitivity: float = 0.0
    rate_limit: float = 0.01
    inflight_cap: int | None = None
    reject_rate: float = 0.01
    people_reject_mult: float = 1.0
    server_error: float = 0.005
    #: mean in-flight requests from other traffic
    load: float = 1.0
    declared_latency_s: float | None = None
    #: local only: seconds to load the pipeline, and the share of requests that find it not loaded
    #: (a restarted worker, an evicted pipeline); the router is told ``declared_load_s``
    load_s: float = 0.0
    cold_rate: float = 0.0
    declared_load_s: float | None = None

    def profile(self) -> BackendProfile:
        """What the router is told about this backend."""
        return BackendProfile(
            name=self.name, kind=self.kind, local=self.local, price=dict(self.price),
            default_steps=self.default_steps, default_guidance=self.default_guidance,
            step_options=self.step_options, strengths=dict(self.strengths),
            typical_latency_s=self.declared_latency_s or self.latency_s,
            typical_failure_rate=round(self.rate_limit + self.reject_rate + self.server_error, 4),
            typical_load_s=self.declared_load_s,
        )


def _w(t: float, c: float, p: float, r: float, a: float) -> dict[str, float]:
    return dict(zip(SCENARIOS, (t, c, p, r, a), strict=True))


DEFAULT_BACKENDS: tuple[SimBackend, ...] = (
    # SD3.5 Large Turbo, local: 4 steps ~1/20 of Large's passes (BF §5 proxy); A100 at $0.0014/s (BF §1).
    SimBackend("sd35-turbo-local", "diffusers", True, {"per_gpu_second": 0.0014}, 1.0, 0.12,
               _w(0.8, 0.45, 0.5, 0.4, 0.45), _w(0.3, 0.5, 0.5, 0.6, 0.5), default_steps=4, default_guidance=0.0,
               step_options=(4, 8), server_error=0.003, reject_rate=0.0, rate_limit=0.0, load=0.3,
               load_s=16.0, cold_rate=0.02),
    # SDXL 1024², 30 steps, A100 bf16+SDPA 3.31 s (BF §5); GenEval counting .39 / position .15 (BF §4.1).
    SimBackend("sdxl-local", "diffusers", True, {"per_gpu_second": 0.0014}, 3.3, 0.1,
               _w(0.9, 0.6, 0.75, 0.5, 0.55), _w(0.1, 0.4, 0.2, 0.5, 0.45), default_steps=30,
               default_guidance=5.0, step_options=(20, 30, 40), server_error=0.003, reject_rate=0.0,
               rate_limit=0.0, load=0.3, load_s=9.0, cold_rate=0.02),
    # FLUX.1 [schnell] on Replicate $0.003 (BF §1), 1.27 s call + download (BF §2); text 1/30 (BF §4.5).
    SimBackend("flux-schnell", "replicate", False, {"per_image": 0.003}, 2.5, 0.2,
               _w(0.85, 0.35, 0.35, 0.35, 0.3), _w(0.2, 0.6, 0.6, 0.6, 0.7), tail_prob=0.02),
    # FLUX.1 [dev] on fal: $0.025/MP (BF §1), 2.71 s call, 6.8 s with download, CV 0.11 (BF §2).
    SimBackend("flux-dev", "replicate", False, {"per_megapixel": 0.025}, 6.8, 0.15,
               _w(0.4, 0.25, 0.3, 0.3, 0.25), _w(0.6, 0.75, 0.7, 0.7, 0.75), declared_latency_s=5.0),
    # Ideogram 2a $0.04 (BF §1), 5-15 s (BF §2), 10 in-flight images per org (BF §3), typography-first.
    SimBackend("ideogram-v2a", "ideogram", False, {"per_image": 0.04}, 9.0, 0.3,
               _w(0.1, 0.4, 0.45, 0.45, 0.4), _w(0.9, 0.6, 0.6, 0.6, 0.6), tail_prob=0.03, tail_mult=2.5,
               rate_limit=0.02, inflight_cap=10, reject_rate=0.02, load=3.0),
    # gpt-image-1 medium $0.042 (BF §1), 20-60 s with a heavy tail (BF §6), GenEval .84 (BF §4.1),
    # moderation false positives on people (BF §3, codex#38582).
    SimBackend("gpt-image-1", "openai", False, {"per_image": 0.042}, 30.0, 0.45,
               _w(0.15, 0.15, 0.2, 0.25, 0.2), _w(0.85, 0.85, 0.75, 0.75, 0.8), tail_prob=0.05,
               length_sensitivity=0.15, rate_limit=0.03, reject_rate=0.03, people_reject_mult=4.0, load=2.0),
    # Imagen 4 Fast $0.02, 3-5 s (BF §1, §2); 20 requests/min quota (BF §3); IMAGE_SAFETY on people.
    SimBackend("imagen-4-fast", "imagen", False, {"per_image": 0.02}, 4.0, 0.25,
               _w(0.5, 0.4, 0.4, 0.35, 0.35), _w(0.5, 0.6, 0.6, 0.6, 0.6), rate_limit=0.04,
               reject_rate=0.02, people_reject_mult=3.0),
    # SD3.5 Large on the Stability API $0.065 (BF §1); GenEval counting .73, position .34 (BF §4.1).
    SimBackend("sd35-large-api", "stability", False, {"per_image": 0.065}, 6.0, 0.25,
               _w(0.45, 0.27, 0.6, 0.35, 0.35), _w(0.6, 0.7, 0.4, 0.6, 0.6)),
)


@dataclass(frozen=True)
class Drift:
    """A change in one backend's true behaviour over part of a workload's timeline (fractions 0-1).

    ``latency_mult`` multiplies its true latency (a provider at peak hours, a GPU shared with a
    batch job); ``down`` makes every attempt fail fast with a server error (an outage).
    """

    backend: str
    start: float
    end: float
    latency_mult: float = 1.0
    down: bool = False


#: the worlds ``pixelroute simulate --world`` knows, as functions of the drifting backend's name
WORLDS = ("stationary", "drifting", "outage")
#: the requests a client's recent-latency window spans: the SDK keeps a backend's last 20
#: observations (within 300 s); at a fifth of the traffic that is the last ~100 requests
WINDOW_ITEMS = 100
#: how much slower the drifting backend runs at its peaks: a GPU time-shared with a batch job, or a
#: provider queueing at peak hours (some queue instead of refusing), is several times slower, not 10%
DRIFT_LATENCY_MULT = 4.0
#: the largest drift multiplier a world accepts (past it a backend is down, which ``outage`` models)
MAX_DRIFT_MULT = 1000.0
#: requests between an outage starting and the client's breaker and failure rate showing it
OUTAGE_LAG_ITEMS = 20


def drift_mult_ok(latency_mult: float) -> bool:
    """Whether ``latency_mult`` is a drift :func:`world` accepts: finite, above 0, at most :data:`MAX_DRIFT_MULT`."""
    return math.isfinite(latency_mult) and 0 < latency_mult <= MAX_DRIFT_MULT


def world(name: str, backend: str | None = None, backends: Sequence[SimBackend] = DEFAULT_BACKENDS,
          latency_mult: float = DRIFT_LATENCY_MULT) -> list[Drift]:
    """The drifts of a named world. ``drifting``: ``backend`` (default: the first local one, the
    cheap workhorse) runs ``latency_mult`` times slower for two peaks, 20-45% and 65-85% of the
    timeline; ``outage``: ``backend`` (default: the first remote one) is down for 35-65%."""
    if name not in WORLDS:
        raise ValueError(f"`world` must be one of {', '.join(WORLDS)} but is {name!r}")
    names = [b.name for b in backends]
    if backend is not None and backend not in names:
        raise ValueError(f"`drift backend` must be one of {', '.join(names)} but is {backend!r}")
    if not drift_mult_ok(latency_mult):
        raise ValueError(f"`latency_mult` must be a number above 0 and at most {MAX_DRIFT_MULT:g} "
                         f"but is {latency_mult!r}")
    if name == "stationary":
        return []
    if name == "drifting":
        target = backend or next((b.name for b in backends if b.local), names[0])
        return [Drift(target, 0.20, 0.45, latency_mult=latency_mult),
                Drift(target, 0.65, 0.85, latency_mult=latency_mult)]
    target = backend or next((b.name for b in backends if not b.local), names[0])
    return [Drift(target, 0.35, 0.65, down=True)]


def load_backends(path: str | Path | None) -> list[SimBackend]:
    """Simulated backends from a TOML/JSON file (``[[backends]]`` tables with :class:`SimBackend` fields)."""
    if path is None:
        return list(DEFAULT_BACKENDS)
    p = Path(path)
    text = p.read_text()
    doc = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    out = []
    for i, d in enumerate(doc.get("backends", [])):
        unknown = set(d) - set(SimBackend.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{p}: backends[{i}] has unknown key(s) {sorted(unknown)}")
        try:
            out.append(SimBackend(**{**d, "step_options": tuple(d.get("step_options", ()))}))
        except TypeError as exc:
            raise ValueError(f"{p}: backends[{i}] is incomplete: {exc}") from exc
    if not out:
        raise ValueError(f"{p} defines no [[backends]]")
    return out


def dump_backends(backends: Sequence[SimBackend]) -> str:
    """The JSON profiles-file form of ``backends`` (what ``--profiles`` reads)."""
    return json.dumps({"backends": [asdict(b) for b in backends]}, indent=2)


_SUBJECTS = ("a red fox", "a vintage car", "an old lighthouse", "a bowl of ramen", "a mountain village",
             "a robot", "a sailboat", "a cup of coffee", "a golden retriever", "a castle", "a bicycle",
             "a cat", "a teapot", "a hot air balloon", "a city street at night", "an astronaut")
_STYLES = ("watercolor painting", "oil painting", "digital art", "studio photo", "anime style",
           "pencil sketch", "cinematic lighting", "minimalist poster")
_WORDS = ("OPEN", "SALE 50%", "Happy Birthday Mia", "NO PARKING", "Cafe Luna", "EXIT", "Welcome Home")
_NUMBERS = ("two", "three", "four", "five", "seven", "12")
_PEOPLE = ("a woman waving her hands", "a crowd of people", "a child holding three balloons",
           "a chef's hands chopping vegetables", "portrait of an old man")
_SPATIAL = ("behind", "in front of", "to the left of", "on top of", "next to", "partially hidden behind")
_SURFACES = ("in a mirror", "on a chrome surface", "through a glass window", "in a calm lake")


def overclaiming(backends: Sequence[SimBackend] = DEFAULT_BACKENDS, name: str = "flux-dev") -> list[SimBackend]:
    """A world where one vendor's claims are wrong: ``name`` declares itself strong at text and
    counting but is weak at both. Cold-start routing believes the claims; a router retrained on
    the logs learns otherwise. This is the case that justifies learning from telemetry."""
    if not any(b.name == name for b in backends):
        raise ValueError(f"`name` must be one of the simulated backends but is {name!r}")

    # only the quality claims lie: its declared latency is made true, so that what a router can
    # learn online from the recent-latency ratio is not mixed into what only logged corrections show
    def liar(b: SimBackend) -> SimBackend:
        return replace(b, strengths={**b.strengths, "typography": 0.95, "counting": 0.9},
                       weakness={**b.weakness, "typography": 0.9, "counting": 0.6}, declared_latency_s=None)

    return [liar(b) if b.name == name else b for b in backends]


def generate_prompts(n: int, seed: int = 0) -> list[str]:
    """Template prompts covering every scenario, for when no prompt file is given."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s, t = _SUBJECTS[rng.integers(len(_SUBJECTS))], _SUBJECTS[rng.integers(len(_SUBJECTS))]
        style = _STYLES[rng.integers(len(_STYLES))]
        kind = rng.choice(6, p=(0.35, 0.15, 0.15, 0.15, 0.1, 0.1))
        if kind == 0:
            out.append(f"{s}, {style}")
        elif kind == 1:
            out.append(f'a sign that says "{_WORDS[rng.integers(len(_WORDS))]}" above {s}')
        elif kind == 2:
            out.append(f"{_NUMBERS[rng.integers(len(_NUMBERS))]} {t.split(' ', 1)[1]}s on a table")
        elif kind == 3:
            out.append(f"{s} {_SPATIAL[rng.integers(len(_SPATIAL))]} {t} and a tree, {style}")
        elif kind == 4:
            out.append(f"{_PEOPLE[rng.integers(len(_PEOPLE))]}, {style}")
        else:
            out.append(f"{s} reflected {_SURFACES[rng.integers(len(_SURFACES))]}")
    return out


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from ``.txt`` (one a line), ``.tsv`` (a ``Prompt`` column) or ``.jsonl`` (``"prompt"`` key)."""
    p = Path(path)
    lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    if p.suffix == ".tsv":
        header = lines[0].split("\t")
        if "Prompt" not in header:
            raise ValueError(f"{p}: a .tsv prompt file needs a `Prompt` column, found {header}")
        col = header.index("Prompt")
        return [ln.split("\t")[col] for ln in lines[1:] if ln.split("\t")[col].strip()]
    if p.suffix == ".jsonl":
        return [json.loads(ln)["prompt"] for ln in lines]
    return [ln.strip() for ln in lines]


@dataclass
class WorkItem:
    """One simulated request: what the caller asked, under what SLA and load."""

    request_id: str
    ts: datetime
    request: RouteRequest
    sla: SLASpec
    context: RouteContext
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)


_DEADLINES = (3.0, 6.0, 10.0, 20.0, 45.0, 90.0, None)
_DEADLINE_P = (0.1, 0.2, 0.2, 0.2, 0.15, 0.1, 0.05)
_BUDGETS = (0.01, 0.03, 0.05, 0.1, None)
_BUDGET_P = (0.1, 0.2, 0.3, 0.25, 0.15)
_SIZES = ((None, None), (512, 512), (768, 768), (1024, 1024), (1024, 1536), (1536, 1024))
_SIZE_P = (0.3, 0.1, 0.15, 0.3, 0.08, 0.07)


def _window_mult(drifts: Sequence[Drift], backend: str, i: int, n: int) -> float:
    """The mean latency multiplier over the health window ending at item ``i`` (what a client saw)."""
    lo, hi = max(0, i - WINDOW_ITEMS), i
    if hi <= lo:
        return 1.0
    total = 0.0
    for d in drifts:
        if d.backend == backend and not d.down:
            overlap = max(0.0, min(hi, d.end * n) - max(lo, d.start * n))
            total += (d.latency_mult - 1.0) * overlap
    return 1.0 + total / (hi - lo)


def make_workload(backends: Sequence[SimBackend], prompts: Sequence[str], n: int, seed: int = 0,
                  start: datetime | None = None, drifts: Sequence[Drift] = ()) -> list[WorkItem]:
    """``n`` requests drawn from ``prompts`` with a mix of deadlines, budgets, sizes and load.

    The live context is what a client would see: in-flight and queue counts, the breaker, the
    recent failure rate, whether a local pipeline is loaded, and the recent latency ratio
    (observed / declared over the last :data:`WINDOW_ITEMS` requests, with noise), which lags
    the truth that ``drifts`` change.
    """
    if not prompts:
        raise ValueError("`prompts` must not be empty")
    known = {b.name for b in backends}
    for d in drifts:
        if d.backend not in known:
            raise ValueError(f"drift backend {d.backend!r} is not one of the simulated backends")
    rng = np.random.default_rng(seed)
    # each backend's constant bias: its true median over the one it declares (flux-dev is slower)
    bias = {b.name: b.latency_s / (b.declared_latency_s or b.latency_s) for b in backends}
    t0 = start or datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        prompt = prompts[int(rng.integers(len(prompts)))]
        w, h = _SIZES[rng.choice(len(_SIZES), p=_SIZE_P)]
        req = RouteRequest(prompt=prompt, negative_prompt="blurry" if rng.random() < 0.2 else None,
                           width=w, height=h, n=int(rng.choice((1, 1, 1, 1, 2, 4))),
                           seed=int(rng.integers(1 << 31)) if rng.random() < 0.3 else None)
        sla = SLASpec(deadline_s=_DEADLINES[rng.choice(len(_DEADLINES), p=_DEADLINE_P)],
                      max_cost_usd=_BUDGETS[rng.choice(len(_BUDGETS), p=_BUDGET_P)])
        if sla.max_cost_usd is not None:  # budgets are per image: a 4-image request brings 4x the money
            sla = replace(sla, max_cost_usd=sla.max_cost_usd * req.n)
        # traffic swells and ebbs (one cycle per 2,000 requests) so load is a real signal
        surge = 1.0 + 0.8 * math.sin(2 * math.pi * i / 2000.0)
        states = {}
        true_mult: dict[str, float] = {}
        down: list[str] = []
        for b in backends:
            in_flight = int(rng.poisson(b.load * surge))
            breaker: BreakerState = "open" if rng.random() < 0.01 else "closed"
            failure = float(np.clip(rng.normal(b.rate_limit + b.reject_rate + b.server_error, 0.01), 0, 1))
            mult = 1.0
            for d in drifts:
                if d.backend == b.name and d.start * n <= i < d.end * n:
                    if d.down:
                        down.append(b.name)
                        if i - d.start * n >= OUTAGE_LAG_ITEMS:  # the client has seen it by now
                            breaker = "open" if rng.random() < 0.8 else "half_open"
                            failure = float(np.clip(rng.normal(0.9, 0.05), 0, 1))
                    else:
                        mult *= d.latency_mult
            if mult != 1.0:
                true_mult[b.name] = mult
            ratio = bias[b.name] * _window_mult(drifts, b.name, i, n) * float(np.exp(rng.normal(0.0, 0.1)))
            states[b.name] = BackendState(
                in_flight=in_flight, queue_depth=int(rng.poisson(0.5 * b.load * surge)) if b.local else 0,
                breaker=breaker, recent_failure_rate=round(failure, 4),
                loaded=not (b.local and rng.random() < b.cold_rate), recent_latency_ratio=round(ratio, 4))
        ts = t0 + timedelta(seconds=0.5 * i)
        rid = f"{int(ts.timestamp() * 1000):012x}-7{seed % 0xfff:03x}-{i:016x}"
        extra: dict[str, Any] = {}
        if true_mult:
            extra["latency_mult"] = true_mult
        if down:
            extra["down"] = down
        out.append(WorkItem(rid, ts, req, sla, RouteContext(states), int(rng.integers(1 << 62)), extra))
    return out


def realise(backend: SimBackend, item: WorkItem, steps: int | None) -> dict[str, Any]:
    """The true outcome of sending ``item`` to ``backend`` with ``steps`` (deterministic per item)."""
    rng = np.random.default_rng([item.seed, zlib.crc32(backend.name.encode()), steps or 0])
    req, profile = item.request, backend.profile()
    eff_steps = _priors.effective_steps(profile, req.steps, steps)
    mp = _priors.megapixels(profile, req.width, req.height)
    state = item.context.get(backend.name)
    tokens = float(prompt_vector(req.prompt)[2])
    if backend.local:
        d = backend.default_steps or eff_steps or 1
        median = backend.latency_s * (mp / 1.048576) * ((eff_steps or d) / d) * req.n
        queue = median * (state.queue_depth + state.in_flight) * float(rng.uniform(0.7, 1.0))
    else:
        median = backend.latency_s * math.sqrt(mp / 1.048576) * (1 + 0.25 * (req.n - 1))
        median *= 1 + backend.load_sensitivity * state.in_flight
        queue = 0.0
    median *= 1 + backend.length_sensitivity * tokens / 77.0
    median *= item.extra.get("latency_mult", {}).get(backend.name, 1.0)
    latency = float(rng.lognormal(math.log(median), backend.sigma))
    if rng.random() < backend.tail_prob:
        latency *= backend.tail_mult * (1 + float(rng.exponential(0.5)))
    if backend.local and not state.loaded:
        latency += backend.load_s * float(rng.lognormal(0.0, 0.25))
    latency += queue
    probs = scenario_probabilities(req.prompt)
    error: str | None = None
    if state.breaker == "open":
        error, latency = "circuit_open", 0.001
    elif backend.name in item.extra.get("down", ()):
        error, latency = "server_error", float(rng.uniform(0.3, 2.0))  # 503s and refused connections
    elif rng.random() < backend.rate_limit + (0.5 if backend.inflight_cap and
                                                state.in_flight * req.n >= backend.inflight_cap else 0.0):
        error, latency = "rate_limited", float(rng.uniform(0.1, 0.4))
    elif rng.random() < backend.reject_rate * (1 + backend.people_reject_mult * probs["anatomy"]):
        error, latency = "content_rejected", latency * 0.5
    elif rng.random() < backend.server_error:
        error, latency = "server_error", latency * 0.3
    if error is None and latency > item.sla.remaining_s:
        error, latency = "timeout", item.sla.remaining_s  # the SDK gives up at the deadline: censored
    gpu_s = (latency - queue) if backend.local and error in (None, "timeout") else None
    if backend.local:
        cost = _priors.price_usd(profile, mp, req.n, gpu_s or 0.0)
    else:  # providers bill successes only (BF §1 "Billing on failure")
        cost = _priors.price_usd(profile, mp, req.n, 0.0) if error is None else 0.0
    outcome = {"ok": error is None, "error": error, "latency_s": round(latency, 4),
               "queue_s": round(queue, 4), "gpu_s": None if gpu_s is None else round(gpu_s, 4),
               "cost_usd": round(cost, 6)}
    correction = None
    if error is None:
        d = backend.default_steps or 0
        step_penalty = math.sqrt(d / eff_steps) if (backend.local and d and eff_steps and eff_steps < d) else 1.0
        if backend.local and d and eff_steps and eff_steps > d:
            step_penalty = math.sqrt(d / eff_steps)  # more steps than default: a little cleaner
        seconds = float(rng.lognormal(math.log(10.0), 0.5))
        for s in SCENARIOS:
            p_defect = min(0.98, probs[s] * backend.weakness[s] * step_penalty)
            if rng.random() < p_defect:
                seconds += TRUE_FIX_S[s] * float(rng.lognormal(0.0, 0.4))
        verdict = "accepted" if seconds < 20 else ("edited" if seconds <= REJECT_ABOVE_S else "rejected")
        correction = {"seconds": round(seconds, 2), "verdict": verdict}
    return {"outcome": outcome, "correction": correction, "steps": eff_steps}


def record(item: WorkItem, backend: str, realised: dict[str, Any], decision: dict[str, Any],
           label_rate: float = 1.0) -> dict[str, Any]:
    """A §4 telemetry record (marked simulated) for one attempt."""
    req = item.request
    corr = realised["correction"]
    rng = np.random.default_rng([item.seed, 7])
    labelled = corr is not None and rng.random() < label_rate
    return {
        "schema": "pixelroute.telemetry/1", "simulated": True, "request_id": item.request_id, "attempt": 0,
        "ts": item.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "backend": backend,
        "prompt": req.prompt, "prompt_sha256": None, "negative_prompt": req.negative_prompt,
        "params": {"width": req.width, "height": req.height, "steps": realised["steps"], "guidance": req.guidance,
                   "n": req.n, "seed": req.seed, "scheduler": None},
        "sla": {"deadline_s": item.sla.deadline_s, "max_cost_usd": item.sla.max_cost_usd},
        "context": {"backends": {k: asdict(v) for k, v in item.context.backends.items()}},
        "decision": decision,
        "outcome": realised["outcome"],
        "correction": ({**corr, "ts": (item.ts + timedelta(minutes=5)).isoformat(timespec="seconds")
                        .replace("+00:00", "Z")} if labelled else None),
    }


def simulate(
    n: int,
    *,
    backends: Sequence[SimBackend] | None = None,
    prompts: Sequence[str] | None = None,
    seed: int = 0,
    epsilon: float = 0.15,
    label_rate: float = 0.7,
    start: datetime | None = None,
    drifts: Sequence[Drift] = (),
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` simulated §4 records logged by epsilon-greedy over the cold-start router
    (``drifts``: see :func:`world`)."""
    from ._router import Router
    from .policy import expand_options

    sims = list(backends or DEFAULT_BACKENDS)
    by_name = {b.name: b for b in sims}
    profiles = [b.profile() for b in sims]
    options = expand_options(profiles)
    prompt_list = list(prompts) if prompts else generate_prompts(500, seed)
    greedy = Router.cold_start(exploration=0.0, best_effort=True, seed=seed)
    rng = np.random.default_rng([seed, 1])
    for item in make_workload(sims, prompt_list, n, seed, start, drifts):
        d = greedy.decide(item.request, item.sla, profiles, item.context)
        usable = [i for i, (p, _) in enumerate(options) if item.context.get(p.name).breaker != "open"] \
            or list(range(len(options)))
        g = next((i for i, (p, s) in enumerate(options) if p.name == d.backend and s == d.steps), None)
        if g is None or g not in usable:
            g = usable[0]
        pick = usable[int(rng.integers(len(usable)))] if rng.random() < epsilon else g
        propensity = epsilon / len(usable) + (1 - epsilon) * (pick == g)
        profile, steps = options[pick]
        cand = d.candidates[pick] if d.candidates else None
        decision = {"policy": "simulated-epsilon-greedy", "router_version": greedy.version,
                    "propensity": round(propensity, 6), "explored": pick != g,
                    "predicted": None if cand is None else {
                        "latency_p50_s": cand.latency_p50_s, "latency_p95_s": cand.latency_p95_s,
                        "p_fail": cand.p_fail, "correction_s": cand.correction_s, "cost_usd": cand.cost_usd}}
        yield record(item, profile.name, realise(by_name[profile.name], item, steps), decision, label_rate)
