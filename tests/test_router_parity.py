"""One serving context, the same in training and in serving: the feature rows a decision computes
live equal, column by column, the rows training builds from the telemetry record of that attempt;
and ``RouteContext.from_dict`` is the one parser of both context shapes."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pixelroute import SLA, Client
from pixelroute.backends.base import MockBackend
from pixelroute.router import BackendProfile, BackendState, RouteContext, RouteRequest
from pixelroute.router.features import FEATURE_NAMES, featurize
from pixelroute.router.training import build_dataset

CODE = FEATURE_NAMES.index("backend_code")


def _records(store: Path) -> list[dict[str, Any]]:
    from pixelroute.telemetry import open_store

    with open_store(f"sqlite:///{store}") as s:
        return sorted(s.iter_records(), key=lambda r: (r["ts"], r["attempt"]))


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[RouteRequest, list[Any], RouteContext, np.ndarray]]:
    """Every feature matrix the cold-start predictor computes while deciding."""
    import pixelroute.router.coldstart as coldstart

    seen: list[tuple[RouteRequest, list[Any], RouteContext, np.ndarray]] = []
    real = coldstart.featurize

    def spy(request: RouteRequest, options: Any, context: RouteContext, backend_codes: Any = None) -> Any:
        rows, price = real(request, options, context, backend_codes)
        seen.append((request, list(options), context, rows.copy()))
        return rows, price

    monkeypatch.setattr(coldstart, "featurize", spy)
    return seen


def test_rows_built_live_equal_rows_trained_from_the_sdk_records(tmp_path: Path, captured: list[Any]) -> None:
    store = tmp_path / "t.db"
    local = MockBackend("gpu", local=True, delay_s=0.02)
    remote = MockBackend("api", delay_s=0.01)
    config = {"router": {"exploration": 0.0}, "telemetry": {"store": f"sqlite:///{store}"}}
    client = Client(config, backends=[local, remote])
    knobs: list[dict[str, Any]] = [
        {}, {"width": 128, "height": 64}, {"n": 2}, {"seed": 7}, {"guidance": 3.5},
        {"negative_prompt": "blurry"}, {"steps": 3}, {"width": 96, "height": 96, "n": 3, "seed": 1},
    ]
    prompts = ["a cat", 'a sign that says "OPEN"', "three glass bottles next to a mirror", "a crowd of people"]
    for i in range(24):
        client.generate(prompts[i % 4], sla=SLA(deadline_s=30), **knobs[i % len(knobs)])
    # concurrent calls: the second and third see the first in flight (a non-idle context)
    threads = [threading.Thread(target=client.generate, args=(p,), kwargs={"sla": SLA(deadline_s=30)})
               for p in prompts[:3]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()

    records = _records(store)
    assert len(records) == len(captured) == 27
    assert any(r["context"]["in_flight"] > 0 for r in records), "the concurrent calls must show load"
    assert any(r["context"]["recent_latency_ratio"] != 1.0 for r in records), "the latency window must fill"
    profiles = [BackendProfile.from_dict(b.describe()) for b in (local, remote)]
    by_id = {}
    for request, options, context, rows in captured:
        by_id.setdefault(request.prompt, []).append((request, options, context, rows))
    data = build_dataset(records, profiles)
    assert len(data) == len(records) and data.skipped == 0
    # match each record to the decision that produced it: same prompt, chosen backend's row
    used: set[int] = set()
    for k, rec in enumerate(records):
        names = list(data.backend)
        assert names[k] == rec["backend"]
        live = None
        for j, (request, options, context, rows) in enumerate(captured):
            if j in used or request.prompt != rec["prompt"] or request.n != rec["params"]["n"]:
                continue
            if request.seed != rec["params"]["seed"] or request.negative_prompt != rec["negative_prompt"]:
                continue
            if context.get(rec["backend"]).in_flight != rec["context"]["in_flight"]:
                continue
            idx = next(i for i, (p, _) in enumerate(options) if p.name == rec["backend"])
            live = rows[idx]
            used.add(j)
            break
        assert live is not None, rec
        trained = data.x[k]
        for c, name in enumerate(FEATURE_NAMES):
            if c == CODE:
                continue  # cold start serves with code -1; a trained model passes its own codes
            assert trained[c] == pytest.approx(live[c], rel=1e-12, abs=1e-12), (name, rec["params"])


HAND_WRITTEN = [
    {"request_id": "r1", "attempt": 0, "ts": "2026-11-25T19:00:00.123Z", "backend": "gpu", "prompt": "a red fox",
     "negative_prompt": None, "params": {"width": 1024, "height": 1024, "steps": 4, "guidance": 0.0, "n": 1,
                                         "seed": 7, "scheduler": None},
     "sla": {"deadline_s": 8.0, "max_cost_usd": 0.05}, "context": {"in_flight": 2},
     "decision": {"propensity": 0.97}, "outcome": {"ok": True, "error": None, "latency_s": 1.23}, "correction": None},
    {"request_id": "r2", "attempt": 0, "ts": "2026-11-25T19:00:01Z", "backend": "api", "prompt": "two cats",
     "params": {"n": 2}, "context": {"in_flight": 4, "loaded": False, "recent_latency_ratio": 2.0,
                                     "backends": {"gpu": {"in_flight": 9}}},
     "outcome": {"ok": False, "error": "server_error", "latency_s": 0.5}},
    {"request_id": "r3", "attempt": 1, "ts": "2026-11-25T19:00:02Z", "backend": "gpu", "prompt": "a sign",
     "negative_prompt": "text", "params": {"width": 512, "height": 768, "seed": None},
     "context": {"backends": {"gpu": {"queue_depth": 3, "breaker": "half_open", "recent_failure_rate": 0.2,
                                      "loaded": False, "recent_latency_ratio": 0.5}, "api": {"in_flight": 1}}},
     "outcome": {"ok": True, "latency_s": 12.0}, "correction": {"seconds": 30.0}},
]


def test_hand_written_records_featurize_as_serving_does() -> None:
    profiles = [BackendProfile("gpu", kind="diffusers", local=True, default_steps=4, price={"per_gpu_second": 0.001}),
                BackendProfile("api", kind="openai", price={"per_image": 0.04})]
    data = build_dataset(HAND_WRITTEN, profiles)
    assert len(data) == 3 and data.skipped == 0
    codes = {name: i for i, name in enumerate(data.backends)}
    by_name = {p.name: p for p in profiles}
    for k, rec in enumerate(HAND_WRITTEN):
        req = RouteRequest.from_record(rec)
        steps = rec["params"].get("steps")
        rows, _ = featurize(req, [(by_name[rec["backend"]], steps)], RouteContext.from_dict(rec["context"]), codes)
        np.testing.assert_array_equal(data.x[k], rows[0], err_msg=json.dumps(rec))
    cold = FEATURE_NAMES.index("cold")
    assert data.x[0, FEATURE_NAMES.index("in_flight")] == 2
    assert data.x[1, cold] == 0, "a remote backend has nothing to load"
    assert data.x[2, cold] == 1 and data.x[2, FEATURE_NAMES.index("queue_depth")] == 3


def test_flat_context_is_every_backends_state_unless_a_backend_has_its_own() -> None:
    ctx = RouteContext.from_dict({"in_flight": 5, "breaker": "half_open",
                                  "backends": {"b": {"in_flight": 1}, "c": {}}})
    assert ctx.get("a") == BackendState(in_flight=5, breaker="half_open")
    assert ctx.get("b") == BackendState(in_flight=1, breaker="half_open")
    assert ctx.get("c") == BackendState(in_flight=5, breaker="half_open")
    assert RouteContext.from_dict(None).get("x") == BackendState()
    assert RouteContext.from_dict({}).empty


@pytest.mark.parametrize(("context", "field"), [
    ({"in_flight": -1}, "context.in_flight"),
    ({"in_flight": "2"}, "context.in_flight"),
    ({"in_flight": 1e400}, "context.in_flight"),
    ({"breaker": "ajar"}, "context.breaker"),
    ({"recent_failure_rate": 2}, "context.recent_failure_rate"),
    ({"loaded": "yes"}, "context.loaded"),
    ({"recent_latency_ratio": 0}, "context.recent_latency_ratio"),
    ({"backends": {"x": {"queue_depth": 1.5}}}, "context.backends.x.queue_depth"),
    ({"backends": []}, "context.backends"),
    ([1], "context"),
])
def test_bad_context_values_name_their_key(context: Any, field: str) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        RouteContext.from_dict(context)


def test_edit_rows_built_live_equal_rows_trained_from_their_records(tmp_path: Path, captured: list[Any]) -> None:
    """The operation columns (edit, strength, masked) of an edit are read back from its record as served."""
    from PIL import Image

    store = tmp_path / "e.db"
    local = MockBackend("gpu", local=True, delay_s=0.01)
    remote = MockBackend("api", delay_s=0.01)
    client = Client({"router": {"exploration": 0.0}, "telemetry": {"store": f"sqlite:///{store}"}},
                    backends=[local, remote])
    photo = Image.new("RGB", (96, 64), (10, 20, 30))
    mask = Image.new("L", (96, 64), 255)
    knobs: list[dict[str, Any]] = [{}, {"mask": mask}, {"strength": 0.3}, {"mask": mask, "strength": 0.9},
                                   {"width": 128, "height": 128}, {"n": 2, "seed": 4}]
    for i, k in enumerate(knobs):
        client.edit(photo, f"edit number {i}", sla=SLA(deadline_s=30), **k)
    client.generate("a plain generation", sla=SLA(deadline_s=30))
    client.close()
    records = _records(store)
    assert [r["operation"] for r in records] == ["edit"] * len(knobs) + ["generate"]
    profiles = [BackendProfile.from_dict(b.describe()) for b in (local, remote)]
    data = build_dataset(records, profiles)
    assert len(data) == len(records) == len(captured) and data.skipped == 0
    for k, (rec, (request, options, _context, rows)) in enumerate(zip(records, captured, strict=True)):
        assert request.prompt == rec["prompt"] and request.operation == rec["operation"]
        live = rows[next(i for i, (p, _) in enumerate(options) if p.name == rec["backend"])]
        for c, name in enumerate(FEATURE_NAMES):
            if c != CODE:
                assert data.x[k][c] == pytest.approx(live[c], rel=1e-12, abs=1e-12), (name, rec["params"])
    edit_col = FEATURE_NAMES.index("edit")
    assert data.x[:, edit_col].tolist() == [1.0] * len(knobs) + [0.0]
    assert data.x[1, FEATURE_NAMES.index("edit_strength")] == 1.0  # masked, strength left to the backend
    assert data.x[2, FEATURE_NAMES.index("edit_strength")] == 0.3
