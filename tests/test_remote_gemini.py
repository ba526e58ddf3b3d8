"""The ``gemini`` kind (``:generateContent``) on the exact wire bytes, with httpx.MockTransport."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from pixelroute._deadline import Deadline
from pixelroute._errors import (
    BackendError,
    ConfigError,
    ContentRejected,
    InvalidOutput,
    RateLimited,
    ServerError,
    ValidationError,
)
from pixelroute._types import GenerateRequest
from pixelroute.backends import create_backend, settings_model
from pixelroute.backends._http import RemoteBackend
from pixelroute.backends._presets import preset
from pixelroute.backends.gemini import BASE_RATIOS, WIDE_RATIOS, GeminiBackend
from tests._mock_transport import Recorder
from tests.fakeservers.providers import PNG, gemini_answer, gemini_image, png_bytes

KEY = "gem-wire-0042"
URL = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash-image:generateContent"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


def backend(answer: Any, **settings: Any) -> tuple[RemoteBackend, Recorder]:
    rec = Recorder(answer)
    model = settings_model("gemini")(name="gemini-test", kind="gemini", **settings)
    be = create_backend(model, transport=httpx.MockTransport(rec))
    assert isinstance(be, GeminiBackend)
    return be, rec


def run(be: RemoteBackend, **knobs: Any) -> Any:
    try:
        return be.generate(GenerateRequest(prompt="a lighthouse at dusk", **knobs), Deadline(5))
    finally:
        be.close()


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=gemini_answer([{"text": "Here it is."}, gemini_image()]))


def answer(data: Any, code: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(code, json=data, headers=headers)


# -- the request ------------------------------------------------------------------------------------


def test_gemini_api_url_header_and_exact_body() -> None:
    be, rec = backend(ok)
    out = run(be, width=1344, height=768, seed=7)
    assert rec.last.url == URL
    assert rec.last.headers["x-goog-api-key"] == KEY and "authorization" not in rec.last.headers
    assert json.loads(rec.last.content) == {
        "contents": [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9"}, "seed": 7}}
    assert out.images[0].size == (8, 8) and out.cost_usd == pytest.approx(0.039)
    assert out.params == {"width": 8, "height": 8, "aspect_ratio": "16:9", "image_size": None, "seed": 7}
    assert out.extra["responseId"] == "fake-response-1" and out.model == "gemini-2.5-flash-image"


def test_vertex_url_bearer_token_and_image_size() -> None:
    be, rec = backend(ok, vertex_project="proj", model="gemini-3.1-flash-image", image_size="2K",
                      response_modalities="TEXT_AND_IMAGE")
    run(be, width=2048, height=512)
    assert rec.last.url == ("https://aiplatform.googleapis.com/v1/projects/proj/locations/global"
                            "/publishers/google/models/gemini-3.1-flash-image:generateContent")
    assert rec.last.headers["authorization"] == f"Bearer {KEY}" and "x-goog-api-key" not in rec.last.headers
    assert json.loads(rec.last.content)["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "4:1", "imageSize": "2K"}}
    assert be.price.per_image == pytest.approx(0.101)  # the 2K price of the pricing page


def test_vertex_regional_host() -> None:
    be, rec = backend(ok, vertex_project="proj", vertex_location="europe-west4")
    run(be)
    assert rec.last.url.host == "europe-west4-aiplatform.googleapis.com"
    assert "/locations/europe-west4/" in rec.last.url.path


@pytest.mark.parametrize(("size", "ratio"), [((1024, 1024), "1:1"), ((832, 1216), "2:3"), ((1216, 832), "3:2"),
                                             ((768, 1024), "3:4"), ((1024, 768), "4:3"), ((800, 1000), "4:5"),
                                             ((1000, 800), "5:4"), ((768, 1344), "9:16"), ((1536, 640), "21:9")])
def test_size_maps_to_the_nearest_documented_ratio(size: tuple[int, int], ratio: str) -> None:
    be, rec = backend(ok)
    run(be, width=size[0], height=size[1])
    assert json.loads(rec.last.content)["generationConfig"]["imageConfig"]["aspectRatio"] == ratio


def test_extreme_ratios_only_on_3_1_flash_image() -> None:
    assert set(WIDE_RATIOS) - set(BASE_RATIOS) == {"1:4", "4:1", "1:8", "8:1"}
    be, rec = backend(ok)
    with pytest.raises(ValidationError, match=r"2048x512 .*nearest is 21:9") as err:
        run(be, width=2048, height=512)
    assert err.value.field == "width" and err.value.value == (2048, 512) and rec.requests == []
    be, rec = backend(ok, aspect_ratios=["1:1", "4:1"])  # a stated list wins over the model family's
    run(be, width=2048, height=512)
    assert json.loads(rec.last.content)["generationConfig"]["imageConfig"]["aspectRatio"] == "4:1"


@pytest.mark.parametrize(("knobs", "field"), [({"n": 2}, "n"), ({"steps": 20}, "steps"),
                                              ({"guidance": 4.0}, "guidance"),
                                              ({"negative_prompt": "fog"}, "negative_prompt"),
                                              ({"scheduler": "euler"}, "scheduler")])
def test_knobs_the_api_does_not_have_are_refused_by_name(knobs: dict[str, Any], field: str) -> None:
    be, rec = backend(ok)
    with pytest.raises(ValidationError) as err:
        run(be, **knobs)
    assert err.value.field == field and rec.requests == []


def test_image_size_on_a_1k_only_model_and_bad_ratio_settings_are_config_errors() -> None:
    be, rec = backend(ok, image_size="2K")
    with pytest.raises(ConfigError, match=r"`image_size` '2K' is not offered by model 'gemini-2.5-flash-image'"):
        run(be)
    assert rec.requests == []
    with pytest.raises(Exception, match=r"`aspect_ratios` entries must look like '16:9' but one is '16x9'"):
        settings_model("gemini")(name="g", kind="gemini", aspect_ratios=["16x9"])


def test_presets_cite_the_pricing_page() -> None:
    assert preset("gemini", "gemini-2.5-flash-image") == {"price": {"per_image": 0.039}, "typical_latency_s": 30.0,
                                                          "max_n": 1}
    assert preset("gemini", "gemini-3-pro-image", "4K")["price"] == {"per_image": 0.24}
    be, _ = backend(ok, price={"per_image": 0.5})
    assert be.price.per_image == 0.5  # config wins


# -- the answer -------------------------------------------------------------------------------------


def test_thought_images_are_skipped_and_the_last_image_is_the_result() -> None:
    interim = {**gemini_image(png_bytes(4, 4)), "thought": True}
    final = gemini_image(png_bytes(16, 8))
    be, _ = backend(answer(gemini_answer([interim, {"text": "done"}, final])))
    assert run(be).images[0].size == (16, 8)


@pytest.mark.parametrize(("data", "match"), [
    ({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}, r"prompt blocked \(PROHIBITED_CONTENT\)"),
    ({"promptFeedback": {"blockReason": "SAFETY", "blockReasonMessage": "unsafe"}}, r"blocked \(SAFETY\): unsafe"),
    ({"candidates": [{"content": {"role": "model"}, "finishReason": "IMAGE_SAFETY"}]}, r"\(IMAGE_SAFETY\)"),
    # BerriAI/litellm#20357: the finishMessage Google sends with IMAGE_PROHIBITED_CONTENT
    ({"candidates": [{"content": {"role": "model"}, "finishReason": "IMAGE_PROHIBITED_CONTENT",
                      "finishMessage": "The model output could not be generated. Support code: 42876398."}]},
     r"IMAGE_PROHIBITED_CONTENT\): The model output could not be generated"),
    ({"candidates": [{"finishReason": "SAFETY", "safetyRatings": []}]}, r"\(SAFETY\)"),
    ({"candidates": [{"finishReason": "PROHIBITED_CONTENT"}]}, r"\(PROHIBITED_CONTENT\)"),
    ({"candidates": [{"finishReason": "RECITATION"}]}, r"\(RECITATION\)"),
    ({"candidates": [{"content": {"parts": [{"text": "What should I draw?"}]}, "finishReason": "NO_IMAGE"}]},
     r"\(NO_IMAGE\): What should I draw\?"),
    (gemini_answer([{"text": "I can't create images of that."}]), r"answered with text and no image: I can't"),
    ({"candidates": []}, "no candidates"),
    ({}, "no candidates"),
])
def test_each_refusal_shape_is_content_rejected_and_not_retried(data: dict[str, Any], match: str) -> None:
    be, rec = backend(answer(data))
    with pytest.raises(ContentRejected, match=match) as err:
        run(be)
    assert len(rec.requests) == 1 and err.value.status == 200


@pytest.mark.parametrize(("data", "match"), [
    (gemini_answer([gemini_image(b"plain words", "text/plain")]), "'text/plain', not an image"),
    (gemini_answer([gemini_image(b"<html>no</html>")]), "response is not an image"),
    (gemini_answer([{"inlineData": {"mimeType": "image/png", "data": "***"}}]), "not valid base64"),
    (gemini_answer([], finish="MAX_TOKENS"), r"no image in the response \(finishReason MAX_TOKENS\)"),
    ([1, 2], "not an object"),
])
def test_malformed_answers_are_invalid_output(data: Any, match: str) -> None:
    be, rec = backend(answer(data))
    with pytest.raises(InvalidOutput, match=match):
        run(be)
    assert len(rec.requests) == 1


def test_base64_decodes_to_the_exact_image() -> None:
    be, _ = backend(answer(gemini_answer([{"inlineData": {"mimeType": "image/png",
                                                          "data": base64.b64encode(PNG).decode()}}])))
    assert run(be).images[0].tobytes() == create_image_bytes()


def create_image_bytes() -> bytes:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(PNG)) as img:
        return img.convert("RGB").tobytes()


# -- errors -----------------------------------------------------------------------------------------


def rpc_error(code: int, status: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


def test_400_invalid_argument_is_a_backend_error_with_googles_message() -> None:
    body = rpc_error(400, "INVALID_ARGUMENT", "Unsupported aspect ratio: 7:3")
    be, rec = backend(answer(body, 400))
    with pytest.raises(BackendError, match="HTTP 400: Unsupported aspect ratio: 7:3") as err:
        run(be)
    assert type(err.value) is BackendError and len(rec.requests) == 1


def test_429_retry_info_delay_is_honoured_or_ends_the_attempt() -> None:
    retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"}]
    body = rpc_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota", retry)
    be, rec = backend(answer(body, 429))
    with pytest.raises(RateLimited, match="exceeded your current quota") as err:
        run(be)
    assert err.value.retry_after == 38.0 and len(rec.requests) == 1  # 38 s does not fit a 5 s deadline
    be, rec = backend(answer(body, 429, **{"Retry-After": "60"}))
    with pytest.raises(RateLimited) as err:
        run(be)
    assert err.value.retry_after == pytest.approx(60.0)  # the header, when present, wins


def test_429_without_a_delay_is_retried_with_backoff() -> None:
    state = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        state["n"] += 1
        if state["n"] == 1:
            return answer(rpc_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."), 429)
        return ok(request)

    be, rec = backend(flaky, retry_base_s=0.01)
    out = run(be)
    assert len(rec.requests) == 2 and out.extra["retries"] == 1


@pytest.mark.parametrize("code", [500, 503])
def test_5xx_is_a_server_error(code: int) -> None:
    be, rec = backend(answer(rpc_error(code, "UNAVAILABLE", "The model is overloaded."), code), retry_base_s=0.01)
    with pytest.raises(ServerError, match="overloaded"):
        run(be)
    assert len(rec.requests) == 3
