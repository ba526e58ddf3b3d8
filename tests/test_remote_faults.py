"""Every remote fault against real local servers: the right error class, no retry of content
rejections, and the call over by ``deadline + 100 ms`` at the latest, sync and async."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pixelroute._deadline import Deadline
from pixelroute._errors import (
    BackendError,
    ContentRejected,
    DeadlineExceeded,
    InvalidOutput,
    PixelrouteError,
    QuotaExceeded,
    RateLimited,
    ServerError,
)
from pixelroute._types import GenerateRequest
from pixelroute.backends import create_backend, settings_model
from pixelroute.backends._http import RemoteBackend
from tests.fakeservers import (
    FakeServer,
    Fault,
    body,
    delay,
    random_delay,
    reset,
    reset_mid_body,
    slow_drip,
    slow_headers,
    status,
)
from tests.fakeservers import providers as fake

SLACK_S = 0.1  # the contract: a call ends by deadline + 100 ms


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    for env in ("OPENAI_API_KEY", "STABILITY_API_KEY", "IDEOGRAM_API_KEY", "GEMINI_API_KEY", "REPLICATE_API_TOKEN"):
        monkeypatch.setenv(env, "sk-fault-canary-0000")
    with FakeServer() as srv:
        yield srv


def make(kind: str, server: FakeServer, **settings: Any) -> RemoteBackend:
    base = server.url + ("/v1" if kind == "openai" else "")
    options: dict[str, Any] = dict(base_url=base, allowed_download_hosts=["127.0.0.1"],
                                   allow_private_download_hosts=True, retry_base_s=0.01)
    options.update(settings)
    be = create_backend(settings_model(kind)(name=f"{kind}-fake", kind=kind, **options))
    assert isinstance(be, RemoteBackend)
    return be


def call(be: RemoteBackend, mode: str, deadline_s: float, **knobs: Any) -> tuple[Any, float]:
    """Run one generate in ``mode``; return the output or the error, and the seconds it took."""
    request = GenerateRequest(prompt="a lighthouse", **knobs)

    async def run_async() -> Any:
        try:
            return await be.agenerate(request, Deadline(deadline_s))
        finally:
            await be.aclose()

    if mode == "aiohttp":  # the optional aiohttp transport behind the same httpx API
        pytest.importorskip("httpx_aiohttp")
        be = create_backend(be.settings.model_copy(update={"async_transport": "aiohttp"}))  # type: ignore[assignment]
    elif mode == "async":  # httpx's own async transport, whatever `auto` would pick
        be = create_backend(be.settings.model_copy(update={"async_transport": "httpx"}))  # type: ignore[assignment]
    start = time.monotonic()
    try:
        out: Any = be.generate(request, Deadline(deadline_s)) if mode == "sync" else asyncio.run(run_async())
    except PixelrouteError as exc:
        out = exc
    finally:
        be.close()
    return out, time.monotonic() - start


def b64_body(data: bytes) -> Fault:
    return body(json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(data).decode()}]}).encode())


def openai_error(code: int, err_code: str, **headers: str) -> Fault:
    return status(code, {"error": {"message": f"refused: {err_code}", "type": "x", "code": err_code}}, headers)


OK = "ok"
# (id, faults for the next requests, fault for every request, expected, requests made, deadline)
OPENAI_CASES: list[tuple[str, list[Fault], Fault | None, Any, int | None, float]] = [
    ("fixed_delay", [delay(0.1)], None, OK, 1, 2.0),
    ("random_delay", [random_delay(0.0, 0.1), random_delay(0.0, 0.1)], None, OK, 1, 2.0),
    ("delay_past_deadline", [], delay(5.0), DeadlineExceeded, 1, 0.4),
    ("429_retry_after_fits", [status(429, headers={"Retry-After": "0.05"})], None, OK, 2, 2.0),
    ("429_retry_after_ms", [status(429, headers={"retry-after-ms": "20"})], None, OK, 2, 2.0),
    ("429_retry_after_too_long", [], status(429, headers={"Retry-After": "30"}), RateLimited, 1, 2.0),
    ("429_without_retry_after", [status(429)], None, OK, 2, 2.0),
    ("429_always", [], status(429), RateLimited, 3, 2.0),
    ("429_insufficient_quota", [], openai_error(429, "insufficient_quota"), QuotaExceeded, 1, 2.0),
    ("402", [], status(402, {"error": {"message": "pay up"}}), QuotaExceeded, 1, 2.0),
    ("500_then_ok", [status(500)], None, OK, 2, 2.0),
    ("502_then_ok", [status(502)], None, OK, 2, 2.0),
    ("503_then_ok", [status(503), status(503)], None, OK, 3, 2.0),
    ("500_always", [], status(500), ServerError, 3, 2.0),
    # ends as whichever comes first: retries that no longer fit, or the deadline inside an attempt
    ("503_retries_cut_by_deadline", [], status(503, delay_s=0.15), (ServerError, DeadlineExceeded), None, 0.4),
    ("reset_before_answer_then_ok", [reset()], None, OK, 2, 2.0),
    ("reset_mid_body_then_ok", [reset_mid_body(20)], None, OK, 2, 2.0),
    ("reset_mid_body_always", [], reset_mid_body(20), ServerError, 3, 2.0),
    ("slow_drip", [], slow_drip(0.05, chunk=8), DeadlineExceeded, 1, 0.5),
    ("malformed_json", [], body(b'{"data": [{"b64_json": '), InvalidOutput, 1, 2.0),
    ("non_image", [], b64_body(b"<html>not an image</html>"), InvalidOutput, 1, 2.0),
    ("truncated_png", [], b64_body(fake.truncated_png()), InvalidOutput, 1, 2.0),
    ("decompression_bomb", [], b64_body(fake.bomb_png()), InvalidOutput, 1, 2.0),
    ("moderation_blocked", [], openai_error(400, "moderation_blocked"), ContentRejected, 1, 2.0),
    ("content_policy_violation", [], openai_error(400, "content_policy_violation"), ContentRejected, 1, 2.0),
    ("empty_result_list", [], body(b'{"created": 1, "data": []}'), ContentRejected, 1, 2.0),
    ("400_invalid_request", [], openai_error(400, "invalid_size"), BackendError, 1, 2.0),
    ("body_over_cap", [], b64_body(fake.png_bytes(512, 512)), InvalidOutput, 1, 2.0),
]


@pytest.mark.parametrize("mode", ["sync", "async", "aiohttp"])
@pytest.mark.parametrize(("case", "script", "always", "expected", "requests", "deadline"), OPENAI_CASES,
                         ids=[c[0] for c in OPENAI_CASES])
def test_openai_faults(server: FakeServer, mode: str, case: str, script: list[Fault], always: Fault | None,
                       expected: Any, requests: int | None, deadline: float) -> None:
    route = fake.install_openai(server)
    server.script(*route, *script)
    server.always(*route, always)
    cap = {"max_response_bytes": 1024} if case == "body_over_cap" else {}
    out, elapsed = call(make("openai", server, **cap), mode, deadline)
    check(out, expected)
    if requests is not None:
        assert server.count(*route) == requests
    assert elapsed <= deadline + SLACK_S, f"{case}: took {elapsed:.3f}s for a {deadline}s deadline"
    if expected is OK:
        assert out.extra["retries"] == server.count(*route) - 1
    elif requests is not None:  # a failed attempt keeps its retry count too (the engine records it)
        assert out.retries == requests - 1


def check(out: Any, expected: Any) -> None:
    if expected is OK:
        assert not isinstance(out, Exception), repr(out)
        assert out.images and out.images[0].size == (8, 8)
    else:
        assert type(out) in (expected if isinstance(expected, tuple) else (expected,)), repr(out)
        assert isinstance(out.__cause__, Exception) or out.status or isinstance(out, DeadlineExceeded | InvalidOutput)


GEMINI_429 = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                        "status": "RESOURCE_EXHAUSTED"}}

PROVIDER_CASES: list[tuple[str, str, Fault, Any, int]] = [
    ("stability", "content_filtered_header",
     body(fake.PNG, "image/png", headers={"finish-reason": "CONTENT_FILTERED"}), ContentRejected, 1),
    ("stability", "content_filtered_json",
     body(json.dumps({"image": fake.B64_PNG, "finish_reason": "CONTENT_FILTERED", "seed": 1}).encode()),
     ContentRejected, 1),
    ("stability", "403_content_moderation",
     status(403, {"id": "x", "name": "content_moderation", "errors": ["flagged"]}), ContentRejected, 1),
    ("stability", "429_means_a_60s_lockout", status(429, {"errors": ["slow down"]}), RateLimited, 1),
    ("stability", "402_payment_required", status(402, {"name": "payment_required", "errors": ["credits"]}),
     QuotaExceeded, 1),
    ("stability", "non_image_body", body(b"GIF89a-not-really", "image/png"), InvalidOutput, 1),
    ("ideogram", "422_prompt_safety", status(422, {}), ContentRejected, 1),
    ("ideogram", "image_not_safe",
     body(json.dumps({"data": [{"url": "", "is_image_safe": False, "seed": 1, "prompt": "p",
                                "resolution": "1024x1024"}]}).encode()), ContentRejected, 1),
    ("ideogram", "inflight_limit", status(429, {"reject_reason": "inflight_limit"}), RateLimited, 3),
    ("ideogram", "result_url_on_another_host",
     body(json.dumps({"data": [{"url": "http://files.example.invalid/x.png", "is_image_safe": True}]}).encode()),
     InvalidOutput, 1),
    ("imagen", "rai_filtered", body(json.dumps({"predictions": [{"raiFilteredReason": "blocked"}]}).encode()),
     ContentRejected, 1),
    ("imagen", "no_predictions", body(b"{}"), ContentRejected, 1),
    ("imagen", "image_safety_finish", body(json.dumps({"candidates": [{"finishReason": "IMAGE_SAFETY"}]}).encode()),
     ContentRejected, 1),
    ("imagen", "429_resource_exhausted",
     status(429, {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}),
     RateLimited, 3),
    # the same google.rpc.RetryInfo as gemini: a wait that does not fit ends the attempt at once
    ("imagen", "429_retry_info_too_long",
     status(429, {"error": {**GEMINI_429["error"], "details": [
         {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"}]}}), RateLimited, 1),
    ("gemini", "image_safety_finish",
     body(json.dumps({"candidates": [{"content": {"role": "model"}, "finishReason": "IMAGE_SAFETY"}]}).encode()),
     ContentRejected, 1),
    ("gemini", "image_prohibited_content_finish", body(json.dumps({"candidates": [{
        "content": {"role": "model"}, "finishReason": "IMAGE_PROHIBITED_CONTENT",
        "finishMessage": "The model output could not be generated. Support code: 42876398."}]}).encode()),
     ContentRejected, 1),
    ("gemini", "prompt_feedback_block", body(b'{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}'),
     ContentRejected, 1),
    ("gemini", "no_image_finish", body(json.dumps(fake.gemini_answer([], finish="NO_IMAGE")).encode()),
     ContentRejected, 1),
    ("gemini", "text_only_answer",
     body(json.dumps(fake.gemini_answer([{"text": "I can't create that image."}])).encode()), ContentRejected, 1),
    ("gemini", "429_resource_exhausted", status(429, GEMINI_429), RateLimited, 3),
    ("gemini", "429_retry_info_too_long",
     status(429, {"error": {**GEMINI_429["error"], "details": [
         {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"}]}}), RateLimited, 1),
    ("gemini", "400_invalid_argument",
     status(400, {"error": {"code": 400, "message": "Unsupported aspect ratio", "status": "INVALID_ARGUMENT"}}),
     BackendError, 1),
    ("gemini", "500_internal", status(500, {"error": {"code": 500, "message": "Internal", "status": "INTERNAL"}}),
     ServerError, 3),
    ("gemini", "truncated_image",
     body(json.dumps(fake.gemini_answer([fake.gemini_image(fake.truncated_png())])).encode()), InvalidOutput, 1),
    ("gemini", "non_image_inline_data",
     body(json.dumps(fake.gemini_answer([fake.gemini_image(b"hello", "text/plain")])).encode()), InvalidOutput, 1),
    ("gemini", "image_mime_but_not_an_image",
     body(json.dumps(fake.gemini_answer([fake.gemini_image(b"<html>x</html>")])).encode()), InvalidOutput, 1),
    ("a1111", "500_out_of_memory", status(500, {"error": "OutOfMemoryError", "detail": "CUDA out of memory"}),
     ServerError, 3),
    ("a1111", "404_sampler", status(404, {"detail": "Sampler not found"}), BackendError, 1),
]

INSTALL = {"stability": fake.install_stability, "ideogram": fake.install_ideogram, "imagen": fake.install_imagen,
           "gemini": fake.install_gemini, "a1111": fake.install_a1111}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("kind", "case", "fault", "expected", "requests"), PROVIDER_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in PROVIDER_CASES])
def test_provider_faults(server: FakeServer, mode: str, kind: str, case: str, fault: Fault, expected: Any,
                         requests: int) -> None:
    route = INSTALL[kind](server)
    server.always(*route, fault)
    extra = {"accept": "json"} if case == "content_filtered_json" else {}
    out, elapsed = call(make(kind, server, **extra), mode, 2.0)
    check(out, expected)
    assert server.count(*route) == requests and out.retries == requests - 1
    assert elapsed <= 2.0 + SLACK_S
    assert "sk-fault-canary-0000" not in str(out)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["stability", "ideogram", "imagen", "gemini", "a1111"])
def test_each_provider_succeeds_after_a_reset_and_a_503(server: FakeServer, mode: str, kind: str) -> None:
    route = INSTALL[kind](server)
    server.script(*route, reset_mid_body(10), status(503))
    out, elapsed = call(make(kind, server), mode, 2.0)
    check(out, OK)
    assert out.extra["retries"] == 2 and server.count(*route) == 3


IMAGE_ROUTE = ("GET", "/files/{name}")
V3_UNSAFE = {"created": "2026-01-05T17:32:00+00:00",
             "data": [{"url": None, "is_image_safe": False, "seed": 1, "prompt": "p", "resolution": "1024x1024"}]}
# Ideogram 3.0: (id, route faulted, faults for the next requests, fault for every request, expected, generate calls)
IDEOGRAM_V3_CASES: list[tuple[str, str, list[Fault], Fault | None, Any, int]] = [
    ("422_prompt_safety", "generate", [], status(422, {"error": "Prompt failed the safety check."}),
     ContentRejected, 1),
    ("image_not_safe", "generate", [], body(json.dumps(V3_UNSAFE).encode()), ContentRejected, 1),
    ("429_inflight_limit", "generate", [], status(429, {"reject_reason": "inflight_limit"}), RateLimited, 3),
    ("402_insufficient_funds", "generate", [], status(402, {"reject_reason": "insufficient_funds"}),
     QuotaExceeded, 1),
    ("500_then_ok", "generate", [status(500)], None, OK, 2),
    ("truncated_image_download", "image", [], body(fake.truncated_png(), "image/png"), InvalidOutput, 1),
]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("case", "target", "script", "always", "expected", "calls"), IDEOGRAM_V3_CASES,
                         ids=[c[0] for c in IDEOGRAM_V3_CASES])
def test_ideogram_v3_faults(server: FakeServer, mode: str, case: str, target: str, script: list[Fault],
                            always: Fault | None, expected: Any, calls: int) -> None:
    route = fake.install_ideogram_v3(server)
    faulted = route if target == "generate" else IMAGE_ROUTE
    server.script(*faulted, *script)
    server.always(*faulted, always)
    out, elapsed = call(make("ideogram", server, model="V_3", rendering_speed="TURBO"), mode, 2.0)
    check(out, expected)
    assert server.count(*route) == calls
    assert elapsed <= 2.0 + SLACK_S, f"{case}: took {elapsed:.3f}s"
    assert "sk-fault-canary-0000" not in str(out)
    if expected is OK:
        assert out.extra["retries"] == calls - 1 and out.cost_usd == pytest.approx(0.03)


# (id, faults for the next requests, requests made): each is retried and then succeeds
GEMINI_RECOVERIES: list[tuple[str, list[Fault], int]] = [
    ("429_retry_after_fits", [status(429, GEMINI_429, {"Retry-After": "0.05"})], 2),
    ("429_retry_info_fits", [status(429, {"error": {**GEMINI_429["error"], "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.05s"}]}})], 2),
    ("429_without_retry_after", [status(429, GEMINI_429)], 2),
    ("500_then_ok", [status(500, {"error": {"code": 500, "message": "Internal", "status": "INTERNAL"}})], 2),
    ("503_twice_then_ok", [status(503), status(503)], 3),
    ("reset_mid_body_then_ok", [reset_mid_body(20)], 2),
]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("case", "script", "requests"), GEMINI_RECOVERIES, ids=[c[0] for c in GEMINI_RECOVERIES])
def test_gemini_recovers_after_retryable_faults(server: FakeServer, mode: str, case: str, script: list[Fault],
                                                requests: int) -> None:
    route = fake.install_gemini(server)
    server.script(*route, *script)
    out, elapsed = call(make("gemini", server), mode, 2.0)
    check(out, OK)
    assert server.count(*route) == requests and out.extra["retries"] == requests - 1
    assert elapsed <= 2.0 + SLACK_S, f"{case}: took {elapsed:.3f}s"


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["gemini", "imagen"])
def test_google_retry_info_is_honoured_by_both_google_kinds(server: FakeServer, mode: str, kind: str) -> None:
    route = INSTALL[kind](server)
    retry_info = {"error": {**GEMINI_429["error"], "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.3s"}]}}
    server.script(*route, status(429, retry_info))
    out, elapsed = call(make(kind, server, retry_base_s=5.0), mode, 2.0)  # a backoff of 5 s would not fit
    check(out, OK)
    assert server.count(*route) == 2 and out.extra["retries"] == 1
    assert 0.3 <= elapsed <= 2.0 + SLACK_S  # the delay the server asked for, not the (impossible) backoff


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_result_url_on_loopback_is_refused_unless_allowed(server: FakeServer, mode: str) -> None:
    route = fake.install_ideogram(server)
    out, _ = call(make("ideogram", server, allow_private_download_hosts=False), mode, 2.0)
    assert isinstance(out, InvalidOutput) and "private or loopback" in str(out)
    assert server.count("GET", "/files/") == 0 and server.count(*route) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_result_download_slow_drip_is_cut_at_the_deadline(server: FakeServer, mode: str) -> None:
    fake.install_ideogram(server)
    server.always("GET", "/files/{name}", slow_drip(0.05, chunk=4))
    out, elapsed = call(make("ideogram", server), mode, 0.6)
    assert isinstance(out, DeadlineExceeded)
    assert elapsed <= 0.6 + SLACK_S


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_result_download_redirect_to_another_host_is_refused(server: FakeServer, mode: str) -> None:
    fake.install_ideogram(server)
    server.always("GET", "/files/{name}", status(302, headers={"Location": "http://localhost:9/x.png"}))
    out, _ = call(make("ideogram", server, allowed_download_hosts=["127.0.0.1", "localhost"]), mode, 2.0)
    assert isinstance(out, InvalidOutput) and "redirect" in str(out)


# Headers one byte every 50 ms (~170 bytes: 8.5 s), so every read sees progress and no per-read timeout
# fires: only the call's deadline can end it. Generous bound: deadline + 1.5 s.
TRICKLE_GRACE_S = 1.5


@pytest.mark.parametrize("mode", ["sync", "async", "aiohttp"])
@pytest.mark.parametrize("target", ["api", "result_download"])
def test_headers_trickling_in_are_cut_at_the_deadline(server: FakeServer, mode: str, target: str) -> None:
    route = fake.install_ideogram(server)
    server.always(*(route if target == "api" else IMAGE_ROUTE), slow_headers(0.05))
    out, elapsed = call(make("ideogram", server), mode, 1.0)
    assert isinstance(out, DeadlineExceeded), repr(out)
    assert elapsed < 1.0 + TRICKLE_GRACE_S, f"{mode}: took {elapsed:.3f}s for a 1.0s deadline"
