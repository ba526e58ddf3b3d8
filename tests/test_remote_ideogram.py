"""Ideogram 3.0 (``kind = "ideogram"``, ``model = "V_3"``) on the exact wire, with httpx.MockTransport.

The wire format is Ideogram's OpenAPI document for ``POST /v1/ideogram-v3/generate``
(``provider_apis.md`` §3b): multipart/form-data, header ``Api-Key``, answer ``data[]``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pydantic
import pytest

from pixelroute._deadline import Deadline
from pixelroute._errors import ContentRejected, InvalidOutput, QuotaExceeded, RateLimited, ValidationError
from pixelroute._types import GenerateRequest
from pixelroute.backends import _http, create_backend, settings_model
from pixelroute.backends._http import RemoteBackend
from pixelroute.backends._presets import preset
from tests._mock_transport import Recorder
from tests.fakeservers.providers import PNG, form_fields

KEY = "ideo-v3-key-0007"
URL = "https://api.ideogram.ai/v1/ideogram-v3/generate"
RESULT = "https://ideogram.ai/api/images/ephemeral/x.png?exp=1&signature=s3cr3t"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDEOGRAM_API_KEY", KEY)


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DNS on this machine: result hosts resolve to a public documentation address."""
    monkeypatch.setattr(_http, "_resolve_sync", lambda host, port: ["93.184.216.34"])


def item(**over: Any) -> dict[str, Any]:
    """One ImageGenerationObjectV3."""
    return {"url": RESULT, "prompt": "p", "resolution": "1312x736", "is_image_safe": True, "seed": 5,
            "style_type": "GENERAL", **over}


def provider(items: list[dict[str, Any]] | None = None) -> Any:
    """Answers like Ideogram: the generate call on api.ideogram.ai, the image on its result host.

    Downloads go to the checked address with the name in ``Host``, so requests are told apart by it.
    """

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] != "api.ideogram.ai":
            return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
        n = int(form_fields(request.headers["content-type"], request.content)["num_images"])
        return httpx.Response(200, json={"created": "2026-01-05T17:32:00+00:00", "data": items or [item()] * n})

    return answer


def v3(answer: Any = None, **settings: Any) -> tuple[RemoteBackend, Recorder]:
    rec = Recorder(answer or provider())
    options: dict[str, Any] = {"model": "V_3", "retry_base_s": 0.01, **settings}
    be = create_backend(settings_model("ideogram")(name="ideo-v3", kind="ideogram", **options),
                        transport=httpx.MockTransport(rec))
    assert isinstance(be, RemoteBackend)
    return be, rec


def run(be: RemoteBackend, **knobs: Any) -> Any:
    try:
        return be.generate(GenerateRequest(prompt=knobs.pop("prompt", "a poster that says OPEN"), **knobs),
                           Deadline(5))
    finally:
        be.close()


def sent(rec: Recorder) -> dict[str, str]:
    """The text fields of the generate call (the first request)."""
    post = rec.requests[0]
    assert post.method == "POST" and str(post.url) == URL
    return form_fields(post.headers["content-type"], post.content)


@pytest.mark.usefixtures("public_dns")
def test_v3_sends_the_documented_multipart_fields_and_downloads_without_the_key() -> None:
    be, rec = v3(rendering_speed="TURBO", style_type="FICTION", magic_prompt_option="AUTO")
    out = run(be, width=1024, height=576, n=2, seed=5, negative_prompt="blurry")
    post = rec.requests[0]
    assert post.headers["api-key"] == KEY and "authorization" not in post.headers
    assert post.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert sent(rec) == {"prompt": "a poster that says OPEN", "aspect_ratio": "16x9", "rendering_speed": "TURBO",
                         "num_images": "2", "seed": "5", "negative_prompt": "blurry", "magic_prompt": "AUTO",
                         "style_type": "FICTION"}  # no `model`: the endpoint is the model
    downloads = rec.requests[1:]
    assert len(downloads) == 2
    assert all(r.headers["host"] == "ideogram.ai" and r.url.host == "93.184.216.34" for r in downloads)
    assert all("api-key" not in r.headers for r in downloads)
    assert len(out.images) == 2 and out.cost_usd == pytest.approx(2 * 0.03)
    assert out.model == "V_3"
    assert {k: out.params[k] for k in ("aspect_ratio", "resolution", "rendering_speed", "seeds")} == {
        "aspect_ratio": "16x9", "resolution": "1312x736", "rendering_speed": "TURBO", "seeds": [5, 5]}


@pytest.mark.usefixtures("public_dns")
def test_v3_defaults_send_the_prompt_as_written_at_default_speed() -> None:
    be, rec = v3()
    out = run(be)
    # 1024x1024 is a listed ResolutionV3, so it goes as `resolution` (never together with aspect_ratio)
    assert sent(rec) == {"prompt": "a poster that says OPEN", "resolution": "1024x1024", "rendering_speed": "DEFAULT",
                         "num_images": "1", "magic_prompt": "OFF"}
    assert out.cost_usd == pytest.approx(0.06)
    assert "aspect_ratio" not in out.params and out.params["rendering_speed"] == "DEFAULT"


@pytest.mark.usefixtures("public_dns")
@pytest.mark.parametrize(("width", "height", "field", "value"), [
    (1312, 736, "resolution", "1312x736"),
    (1536, 512, "resolution", "1536x512"),
    (1920, 1080, "aspect_ratio", "16x9"),
    (1000, 800, "aspect_ratio", "5x4"),
    (800, 1000, "aspect_ratio", "4x5"),
    (1200, 600, "aspect_ratio", "2x1"),
    (600, 1800, "aspect_ratio", "1x3"),
    (1280, 810, "aspect_ratio", "16x10"),
    (2048, 2048, "aspect_ratio", "1x1"),
])
def test_v3_size_is_an_exact_resolution_or_the_nearest_listed_ratio(width: int, height: int, field: str,
                                                                     value: str) -> None:
    be, rec = v3()
    run(be, width=width, height=height)
    fields = sent(rec)
    assert fields[field] == value
    assert not {"resolution", "aspect_ratio"} - {field} & fields.keys()


@pytest.mark.parametrize(("width", "height"), [(2300, 1000), (2520, 1080), (1000, 3600)])
def test_v3_refuses_a_shape_with_no_ratio_near_it(width: int, height: int) -> None:
    be, rec = v3()
    with pytest.raises(ValidationError, match="aspect ratio") as err:
        run(be, width=width, height=height)
    assert err.value.field == "width" and err.value.value == (width, height)
    assert "16x9" in str(err.value) and not rec.requests


@pytest.mark.usefixtures("public_dns")
@pytest.mark.parametrize(("speed", "price"), [("TURBO", 0.03), ("DEFAULT", 0.06), ("QUALITY", 0.09)])
def test_v3_rendering_speed_is_sent_and_sets_the_price(speed: str, price: float) -> None:
    assert preset("ideogram", "V_3", speed) == {"typical_latency_s": 10.0, "max_n": 8,
                                                "price": {"per_image": price}}
    be, rec = v3(rendering_speed=speed)
    assert be.price.as_dict() == {"per_image": price} and be.settings.typical_latency_s == 10.0
    out = run(be, n=3)
    assert sent(rec)["rendering_speed"] == speed and sent(rec)["num_images"] == "3"
    assert out.cost_usd == pytest.approx(3 * price)


@pytest.mark.usefixtures("public_dns")
def test_v3_flash_has_no_published_price_so_it_needs_a_configured_one() -> None:
    with pytest.raises(pydantic.ValidationError, match="`rendering_speed` 'FLASH' has no published API price"):
        settings_model("ideogram")(name="i", kind="ideogram", model="V_3", rendering_speed="FLASH")
    be, rec = v3(rendering_speed="FLASH", price={"per_image": 0.025})
    out = run(be)
    assert sent(rec)["rendering_speed"] == "FLASH" and out.cost_usd == pytest.approx(0.025)


@pytest.mark.usefixtures("public_dns")
def test_v3_num_images_is_n_up_to_8() -> None:
    be, rec = v3()
    out = run(be, n=8)
    assert sent(rec)["num_images"] == "8" and len(out.images) == 8
    be, rec = v3()
    with pytest.raises(ValidationError, match="`n` must be at most 8") as err:
        run(be, n=9)
    assert err.value.field == "n" and err.value.value == 9 and not rec.requests


@pytest.mark.parametrize(("knobs", "field"), [
    ({"steps": 30}, "steps"),
    ({"guidance": 7.0}, "guidance"),
    ({"scheduler": "euler"}, "scheduler"),
    ({"seed": 2_147_483_648}, "seed"),
])
def test_v3_refuses_knobs_it_cannot_honour_by_name(knobs: dict[str, Any], field: str) -> None:
    be, rec = v3()
    with pytest.raises(ValidationError, match=f"`{field}`") as err:
        run(be, **knobs)
    assert err.value.field == field and err.value.value == knobs[field] and not rec.requests


@pytest.mark.parametrize(("settings", "message"), [
    ({"model": "V_3", "style_type": "ANIME"}, "`style_type` 'ANIME' is not offered by model 'V_3'"),
    ({"model": "V_2", "style_type": "FICTION"}, "`style_type` 'FICTION' is not offered by model 'V_2'"),
    ({"model": "V_2A", "rendering_speed": "TURBO"}, "`rendering_speed` 'TURBO' needs model 'V_3'"),
    ({"model": "V_3", "rendering_speed": "FAST"}, "rendering_speed"),
    ({"model": "V_4"}, "model"),
])
def test_settings_that_a_model_cannot_send_are_refused_by_name(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        settings_model("ideogram")(name="i", kind="ideogram", **settings)


# -- refusals and errors ---------------------------------------------------------------------------


def test_v3_422_safety_body_is_content_rejected_with_its_text_and_not_retried() -> None:
    body = {"error": "Prompt provided failed safety check due to the inclusion of prohibited content."}
    be, rec = v3(httpx.Response(422, json=body))
    with pytest.raises(ContentRejected, match="failed safety check"):
        run(be)
    assert len(rec.requests) == 1


@pytest.mark.parametrize("items", [
    [item(url=None, is_image_safe=False)],
    [item(), item(url=None, is_image_safe=False)],  # a partial batch is not what was asked for
    [item(url=None)],  # url is null exactly when the image is withheld
    [],
], ids=["unsafe", "one_of_two_unsafe", "no_url", "no_items"])
def test_v3_unsafe_or_missing_images_are_content_rejected_without_a_download(items: list[dict[str, Any]]) -> None:
    be, rec = v3(lambda request: httpx.Response(200, json={"created": "t", "data": items}))
    with pytest.raises(ContentRejected):
        run(be)
    assert len(rec.requests) == 1


@pytest.mark.usefixtures("public_dns")
def test_v3_result_url_off_the_allowed_hosts_is_never_fetched() -> None:
    be, rec = v3(provider([item(url="https://files.example.com/x.png")]))
    with pytest.raises(InvalidOutput, match="is not on an allowed host"):
        run(be)
    assert len(rec.requests) == 1


@pytest.mark.parametrize(("response", "error", "calls"), [
    (httpx.Response(429, json={"reject_reason": "inflight_limit"}), RateLimited, 3),
    (httpx.Response(402, json={"reject_reason": "insufficient_funds"}), QuotaExceeded, 1),
])
def test_v3_429_inflight_is_rate_limited_and_402_is_quota(response: httpx.Response, error: type[Exception],
                                                         calls: int) -> None:
    be, rec = v3(response)
    with pytest.raises(error) as err:
        run(be)
    assert len(rec.requests) == calls and KEY not in str(err.value)
