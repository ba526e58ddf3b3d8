"""One short-batch rule for every remote kind, and paid results that are refused keep what they cost.

Against real local servers, sync and async: a provider that answers ``n = 2`` with one image is
refused (never returned as a success), before any download; the refusal carries the charge the
provider made (``err.cost_usd``) and, for Replicate, the job id, so the engine counts the spend
against ``max_cost_usd`` and ``resume`` can still find the job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pixelroute import SLA, Client, PixelrouteError
from pixelroute._config import load_settings
from pixelroute._errors import ContentRejected, InvalidOutput, ValidationError
from tests.fakeservers import FakeServer, Recorded, Response, body
from tests.fakeservers import providers as fake
from tests.fakeservers.providers import ReplicateJobs
from tests.test_remote_faults import IMAGE_ROUTE, call, make

PRICE = 0.05  # per image, set on every backend so the expected charge is exact


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    for env in ("OPENAI_API_KEY", "STABILITY_API_KEY", "IDEOGRAM_API_KEY", "GEMINI_API_KEY", "REPLICATE_API_TOKEN"):
        monkeypatch.setenv(env, "sk-batch-canary-0000")
    with FakeServer() as srv:
        yield srv


def one_image_whatever_n(kind: str, server: FakeServer) -> tuple[str, str]:
    """Install ``kind``'s routes, answering every request with a single image (a filtered batch)."""
    if kind == "openai":
        route = fake.install_openai(server)
        server.route(*route, lambda req: Response(json={"created": 1, "data": [{"b64_json": fake.B64_PNG}]}))
    elif kind in ("ideogram", "ideogram_v3"):
        route = fake.install_ideogram_v3(server) if kind == "ideogram_v3" else fake.install_ideogram(server)
        server.route(*route, lambda req: fake.ideogram_answer(server.url + "/files/out-0.png", "p", 1))
    elif kind == "imagen":
        route = fake.install_imagen(server)
        server.route(*route, lambda req: Response(json={"predictions": [
            {"mimeType": "image/png", "bytesBase64Encoded": fake.B64_PNG}]}))
    elif kind == "a1111":
        route = fake.install_a1111(server)

        def txt2img(req: Recorded) -> Response:
            return Response(json={"images": [fake.B64_PNG], "parameters": req.json(), "info": json.dumps({"seed": 1})},
                            headers={"X-Process-Time": "2.0"})

        server.route(*route, txt2img)
    else:
        raise AssertionError(kind)
    return route


# (kind, settings, the refusal, what the refused result cost)
SHORT_BATCHES: list[tuple[str, dict[str, Any], type[Exception], float]] = [
    ("openai", {"price": {"per_image": PRICE}}, ContentRejected, 2 * PRICE),
    ("ideogram", {"price": {"per_image": PRICE}}, ContentRejected, 2 * PRICE),
    ("ideogram_v3", {"model": "V_3", "rendering_speed": "TURBO", "price": {"per_image": PRICE}}, ContentRejected,
     2 * PRICE),
    ("imagen", {"price": {"per_image": PRICE}}, ContentRejected, 2 * PRICE),
    # no moderation on a webui: a short batch is an interrupted run; the GPU time was spent (2 s at 0.01/s)
    ("a1111", {"price": {"per_gpu_second": 0.01}}, InvalidOutput, 0.02),
]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("kind", "settings", "expected", "cost"), SHORT_BATCHES, ids=[c[0] for c in SHORT_BATCHES])
def test_a_short_batch_is_refused_and_keeps_its_cost(server: FakeServer, mode: str, kind: str,
                                                     settings: dict[str, Any], expected: type, cost: float) -> None:
    route = one_image_whatever_n(kind, server)
    out, _ = call(make(kind.removesuffix("_v3"), server, **settings), mode, 2.0, n=2)
    assert type(out) is expected and "returned 1 of 2 images" in str(out), repr(out)
    assert out.cost_usd == pytest.approx(cost)
    assert server.count(*route) == 1 and server.count(*IMAGE_ROUTE) == 0  # not retried, nothing downloaded


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_replicate_short_batch_keeps_its_job_id_and_cost(server: FakeServer, mode: str) -> None:
    ReplicateJobs(server, polls_until_done=1, kept_outputs=1)
    out, _ = call(make("replicate", server, poll_interval_s=0.02, price={"per_image": PRICE}), mode, 3.0, n=2)
    assert isinstance(out, ContentRejected) and "returned 1 of 2 images" in str(out)
    assert out.job_id == "job0001" and out.cost_usd == pytest.approx(2 * PRICE)  # type: ignore[attr-defined]
    assert server.count(*IMAGE_ROUTE) == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["stability", "gemini"])
def test_one_image_kinds_refuse_n_above_one_before_sending(server: FakeServer, mode: str, kind: str) -> None:
    route = {"stability": fake.install_stability, "gemini": fake.install_gemini}[kind](server)
    out, _ = call(make(kind, server), mode, 2.0, n=2)
    assert isinstance(out, ValidationError) and out.field == "n" and "but is 2" in str(out)
    assert server.count(*route) == 0


# (kind, fault on the main route, settings, refusal): a 200 the provider charged for, then refused
REFUSED_AFTER_SUCCESS: list[tuple[str, Any, dict[str, Any], type[Exception]]] = [
    ("openai", body(json.dumps({"data": [{"b64_json": "bm90IGFuIGltYWdl"}]}).encode()), {}, InvalidOutput),
    ("stability", body(fake.PNG, "image/png", headers={"finish-reason": "CONTENT_FILTERED"}), {}, ContentRejected),
    ("ideogram", body(json.dumps({"data": [{"url": "", "is_image_safe": False, "seed": 1}]}).encode()), {},
     ContentRejected),
    ("gemini", body(json.dumps(fake.gemini_answer([], finish="IMAGE_SAFETY")).encode()), {}, ContentRejected),
]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("kind", "fault", "settings", "expected"), REFUSED_AFTER_SUCCESS,
                         ids=[c[0] for c in REFUSED_AFTER_SUCCESS])
def test_a_paid_answer_that_is_refused_carries_its_cost(server: FakeServer, mode: str, kind: str, fault: Any,
                                                        settings: dict[str, Any], expected: type) -> None:
    install = {"openai": fake.install_openai, "stability": fake.install_stability,
               "ideogram": fake.install_ideogram, "gemini": fake.install_gemini}[kind]
    route = install(server)
    server.always(*route, fault)
    out, _ = call(make(kind, server, price={"per_image": PRICE}, **settings), mode, 2.0)
    assert type(out) is expected, repr(out)
    assert out.cost_usd == pytest.approx(PRICE)


def test_an_error_answer_costs_nothing(server: FakeServer) -> None:
    route = fake.install_openai(server)
    server.always(*route, body(b'{"error": {"message": "boom"}}', code=500))
    out, _ = call(make("openai", server, price={"per_image": PRICE}, max_retries=0), "sync", 2.0)
    assert getattr(out, "cost_usd", None) is None  # failed requests are not charged


def replicate_client(server: FakeServer, tmp_path: Path) -> Client:
    cfg = load_settings({
        "router": {"exploration": 0.0, "best_effort": True},
        "backends": [{"name": "flux", "kind": "replicate", "base_url": server.url, "price": {"per_image": PRICE},
                      "allowed_download_hosts": ["127.0.0.1"], "allow_private_download_hosts": True,
                      "poll_interval_s": 0.02, "retry_base_s": 0.01}],
    })
    return Client(cfg, store=f"sqlite:///{tmp_path / 't.db'}")


def test_a_billed_job_whose_download_is_refused_is_recorded_and_resumable(server: FakeServer,
                                                                          tmp_path: Path) -> None:
    ReplicateJobs(server, polls_until_done=1)
    server.always(*IMAGE_ROUTE, body(fake.truncated_png(), "image/png"))
    with replicate_client(server, tmp_path) as client:
        with pytest.raises(PixelrouteError) as info:
            client.generate("a fox in snow", sla=SLA(deadline_s=3, max_cost_usd=1.0), backend="flux", n=2)
        assert isinstance(info.value, InvalidOutput) and info.value.job_id == "job0001"  # type: ignore[attr-defined]
        client.recorder.flush()
        [record] = list(client._store.iter_records())
        outcome = record["outcome"]
        assert outcome["ok"] is False and outcome["job_id"] == "job0001"
        assert outcome["cost_usd"] == pytest.approx(2 * PRICE)
        assert client.trace(record["request_id"])["cost_usd"] == pytest.approx(2 * PRICE)  # the call's spend

        server.always(*IMAGE_ROUTE, None)  # the result host recovers: the paid job is collected, not re-run
        result = client.resume(record["request_id"], sla=SLA(deadline_s=3))
        assert len(result.images) == 2 and result.cost_usd == pytest.approx(2 * PRICE)
        assert server.count("POST", "/v1/models/") == 1
