"""Remote backends under the Client: one telemetry record per attempt, fallbacks inside one deadline,
and the API key nowhere in exceptions, logs or telemetry (the canary test)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pixelroute import SLA, AsyncClient, Client
from pixelroute._config import load_settings
from pixelroute._errors import PixelrouteError
from pixelroute.backends import create_backend, settings_model
from tests.fakeservers import FakeServer, Recorded, Response, body, reset_mid_body, slow_drip, status
from tests.fakeservers import providers as fake

CANARY = "sk-CANARY-7f3a9c1e5b2d4680"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    for env in ("OPENAI_API_KEY", "STABILITY_API_KEY", "IDEOGRAM_API_KEY", "GEMINI_API_KEY", "REPLICATE_API_TOKEN"):
        monkeypatch.setenv(env, CANARY)
    with FakeServer() as srv:
        yield srv


def remote(kind: str, server: FakeServer, price: float, **settings: Any) -> Any:
    base = server.url + ("/v1" if kind == "openai" else "")
    model = settings_model(kind)(name=kind, kind=kind, base_url=base, price={"per_image": price},
                                 typical_latency_s=1.0, allowed_download_hosts=["127.0.0.1"],
                                 allow_private_download_hosts=True, retry_base_s=0.01, **settings)
    return create_backend(model)


def client_config() -> Any:
    return load_settings({"router": {"exploration": 0.0, "seed": 1}})


def backends(server: FakeServer) -> list[Any]:
    fake.install_openai(server)
    fake.install_stability(server)
    return [remote("openai", server, 0.001), remote("stability", server, 0.01)]


def test_fallback_after_server_errors_writes_one_record_per_attempt(server: FakeServer, tmp_path: Path) -> None:
    bes = backends(server)
    server.always("POST", "/v1/images/generations", status(500))
    with Client(client_config(), backends=bes, store=f"sqlite:///{tmp_path / 't.db'}") as client:
        r = client.generate("a lighthouse", sla=SLA(deadline_s=5), width=1024, height=1024)
        assert r.backend == "stability"
        trace = client.trace(r.request_id)
    assert [a["backend"] for a in trace["attempts"]] == ["openai", "stability"]
    assert [a["error"] for a in trace["attempts"]] == ["server_error", None]
    assert server.count("POST", "/v1/images/generations") == 3  # retries live inside one attempt
    assert r.cost_usd == pytest.approx(0.01)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failed_attempt_records_its_retries(server: FakeServer, tmp_path: Path, mode: str) -> None:
    bes = backends(server)
    server.always("POST", "/v1/images/generations", status(500))
    server.always("POST", "/v2beta/stable-image/generate/sd3", status(503))
    store = f"sqlite:///{tmp_path / 't.db'}"

    def sync() -> tuple[PixelrouteError, list[dict[str, Any]]]:
        with Client(client_config(), backends=bes, store=store) as client:
            with pytest.raises(PixelrouteError) as info:
                client.generate("a lighthouse", sla=SLA(deadline_s=5), width=1024, height=1024)
            client.recorder.flush()
            return info.value, list(client._store.iter_records())

    async def run_async() -> tuple[PixelrouteError, list[dict[str, Any]]]:
        async with AsyncClient(client_config(), backends=bes, store=store) as client:
            with pytest.raises(PixelrouteError) as info:
                await client.generate("a lighthouse", sla=SLA(deadline_s=5), width=1024, height=1024)
            client.recorder.flush()
            return info.value, list(client._store.iter_records())

    err, records = sync() if mode == "sync" else asyncio.run(run_async())
    assert err.retries == 2  # type: ignore[attr-defined]  # the last attempt's count, on the raised error
    assert [(r["backend"], r["outcome"]["error"], r["outcome"]["retries"])
            for r in sorted(records, key=lambda r: r["attempt"])] == [("openai", "server_error", 2),
                                                                     ("stability", "server_error", 2)]


def test_content_rejection_is_not_retried_and_falls_back(server: FakeServer, tmp_path: Path) -> None:
    bes = backends(server)
    server.always("POST", "/v1/images/generations",
                  status(400, {"error": {"code": "moderation_blocked", "message": "rejected by the safety system"}}))

    async def go() -> tuple[Any, dict[str, Any]]:
        async with AsyncClient(client_config(), backends=bes, store=f"sqlite:///{tmp_path / 't.db'}") as client:
            r = await client.generate("a lighthouse", sla=SLA(deadline_s=5), width=1024, height=1024)
            return r, client.trace(r.request_id)

    r, trace = asyncio.run(go())
    assert r.backend == "stability"
    assert [a["error"] for a in trace["attempts"]] == ["content_rejected", None]
    assert server.count("POST", "/v1/images/generations") == 1


def test_every_attempt_recorded_when_all_fail_by_the_deadline(server: FakeServer, tmp_path: Path) -> None:
    bes = backends(server)
    server.always("POST", "/v1/images/generations", status(503))
    server.always("POST", "/v2beta/stable-image/generate/sd3", slow_drip(0.2, chunk=2))
    with Client(client_config(), backends=bes, store=f"sqlite:///{tmp_path / 't.db'}") as client:
        with pytest.raises(PixelrouteError):
            client.generate("a lighthouse", sla=SLA(deadline_s=3.0), width=1024, height=1024)
        client.recorder.flush()
        records = list(client._store.iter_records())
    assert len(records) == 2 and {r["backend"] for r in records} == {"openai", "stability"}
    assert [r["outcome"]["error"] for r in sorted(records, key=lambda r: r["attempt"])] == ["server_error", "timeout"]


# -- the canary: the key appears nowhere ----------------------------------------------------------


def echo_key(code: int) -> Any:
    """A misbehaving upstream (or proxy) that echoes the request's credentials in its error body."""

    def handler(req: Recorded) -> Response:
        creds = req.headers.get("authorization") or req.headers.get("api-key") or req.headers.get("x-goog-api-key")
        text = f"bad request; you sent Authorization: {creds} and key={CANARY}"
        return Response(code, json={"error": {"message": text, "code": "x"}, "detail": text, "errors": [text]})

    return handler


CANARY_FAULTS = [
    ("openai", 400), ("openai", 401), ("openai", 429), ("openai", 500), ("openai", 402),
    ("stability", 400), ("stability", 403), ("stability", 503), ("ideogram", 401), ("ideogram", 422),
    ("imagen", 400), ("imagen", 429), ("gemini", 400), ("gemini", 429), ("gemini", 503), ("a1111", 500),
    ("replicate", 422),
]
PATHS = {"openai": "/v1/images/generations", "stability": "/v2beta/stable-image/generate/sd3",
         "ideogram": "/generate", "imagen": "/v1beta/models/imagen-4.0-generate-001:predict",
         "gemini": "/v1beta/models/gemini-2.5-flash-image:generateContent",
         "a1111": "/sdapi/v1/txt2img", "replicate": "/v1/models/black-forest-labs/flux-schnell/predictions"}


@pytest.mark.parametrize(("kind", "code"), CANARY_FAULTS, ids=[f"{k}-{c}" for k, c in CANARY_FAULTS])
def test_canary_key_absent_from_errors_logs_and_telemetry(server: FakeServer, tmp_path: Path, kind: str,
                                                          code: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.route("POST", PATHS[kind], echo_key(code))
    extra = {"api_key_env": "OPENAI_API_KEY"} if kind == "a1111" else {}
    be = remote(kind, server, 0.01, **extra)
    with Client(client_config(), backends=[be], store=f"sqlite:///{tmp_path / 't.db'}") as client:
        with pytest.raises(PixelrouteError) as info:
            client.generate("a lighthouse", sla=SLA(deadline_s=3), width=1024, height=1024)
        client.recorder.flush()
        records = list(client._store.iter_records())
    sent = base64.b64encode(CANARY.encode()).decode() if kind == "a1111" else CANARY  # Basic auth encodes it
    assert server.requests and any(sent in json.dumps(r.headers) for r in server.requests)  # it was sent
    assert_no_canary(info.value)
    assert records and CANARY not in json.dumps(records)
    assert all(CANARY not in rec.getMessage() and sent not in rec.getMessage() for rec in caplog.records)
    assert sent not in json.dumps(records)


def gemini_echo(shape: str) -> Any:
    """A 200 ``generateContent`` refusal that echoes the key in the provider text we quote."""

    def handler(req: Recorded) -> Response:
        text = f"cannot draw that; you sent {req.headers.get('x-goog-api-key')}"
        if shape == "prompt_feedback":
            return Response(json={"promptFeedback": {"blockReason": "SAFETY", "blockReasonMessage": text}})
        if shape == "finish_message":
            return Response(json={"candidates": [{"finishReason": "IMAGE_SAFETY", "finishMessage": text}]})
        return Response(json=fake.gemini_answer([{"text": text}]))

    return handler


@pytest.mark.parametrize("shape", ["prompt_feedback", "finish_message", "text_only"])
def test_gemini_refusal_falls_back_with_one_record_per_attempt_and_no_canary(
        server: FakeServer, tmp_path: Path, shape: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = "/v1beta/models/gemini-2.5-flash-image:generateContent"
    server.route("POST", path, gemini_echo(shape))
    fake.install_stability(server)
    # gemini is the clear first choice (far cheaper at the same latency), so its refusal is what falls back
    bes = [remote("gemini", server, 0.001), remote("stability", server, 0.5)]
    with Client(client_config(), backends=bes, store=f"sqlite:///{tmp_path / 't.db'}") as client:
        r = client.generate("a lighthouse", sla=SLA(deadline_s=5), width=1024, height=1024)
        trace = client.trace(r.request_id)
        client.recorder.flush()
        records = list(client._store.iter_records())
    assert r.backend == "stability"
    assert [(a["backend"], a["error"]) for a in trace["attempts"]] == [("gemini", "content_rejected"),
                                                                       ("stability", None)]
    assert server.count("POST", path) == 1  # a refusal is never retried
    assert len(records) == 2 and CANARY not in json.dumps(records) and CANARY not in json.dumps(trace)
    assert all(CANARY not in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize("fault", [reset_mid_body(5), slow_drip(0.05, chunk=4),
                                   body(b"{not json", code=200), body(b"x" * 10, "image/png")])
def test_canary_on_transport_faults(server: FakeServer, fault: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    route = fake.install_openai(server)
    server.always(*route, fault)
    from pixelroute._deadline import Deadline
    from pixelroute._types import GenerateRequest

    be = remote("openai", server, 0.01)
    with pytest.raises(PixelrouteError) as info:
        be.generate(GenerateRequest(prompt="x"), Deadline(0.5))
    be.close()
    assert_no_canary(info.value)
    assert all(CANARY not in rec.getMessage() for rec in caplog.records)


def assert_no_canary(exc: BaseException | None) -> None:
    seen = 0
    while exc is not None and seen < 10:
        encoded = base64.b64encode(CANARY.encode()).decode()
        assert CANARY not in str(exc) and CANARY not in repr(exc) and encoded not in str(exc), repr(exc)
        assert all(CANARY not in str(a) for a in exc.args)
        assert all(CANARY not in note for note in getattr(exc, "__notes__", []))
        exc = exc.__cause__ or exc.__context__
        seen += 1
