"""Request mapping of every remote protocol, checked on the exact wire bytes with httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest

from pixelroute._deadline import Deadline
from pixelroute._errors import ConfigError, ContentRejected, QuotaExceeded, RateLimited, ValidationError
from pixelroute._types import GenerateRequest
from pixelroute.backends import _http, create_backend, settings_model
from pixelroute.backends._http import RemoteBackend, nearest_aspect
from pixelroute.backends._presets import preset
from pixelroute.backends.stability import ASPECT_RATIOS as STABILITY_RATIOS
from tests._mock_transport import Recorder
from tests.fakeservers.providers import B64_PNG, PNG

KEYS = {"OPENAI_API_KEY": "sk-map-0001", "STABILITY_API_KEY": "sk-map-0002", "IDEOGRAM_API_KEY": "ideo-map-3",
        "GEMINI_API_KEY": "gem-map-0004", "REPLICATE_API_TOKEN": "r8_map_0005", "A1111_AUTH": "user:pass"}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)


def backend(kind: str, answer: Any, **settings: Any) -> tuple[RemoteBackend, Recorder]:
    rec = Recorder(answer)
    model = settings_model(kind)(name=f"{kind}-test", kind=kind, **settings)
    be = create_backend(model, transport=httpx.MockTransport(rec))
    assert isinstance(be, RemoteBackend)
    return be, rec


def multipart_fields(request: httpx.Request) -> dict[str, str]:
    ctype = request.headers["content-type"]
    assert ctype.startswith("multipart/form-data"), ctype
    boundary = ctype.split("boundary=")[1].encode()
    fields = {}
    for part in request.content.split(b"--" + boundary):
        head, _, value = part.partition(b"\r\n\r\n")
        match = re.search(rb'name="([^"]+)"', head)
        if match and b"filename=" not in head:
            fields[match.group(1).decode()] = value.rstrip(b"\r\n").decode()
    return fields


def run(be: RemoteBackend, **knobs: Any) -> Any:
    try:
        return be.generate(GenerateRequest(prompt="a lighthouse at dusk", **knobs), Deadline(5))
    finally:
        be.close()


# -- OpenAI --------------------------------------------------------------------------------------


def openai_ok(request: httpx.Request) -> httpx.Response:
    n = json.loads(request.content)["n"]
    return httpx.Response(200, json={"created": 1, "data": [{"b64_json": B64_PNG}] * n})


def test_openai_sends_exact_json_and_bearer() -> None:
    be, rec = backend("openai", openai_ok, quality="medium")
    out = run(be, width=1536, height=1024, n=2)
    assert rec.last.url == "https://api.openai.com/v1/images/generations"
    assert rec.last.headers["authorization"] == "Bearer sk-map-0001"
    assert json.loads(rec.last.content) == {"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "n": 2,
                                            "size": "1536x1024", "quality": "medium"}
    assert len(out.images) == 2 and out.cost_usd == pytest.approx(2 * 0.042)


def test_openai_dalle3_asks_for_b64_and_refuses_other_sizes() -> None:
    be, rec = backend("openai", openai_ok, model="dall-e-3", style="natural")
    run(be, width=1792, height=1024)
    assert json.loads(rec.last.content) == {"model": "dall-e-3", "prompt": "a lighthouse at dusk", "n": 1,
                                            "size": "1792x1024", "response_format": "b64_json", "style": "natural"}
    with pytest.raises(ValidationError, match="must be one of 1024x1024, 1792x1024, 1024x1792") as err:
        run(be, width=1536, height=1024)
    assert err.value.field == "width"
    with pytest.raises(ValidationError, match="`n` must be at most 1"):
        run(be, n=2)


GPT_IMAGE_2_VALID = [(1536, 864), (3840, 2160), (2160, 3840), (3840, 1280), (3200, 2560), (1024, 1024), (1280, 720)]
# (width, height, what the message names): each refused before anything is sent
GPT_IMAGE_2_INVALID = [(1000, 1000, "multiple of 16"), (4096, 1024, "at most 3840"), (3840, 3840, "pixels"),
                       (512, 512, "pixels"), (3072, 1008, "aspect ratio")]


def run_both(be: RemoteBackend, **knobs: Any) -> list[Any]:
    """The sync and the async call of the same request, on the backend's MockTransport."""
    request = GenerateRequest(prompt="a lighthouse at dusk", **knobs)

    async def go() -> Any:
        try:
            return await be.agenerate(request, Deadline(5))
        finally:
            await be.aclose()

    try:
        return [be.generate(request, Deadline(5)), asyncio.run(go())]
    finally:
        be.close()


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2-2026-04-21"])
@pytest.mark.parametrize(("width", "height"), GPT_IMAGE_2_VALID, ids=[f"{w}x{h}" for w, h in GPT_IMAGE_2_VALID])
def test_gpt_image_2_sends_any_size_within_its_rule(model: str, width: int, height: int) -> None:
    rec = Recorder(openai_ok)
    model_settings = settings_model("openai")(name="o", kind="openai", model=model)
    be = create_backend(model_settings, transport=httpx.MockTransport(rec), async_transport=httpx.MockTransport(rec))
    assert isinstance(be, RemoteBackend)
    outs = run_both(be, width=width, height=height)
    assert [json.loads(r.content)["size"] for r in rec.requests] == [f"{width}x{height}"] * 2
    assert all(out.images for out in outs)


@pytest.mark.parametrize(("width", "height", "why"), GPT_IMAGE_2_INVALID, ids=[f"{w}x{h}" for w, h, _ in
                                                                                GPT_IMAGE_2_INVALID])
def test_gpt_image_2_refuses_sizes_outside_its_rule_before_sending(width: int, height: int, why: str) -> None:
    rec = Recorder(openai_ok)
    model_settings = settings_model("openai")(name="o", kind="openai", model="gpt-image-2")
    be = create_backend(model_settings, transport=httpx.MockTransport(rec), async_transport=httpx.MockTransport(rec))
    for call in (lambda: be.generate(GenerateRequest(prompt="x", width=width, height=height), Deadline(5)),
                 lambda: asyncio.run(be.agenerate(GenerateRequest(prompt="x", width=width, height=height),
                                                  Deadline(5)))):
        with pytest.raises(ValidationError, match=why) as err:
            call()
        assert err.value.field in ("width", "height") and f"{width}" in str(err.value)
    assert rec.requests == []


def test_gpt_image_1_keeps_its_three_sizes() -> None:
    be, rec = backend("openai", openai_ok, model="gpt-image-1")
    with pytest.raises(ValidationError, match="must be one of 1024x1024, 1536x1024, 1024x1536"):
        run(be, width=1536, height=864)
    assert rec.requests == []


@pytest.mark.parametrize("knob", [{"seed": 7}, {"steps": 20}, {"guidance": 3.0}, {"negative_prompt": "blur"}])
def test_openai_refuses_knobs_it_cannot_honour(knob: dict[str, Any]) -> None:
    be, rec = backend("openai", openai_ok)
    with pytest.raises(ValidationError, match=f"`{next(iter(knob))}` cannot be honoured"):
        run(be, **knob)
    assert rec.requests == []


def test_openai_compatible_server_without_key_and_custom_sizes() -> None:
    be, rec = backend("openai", openai_ok, base_url="http://gw.local/v1", api_key_env=None, model="my-sdxl",
                      sizes=["512x512", "768x512"])
    run(be, width=768, height=512)
    assert str(rec.last.url) == "http://gw.local/v1/images/generations"
    assert "authorization" not in rec.last.headers
    assert json.loads(rec.last.content)["size"] == "768x512"


@pytest.mark.parametrize(("error", "expected"), [
    # billing 429s (help.openai.com article 5955604): a specific code, the broad type insufficient_quota
    ({"code": "credit_balance_exhausted", "type": "insufficient_quota"}, QuotaExceeded),
    ({"code": "project_spend_limit_exceeded", "type": "insufficient_quota"}, QuotaExceeded),
    ({"code": None, "type": "insufficient_quota"}, QuotaExceeded),
    ({"code": "rate_limit_exceeded", "type": "requests"}, RateLimited),
])
def test_openai_429_billing_codes_are_quota_not_rate_limits(error: dict[str, Any], expected: type) -> None:
    body = {"error": {"message": "limit", "param": None, **error}}
    be, rec = backend("openai", httpx.Response(429, json=body), max_retries=0)
    with pytest.raises(expected):
        run(be)
    assert len(rec.requests) == 1


# -- Stability -----------------------------------------------------------------------------------


def stability_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=PNG, headers={"content-type": "image/png", "finish-reason": "SUCCESS",
                                                     "seed": "42"})


def test_stability_sends_multipart_fields() -> None:
    be, rec = backend("stability", stability_ok, model="sd3.5-large-turbo")
    out = run(be, width=1344, height=768, seed=42, negative_prompt="blurry", guidance=1.5)
    assert rec.last.url == "https://api.stability.ai/v2beta/stable-image/generate/sd3"
    assert rec.last.headers["authorization"] == "Bearer sk-map-0002"
    assert rec.last.headers["accept"] == "image/*"
    assert multipart_fields(rec.last) == {"prompt": "a lighthouse at dusk", "output_format": "png",
                                          "aspect_ratio": "16:9", "model": "sd3.5-large-turbo",
                                          "negative_prompt": "blurry", "seed": "42", "cfg_scale": "1.5"}
    assert out.params["seed"] == 42 and out.cost_usd == pytest.approx(0.04)


def test_stability_core_json_accept_has_no_model_or_guidance() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"image": B64_PNG, "finish_reason": "SUCCESS", "seed": 9})

    be, rec = backend("stability", answer, model="core", accept="json")
    run(be, width=1024, height=1024)
    assert rec.last.url.path == "/v2beta/stable-image/generate/core"
    assert rec.last.headers["accept"] == "application/json"
    assert "model" not in multipart_fields(rec.last)
    with pytest.raises(ValidationError, match="`guidance` cannot be honoured"):
        run(be, guidance=4.0)


@pytest.mark.parametrize(("knobs", "field"), [({"seed": 0}, "seed"), ({"guidance": 12.0}, "guidance"),
                                               ({"steps": 20}, "steps"), ({"n": 2}, "n")])
def test_stability_refusals(knobs: dict[str, Any], field: str) -> None:
    be, rec = backend("stability", stability_ok)
    with pytest.raises(ValidationError) as err:
        run(be, **knobs)
    assert err.value.field == field and rec.requests == []


def test_stability_402_body_is_quota_with_its_message() -> None:
    body = {"errors": ["You lack sufficient credits to make this request."], "id": "ea88", "name": "payment_required"}
    be, rec = backend("stability", httpx.Response(402, json=body))
    with pytest.raises(QuotaExceeded, match="lack sufficient credits"):
        run(be)
    assert len(rec.requests) == 1


# -- the size rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "ratio"), [((1024, 1024), "1:1"), ((1344, 768), "16:9"), ((768, 1344), "9:16"),
                                             ((1536, 640), "21:9"), ((1216, 832), "3:2"), ((1000, 800), "5:4")])
def test_nearest_aspect_picks_the_ratio_within_tolerance(size: tuple[int, int], ratio: str) -> None:
    assert nearest_aspect(*size, STABILITY_RATIOS, 0.05, "b") == ratio


def test_nearest_aspect_refuses_a_shape_too_far_from_every_ratio() -> None:
    with pytest.raises(ValidationError, match=r"1024x768 .*nearest is 5:4") as err:
        nearest_aspect(1024, 768, STABILITY_RATIOS, 0.05, "b")  # 4:3 is 0.065 from 5:4 in log-ratio
    assert err.value.field == "width" and err.value.value == (1024, 768)
    assert nearest_aspect(1024, 768, STABILITY_RATIOS, 0.07, "b") == "5:4"  # a wider stated tolerance


# -- Ideogram ------------------------------------------------------------------------------------


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DNS on this machine: result hosts resolve to a public documentation address."""
    monkeypatch.setattr(_http, "_resolve_sync", lambda host, port: ["93.184.216.34"])


@pytest.mark.usefixtures("public_dns")
def test_ideogram_sends_image_request_with_api_key_header() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, content=PNG)
        item = {"url": "https://ideogram.ai/api/images/ephemeral/x.png?sig=s3cr3t", "is_image_safe": True,
                "seed": 5, "resolution": "1024x1024", "prompt": "p"}
        return httpx.Response(200, json={"created": "t", "data": [item, item]})

    be, rec = backend("ideogram", answer, model="V_2_TURBO", style_type="DESIGN")
    out = be.generate(GenerateRequest(prompt="a poster", width=1024, height=576, n=2, seed=5,
                                      negative_prompt="blurry"), Deadline(5))
    post = rec.requests[0]
    assert post.url == "https://api.ideogram.ai/generate" and post.headers["api-key"] == "ideo-map-3"
    assert "authorization" not in post.headers
    assert json.loads(post.content) == {"image_request": {
        "prompt": "a poster", "model": "V_2_TURBO", "aspect_ratio": "ASPECT_16_9", "num_images": 2, "seed": 5,
        "negative_prompt": "blurry", "magic_prompt_option": "OFF", "style_type": "DESIGN"}}
    downloads = rec.requests[1:]
    assert len(downloads) == 2 and all("api-key" not in r.headers for r in downloads)  # no key to result hosts
    assert out.cost_usd == pytest.approx(2 * 0.05)


def test_ideogram_v2a_refuses_negative_prompt() -> None:
    be, _ = backend("ideogram", httpx.Response(500))
    with pytest.raises(ValidationError, match="`negative_prompt` cannot be honoured"):
        run(be, negative_prompt="x")


def test_ideogram_422_safety_body_is_content_rejected_with_its_text() -> None:
    # GenerateImageSafetyError in Ideogram's OpenAPI document: {"error": "<text>"}
    body = {"error": "Prompt provided failed safety check due to the inclusion of prohibited content."}
    be, rec = backend("ideogram", httpx.Response(422, json=body))
    with pytest.raises(ContentRejected, match="failed safety check"):
        run(be)
    assert len(rec.requests) == 1


# -- Imagen --------------------------------------------------------------------------------------


def imagen_ok(request: httpx.Request) -> httpx.Response:
    n = json.loads(request.content)["parameters"]["sampleCount"]
    return httpx.Response(200, json={"predictions": [{"mimeType": "image/png", "bytesBase64Encoded": B64_PNG}] * n})


PROXY = "https://imagen-proxy.example"  # a base_url set by hand: Google's hosts no longer serve Imagen


def test_imagen_gemini_api_body_and_header() -> None:
    be, rec = backend("imagen", imagen_ok, image_size="2K", base_url=PROXY)
    run(be, width=1024, height=768, n=2, guidance=6.0)
    assert rec.last.url == f"{PROXY}/v1beta/models/imagen-4.0-generate-001:predict"
    assert rec.last.headers["x-goog-api-key"] == "gem-map-0004"
    assert json.loads(rec.last.content) == {"instances": [{"prompt": "a lighthouse at dusk"}], "parameters": {
        "sampleCount": 2, "aspectRatio": "4:3", "includeRaiReason": True, "outputOptions": {"mimeType": "image/png"},
        "guidanceScale": 6.0, "sampleImageSize": "2K"}}


def test_imagen_seed_and_negative_prompt_only_on_vertex() -> None:
    be, _ = backend("imagen", imagen_ok, base_url=PROXY)
    with pytest.raises(ValidationError, match="`seed` cannot be honoured"):
        run(be, seed=3)
    be, rec = backend("imagen", imagen_ok, vertex_project="proj", vertex_location="europe-west4", base_url=PROXY)
    run(be, seed=3, negative_prompt="fog")
    assert rec.last.url == (f"{PROXY}/v1/projects/proj/locations/"
                            "europe-west4/publishers/google/models/imagen-4.0-generate-001:predict")
    assert rec.last.headers["authorization"] == "Bearer gem-map-0004"
    params = json.loads(rec.last.content)["parameters"]
    assert params["seed"] == 3 and params["addWatermark"] is False and params["negativePrompt"] == "fog"


@pytest.mark.parametrize("vertex", [{}, {"vertex_project": "proj", "vertex_location": "europe-west4"}])
@pytest.mark.parametrize("model", ["imagen-4.0-generate-001", "imagen-3.0-generate-002", "imagegeneration@006"])
def test_imagen_models_are_refused_on_googles_hosts_since_the_shutdown(vertex: dict[str, str], model: str) -> None:
    be, rec = backend("imagen", imagen_ok, model=model, **vertex)
    host = "europe-west4-aiplatform.googleapis.com" if vertex else "generativelanguage.googleapis.com"
    assert be.settings.base_url == (f"https://{host}" if vertex else None)  # the URL the call would have used
    with pytest.raises(ValidationError, match="shut down every Imagen model on 2026-08-17") as err:
        run(be)
    assert err.value.field == "model" and rec.requests == []  # refused before anything is sent


# -- AUTOMATIC1111 -------------------------------------------------------------------------------


def test_a1111_txt2img_body_with_basic_auth() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        info = json.dumps({"seed": 11, "steps": 25, "cfg_scale": 6.5, "sampler_name": "DPM++ 2M"})
        return httpx.Response(200, json={"images": [B64_PNG, B64_PNG], "parameters": {}, "info": info})

    be, rec = backend("a1111", answer, api_key_env="A1111_AUTH", model="sd_xl_base_1.0")
    out = run(be, width=768, height=512, n=2, steps=25, guidance=6.5, seed=11, scheduler="DPM++ 2M",
              negative_prompt="blurry")
    assert rec.last.url == "http://127.0.0.1:7860/sdapi/v1/txt2img"
    assert rec.last.headers["authorization"] == "Basic dXNlcjpwYXNz"
    assert json.loads(rec.last.content) == {
        "prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "width": 768, "height": 512, "seed": 11,
        "batch_size": 2, "n_iter": 1, "send_images": True, "save_images": False, "steps": 25, "cfg_scale": 6.5,
        "sampler_name": "DPM++ 2M", "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"}}
    assert out.params["steps"] == 25 and out.params["scheduler"] == "DPM++ 2M"
    with pytest.raises(ValidationError, match="`width` must be a multiple of 8"):
        run(be, width=770, height=512)


# -- Replicate -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("public_dns")
@pytest.mark.usefixtures("public_dns")
def test_replicate_create_body_and_poll_urls() -> None:
    state = {"polls": 0}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "replicate.delivery":  # downloads go to the checked address
            return httpx.Response(200, content=PNG)
        if request.method == "POST":
            return httpx.Response(201, json={"id": "abc123", "status": "starting"})
        state["polls"] += 1
        return httpx.Response(200, json={"id": "abc123", "status": "succeeded", "metrics": {"predict_time": 0.9},
                                         "output": ["https://replicate.delivery/xezq/out-0.png"]})

    be, rec = backend("replicate", answer, poll_interval_s=0.001, server_deadline=True)
    out = be.generate(GenerateRequest(prompt="a fox", width=1344, height=768, seed=1, steps=4), Deadline(5))
    create = rec.requests[0]
    assert create.url == "https://api.replicate.com/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["authorization"] == "Bearer r8_map_0005"
    assert create.headers["cancel-after"] == "5s"
    assert json.loads(create.content) == {"input": {"prompt": "a fox", "output_format": "png",
                                                    "aspect_ratio": "16:9", "num_outputs": 1, "seed": 1,
                                                    "num_inference_steps": 4}}
    assert rec.requests[1].url == "https://api.replicate.com/v1/predictions/abc123"
    download = rec.requests[2]
    assert "authorization" not in download.headers  # result download: no credentials
    assert download.url.host == "93.184.216.34" and download.extensions["sni_hostname"] == "replicate.delivery"
    assert out.job_id == "abc123" and out.gpu_s == 0.9 and out.cost_usd == pytest.approx(0.003)


def test_replicate_version_and_width_height_inputs() -> None:
    be, rec = backend("replicate", httpx.Response(201, json={"id": "v1", "status": "failed", "error": "boom"}),
                      version="5f78b950", inputs={"width": "width", "height": "height", "guidance": "cfg"})
    with pytest.raises(Exception, match="boom"):
        run(be, width=768, height=512, guidance=3.5)
    assert rec.last.url.path == "/v1/predictions"
    assert json.loads(rec.last.content) == {"version": "5f78b950", "input": {
        "prompt": "a lighthouse at dusk", "output_format": "png", "width": 768, "height": 512, "cfg": 3.5}}
    with pytest.raises(ValidationError, match="`seed` cannot be honoured"):
        run(be, seed=1)


@pytest.mark.usefixtures("public_dns")
def test_replicate_partial_batch_after_the_safety_checker_is_content_rejected() -> None:
    # flux-schnell drops the images its NSFW checker flags and still succeeds (cog-flux predict.py)
    done = {"id": "p2", "status": "succeeded", "input": {"prompt": "x", "num_outputs": 2},
            "output": ["https://replicate.delivery/xezq/out-1.png"]}
    be, rec = backend("replicate", httpx.Response(201, json=done))
    with pytest.raises(ContentRejected, match="returned 1 of 2 images"):
        run(be, n=2)
    assert len(rec.requests) == 1  # nothing downloaded


def test_replicate_all_nsfw_failure_is_content_rejected() -> None:
    text = "All generated images contained NSFW content. Try running it again with a different prompt."
    be, _ = backend("replicate", httpx.Response(201, json={"id": "p3", "status": "failed", "error": text}))
    with pytest.raises(ContentRejected, match="NSFW") as err:
        run(be)
    assert err.value.job_id == "p3"  # type: ignore[attr-defined]


def test_replicate_402_billing_required_is_quota_and_not_retried() -> None:
    body = {"title": "Billing required", "detail": "You need to set up billing to run this model.", "status": 402}
    be, rec = backend("replicate", httpx.Response(402, json=body))
    with pytest.raises(QuotaExceeded, match="set up billing"):
        run(be)
    assert len(rec.requests) == 1


# -- keys, presets, lazy clients --------------------------------------------------------------


def test_missing_key_env_is_a_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    be, rec = backend("openai", openai_ok)
    with pytest.raises(ConfigError, match="`OPENAI_API_KEY` is not set"):
        run(be)
    assert rec.requests == []


def test_presets_fill_unset_fields_and_config_wins() -> None:
    assert preset("stability", "sd3.5-large")["price"] == {"per_image": 0.065}
    be, _ = backend("stability", stability_ok, model="sd3.5-medium")
    assert be.price.per_image == 0.035
    be, _ = backend("stability", stability_ok, model="sd3.5-medium", price={"per_image": 0.5}, typical_latency_s=3)
    assert be.price.per_image == 0.5 and be.settings.typical_latency_s == 3
    be, _ = backend("openai", openai_ok, quality="high")
    assert be.price.per_image == 0.167 and be.settings.typical_latency_s == 40.0


def test_clients_are_built_once_lazily_and_async_twin_matches() -> None:
    be, rec = backend("openai", openai_ok)
    assert be._client is None
    be.generate(GenerateRequest(prompt="x"), Deadline(5))
    first = be._client
    be.generate(GenerateRequest(prompt="x"), Deadline(5))
    assert be._client is first

    async def both() -> Any:
        transport = httpx.MockTransport(rec)
        async_be = create_backend(be.settings, async_transport=transport)
        try:
            return await async_be.agenerate(GenerateRequest(prompt="x"), Deadline(5))
        finally:
            await async_be.aclose()

    out = asyncio.run(both())
    be.close()
    assert json.loads(rec.requests[-1].content) == json.loads(rec.requests[0].content)
    assert out.images[0].size == (8, 8)
