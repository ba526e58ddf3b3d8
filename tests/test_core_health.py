"""The circuit breaker opens, cools down, probes, and ignores the caller's own errors."""

from __future__ import annotations

from pixelroute._health import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_then_half_open_probe() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failures=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        b.record(False, "server_error")
    assert b.state == "closed"
    b.record(False, "server_error")
    assert b.state == "open" and not b.allow()
    clock.now = 10.0
    assert b.state == "half_open"
    assert b.allow() is True  # one probe
    assert b.allow() is False  # not two at once
    b.record(False, "server_error")
    assert b.state == "open"  # failed probe re-opens for a full cool-down
    clock.now = 20.0
    assert b.allow()
    b.record(True)
    assert b.state == "closed"


def test_content_rejections_do_not_count() -> None:
    b = CircuitBreaker(failures=2, clock=FakeClock())
    for _ in range(5):
        b.record(False, "content_rejected")
    assert b.state == "closed"
    assert b.recent_failure_rate == 0.0


def test_failure_rate_over_window() -> None:
    b = CircuitBreaker(failures=100, window=10, failure_rate=0.5, min_samples=10, clock=FakeClock())
    for i in range(10):
        b.record(i % 2 == 0, "server_error")
    assert b.state == "open"
