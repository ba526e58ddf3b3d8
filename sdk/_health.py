"""Per-backend health: a circuit breaker and live counters the router sees as features.

Breaker states: ``closed`` (normal), ``open`` (skipped by the router until the cool-down
passes) and ``half_open`` (one probe at a time; success closes, failure re-opens). It opens on
``failures`` consecutive failures or when the failure rate over the last ``window`` attempts
reaches ``failure_rate`` (with at least ``min_samples``). Content rejections and validation
errors say nothing about a backend's health and are not counted.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]

#: as the router clips ``recent_latency_ratio`` (``pixelroute.router.LATENCY_RATIO_RANGE``; not imported: this
#: module stays free of the router)
RATIO_RANGE = (0.25, 8.0)
#: outcomes that are the caller's or the prompt's doing, not the backend's
NEUTRAL_ERRORS = frozenset({"content_rejected", "validation", "cancelled"})


class CircuitBreaker:
    """Thread-safe breaker with an injectable clock."""

    def __init__(
        self,
        *,
        failures: int = 5,
        cooldown_s: float = 30.0,
        window: int = 20,
        failure_rate: float = 0.5,
        min_samples: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.failure_rate = failure_rate
        self.min_samples = min_samples
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: deque[bool] = deque(maxlen=window)
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> State:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a request go to this backend now? In half-open, one probe at a time."""
        with self._lock:
            state = self._state_locked()
            if state == "closed":
                return True
            if state == "half_open" and not self._probing:
                self._probing = True
                return True
            return False

    def record(self, ok: bool, error: str | None = None) -> None:
        if not ok and error in NEUTRAL_ERRORS:
            with self._lock:
                self._probing = False
            return
        with self._lock:
            self._probing = False
            self._recent.append(ok)
            if ok:
                self._consecutive = 0
                self._opened_at = None
                return
            self._consecutive += 1
            failed = self._recent.count(False)
            too_many = self._consecutive >= self.failures
            too_often = len(self._recent) >= self.min_samples and failed / len(self._recent) >= self.failure_rate
            if too_many or too_often or self._opened_at is not None:
                # a failed half-open probe re-opens for a full cool-down
                self._opened_at = self._clock()

    @property
    def recent_failure_rate(self) -> float:
        with self._lock:
            return self._failure_rate_locked()

    def _failure_rate_locked(self) -> float:
        if not self._recent:
            return 0.0
        return self._recent.count(False) / len(self._recent)

    def status(self) -> tuple[State, float]:
        """State and recent failure rate read together (one lock round trip per router decision)."""
        with self._lock:
            return self._state_locked(), self._failure_rate_locked()


class LatencyWindow:
    """Recent latency ratios (observed / expected) of one backend: the router's drift signal.

    Keeps the last ``size`` ratios younger than ``max_age_s``; :meth:`ratio` is their geometric mean,
    or 1.0 (no evidence of drift) with fewer than ``min_samples``. Thread-safe, injectable clock.
    """

    def __init__(self, size: int = 20, max_age_s: float = 300.0, min_samples: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self.min_samples = min_samples
        self._clock = clock
        self._lock = threading.Lock()
        self._items: deque[tuple[float, float]] = deque(maxlen=size)

    def observe(self, ratio: float) -> None:
        if not (ratio > 0 and math.isfinite(ratio)):
            return
        lo, hi = RATIO_RANGE
        with self._lock:
            self._items.append((self._clock(), math.log(min(max(ratio, lo), hi))))

    def ratio(self) -> float:
        with self._lock:
            if len(self._items) < self.min_samples:
                return 1.0
            horizon = self._clock() - self.max_age_s
            while self._items and self._items[0][0] < horizon:
                self._items.popleft()
            if len(self._items) < self.min_samples:
                return 1.0
            return math.exp(sum(v for _, v in self._items) / len(self._items))


class BackendHealth:
    """Live counters for one backend: in-flight requests, its breaker and its recent latency ratio."""

    def __init__(self, breaker: CircuitBreaker, capacity: int = 1, latency: LatencyWindow | None = None) -> None:
        self.breaker = breaker
        #: requests the backend serves at once (``max_concurrency``); the rest wait in its queue
        self.capacity = capacity
        self.latency = latency or LatencyWindow(clock=breaker._clock)
        self._lock = threading.Lock()
        self.in_flight = 0

    def observe_latency(self, ratio: float) -> None:
        """One attempt's observed latency over what the cold-start prior expected for it."""
        self.latency.observe(ratio)

    def enter(self) -> int:
        with self._lock:
            self.in_flight += 1
            return self.in_flight

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def snapshot(self, loaded: bool = True) -> dict[str, object]:
        """The live state the router sees and telemetry's ``context`` records (same keys)."""
        in_flight = self.in_flight
        state, failure_rate = self.breaker.status()
        return {
            "in_flight": in_flight,
            "queue_depth": max(0, in_flight - self.capacity),
            "breaker": state,
            "recent_failure_rate": round(failure_rate, 4),
            "loaded": loaded,
            "recent_latency_ratio": round(self.latency.ratio(), 4),
        }
