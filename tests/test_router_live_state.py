"""The live state a decision sees: flat and per-backend contexts in ``pixelroute route``, cold
pipelines, the recent-latency window, and ``router.on_infeasible`` in the client and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pixelroute import SLA, Client, NoFeasibleBackend
from pixelroute._health import LatencyWindow
from pixelroute.backends.base import MockBackend, Price
from pixelroute.cli import main

CONFIG = '''[router]
exploration = 0.0
{extra}
[[backends]]
name = "gpu"
kind = "mock"
local = true
typical_latency_s = 1.0
typical_load_s = 15.0

[[backends]]
name = "api"
kind = "mock"
typical_latency_s = 3.0
price = {{ per_image = 0.02 }}
'''


def _route(tmp_path: Path, lines: list[dict[str, Any]], extra: str = "") -> list[dict[str, Any]]:
    config = tmp_path / "pixelroute.toml"
    config.write_text(CONFIG.format(extra=extra))
    requests = tmp_path / "req.jsonl"
    requests.write_text("".join(json.dumps({"request_id": f"r{i}", "prompt": "a cat", **ln}) + "\n"
                                for i, ln in enumerate(lines)))
    out = tmp_path / "out.jsonl"
    assert main(["route", "--config", str(config), "--requests", str(requests), "--out", str(out)]) == 0
    return [json.loads(ln) for ln in out.read_text().splitlines()]


def test_route_reads_flat_and_per_backend_contexts(tmp_path: Path) -> None:
    sla = {"deadline_s": 4.0}
    out = _route(tmp_path, [
        {"sla": sla, "context": {}},
        # flat: every backend has 5 in flight; the local GPU runs them first (6 s), the API barely slows
        {"sla": sla, "context": {"in_flight": 5}},
        {"sla": sla, "context": {"backends": {"gpu": {"in_flight": 5}}}},
        # per-backend entries override the flat state
        {"sla": sla, "context": {"in_flight": 5, "backends": {"gpu": {"in_flight": 0}}}},
        # a cold local pipeline pays its load time
        {"sla": sla, "context": {"loaded": False}},
        # the GPU has been running 5x slower than expected lately
        {"sla": sla, "context": {"backends": {"gpu": {"recent_latency_ratio": 5.0}}}},
    ])
    assert [o["backend"] for o in out] == ["gpu", "api", "api", "gpu", "api", "api"]
    gpu = {i: next(c for c in o["candidates"] if c["backend"] == "gpu") for i, o in enumerate(out)}
    assert gpu[1]["latency_p50_s"] == pytest.approx(6.0 * gpu[0]["latency_p50_s"])
    assert gpu[4]["loaded"] is False and gpu[4]["latency_p50_s"] == pytest.approx(15.0 + gpu[0]["latency_p50_s"])
    assert all(c["loaded"] for c in out[4]["candidates"] if c["backend"] == "api")
    assert gpu[5]["latency_p50_s"] == pytest.approx(5.0 * gpu[0]["latency_p50_s"])


def test_route_on_infeasible_best_effort_by_default_and_refuse_when_asked(tmp_path: Path) -> None:
    tight = [{"sla": {"deadline_s": 0.2}}, {"sla": {"deadline_s": 10, "max_cost_usd": 1e-9},
                                            "context": {"backends": {"gpu": {"breaker": "open"}}}}]
    best = _route(tmp_path, tight)
    assert best[0]["backend"] == "gpu" and best[0]["predicted_to_miss"] is True
    assert best[1]["backend"] is None, "nothing affordable with a closed breaker: refused even best effort"
    refused = _route(tmp_path, tight, extra='on_infeasible = "refuse"')
    assert refused[0]["backend"] is None and refused[0]["predicted_to_miss"] is False
    assert all(c["why_not"] for c in refused[0]["candidates"])


@pytest.mark.parametrize(("context", "field"), [({"in_flight": -2}, "context.in_flight"),
                                                ({"backends": {"gpu": {"loaded": 1}}}, "context.backends.gpu.loaded")])
def test_route_refuses_a_bad_context_naming_the_line_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             context: dict[str, Any], field: str) -> None:
    config = tmp_path / "pixelroute.toml"
    config.write_text(CONFIG.format(extra=""))
    requests = tmp_path / "req.jsonl"
    requests.write_text(json.dumps({"prompt": "a cat"}) + "\n" + json.dumps({"prompt": "x", "context": context}) + "\n")
    code = main(["route", "--config", str(config), "--requests", str(requests), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code != 0 and "line 2" in err and f"`{field}`" in err
    assert not (tmp_path / "o.jsonl").exists(), "no half-written output"


class ColdMock(MockBackend):
    """A local mock whose pipeline is not in memory until its first call."""

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.warm = False

    @property
    def loaded(self) -> bool:
        return self.warm

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "typical_load_s": 15.0}

    def generate(self, request: Any, deadline: Any) -> Any:
        self.warm = True
        return super().generate(request, deadline)


def test_a_cold_pipeline_loses_to_a_warm_remote_under_a_short_deadline(tmp_path: Path) -> None:
    local, remote = ColdMock("gpu", local=True), MockBackend("api", price=Price(per_image=0.5))
    cfg = {"router": {"exploration": 0.0}, "telemetry": {"store": f"sqlite:///{tmp_path / 't.db'}"}}
    with Client(cfg, backends=[local, remote]) as c:
        first = c.generate("a cat", sla=SLA(deadline_s=5))
        cands = {x["backend"]: x for x in first.trace["decision"]["candidates"]}
        assert first.backend == "api" and cands["gpu"]["loaded"] is False and cands["api"]["loaded"] is True
        assert "P(on time)" in cands["gpu"]["why_not"]
        # with no deadline the cheaper local pipeline is worth loading; once loaded it is warm
        assert c.generate("a cat").backend == "gpu"
        again = c.generate("a cat", sla=SLA(deadline_s=5))
        assert again.backend == "gpu"
        assert {x["backend"]: x for x in again.trace["decision"]["candidates"]}["gpu"]["loaded"] is True
        rid = first.request_id
    with Client(cfg, backends=[MockBackend("api")]) as c:
        stored = c.trace(rid)
    assert stored["attempts"][0]["backend"] == "api"


def _single(on_infeasible: str | None, tmp_path: Path) -> Client:
    router: dict[str, Any] = {"exploration": 0.0}
    if on_infeasible:
        router["on_infeasible"] = on_infeasible
    slow = MockBackend("slow", price=None)
    slow.describe = lambda: {**MockBackend.describe(slow), "typical_latency_s": 10.0}  # type: ignore[method-assign]
    return Client({"router": router, "telemetry": {"store": f"sqlite:///{tmp_path / 't.db'}"}}, backends=[slow])


def test_one_backend_predicted_late_is_tried_by_default_and_refused_when_asked(tmp_path: Path) -> None:
    with _single(None, tmp_path) as c:
        r = c.generate("a cat", sla=SLA(deadline_s=2))
        assert r.backend == "slow" and r.trace["decision"]["predicted_to_miss"] is True
        assert "best effort" in r.trace["decision"]["reason"]
    with _single("refuse", tmp_path) as c:
        with pytest.raises(NoFeasibleBackend) as info:
            c.generate("a cat", sla=SLA(deadline_s=2))
        assert "slow" in str(info.value)
        # pinned: always tried, and the trace says it was predicted to miss
        r = c.generate("a cat", sla=SLA(deadline_s=2), backend="slow")
        assert r.backend == "slow" and r.trace["decision"]["predicted_to_miss"] is True


def test_legacy_best_effort_maps_to_on_infeasible_and_contradictions_are_errors() -> None:
    from pixelroute import ConfigError
    from pixelroute._config import load_settings

    assert load_settings({"router": {"best_effort": False}}).router.on_infeasible == "refuse"
    assert load_settings({"router": {"best_effort": True}}).router.on_infeasible == "best_effort"
    assert load_settings({}).router.on_infeasible == "best_effort"
    with pytest.raises(ConfigError, match="on_infeasible"):
        load_settings({"router": {"best_effort": False, "on_infeasible": "best_effort"}})
    with pytest.raises(ConfigError, match="on_infeasible"):
        load_settings({"router": {"on_infeasible": "maybe"}})


def test_latency_window_is_a_geometric_mean_of_recent_ratios() -> None:
    now = [0.0]
    w = LatencyWindow(size=4, max_age_s=60, min_samples=3, clock=lambda: now[0])
    w.observe(2.0)
    w.observe(8.0)
    assert w.ratio() == 1.0, "too few samples says nothing"
    w.observe(4.0)
    assert w.ratio() == pytest.approx(4.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        w.observe(bad)
    assert w.ratio() == pytest.approx(4.0)
    w.observe(1e9)  # clipped: one stuck request does not make a backend look a billion times slower
    assert w.ratio() == pytest.approx((2 * 8 * 4 * 8.0) ** 0.25)
    now[0] = 61.0
    assert w.ratio() == 1.0, "old observations age out"
