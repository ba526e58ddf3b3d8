"""Local edits on real tiny pipelines (random weights): diffusers' image-to-image and inpainting
pipelines of each family, built from the loaded pipeline, offline on CPU."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _tiny_fixtures import tiny_models  # noqa: F401  (session fixture)
from PIL import Image

from pixelroute import AsyncClient, Client, ConfigError
from pixelroute._deadline import Deadline
from pixelroute._edit import build_edit_request
from pixelroute._errors import DeadlineExceeded, ValidationError
from pixelroute.backends._pipeline_cache import PipelineCache
from pixelroute.backends.diffusers import DiffusersBackend, DiffusersSettings

PHOTO = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
MASK = Image.new("L", (64, 64), 0)
MASK.paste(255, (16, 16, 48, 48))
OFF = {"telemetry": {"enabled": False}, "router": {"exploration": 0.0}}


@pytest.fixture
def make_backend(tiny_models: dict[str, Path]) -> Iterator[Any]:  # noqa: F811
    made: list[DiffusersBackend] = []
    cache = PipelineCache()

    def make(family: str = "sd15", **settings: Any) -> DiffusersBackend:
        s = DiffusersSettings(name=f"tiny-{family}", model=str(tiny_models[family]), device="cpu", **settings)
        backend = DiffusersBackend(s, pipeline_cache=cache)
        made.append(backend)
        return backend

    make.cache = cache  # type: ignore[attr-defined]
    yield make
    for b in made:
        b.close()
    cache.close()


def px(image: Any) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3"])
@pytest.mark.parametrize("masked", [False, True], ids=["img2img", "inpaint"])
def test_each_family_edits_with_seeded_pixels_sync_and_async(make_backend: Any, family: str, masked: bool) -> None:
    backend = make_backend(family)
    mask = MASK if masked else None
    with Client(OFF, backends=[backend]) as client:
        first = client.edit(PHOTO, "a stormy sky", mask=mask, seed=5, strength=0.5, steps=4)
        again = client.edit(PHOTO, "a stormy sky", mask=mask, seed=5, strength=0.5, steps=4)
        other = client.edit(PHOTO, "a stormy sky", mask=mask, seed=6, strength=0.5, steps=4)

    async def run_async() -> Any:
        async with AsyncClient(OFF, backends=[backend]) as aclient:
            return await aclient.edit(PHOTO, "a stormy sky", mask=mask, seed=5, strength=0.5, steps=4)

    async_result = asyncio.run(run_async())
    assert first.image.size == (64, 64)
    assert np.array_equal(px(first.image), px(again.image)) and np.array_equal(px(first.image), px(async_result.image))
    assert not np.array_equal(px(first.image), px(other.image))
    attempt = first.trace["attempts"][-1]
    assert first.trace["operation"] == "edit" and first.trace["input"]["width"] == 64
    assert attempt["params"]["strength"] == 0.5 and attempt["params"]["masked"] is masked
    assert attempt["params"]["steps"] == 4 and attempt["params"]["seed"] == 5


def test_the_edit_pipelines_reuse_the_loaded_modules(make_backend: Any) -> None:
    backend = make_backend("sdxl")
    req = build_edit_request(PHOTO, None, prompt="p", seed=1, steps=2)
    backend.generate(build_edit_request(PHOTO, MASK, prompt="p", seed=1, steps=2), Deadline(None))
    backend.edit(req, Deadline(None))
    cache: PipelineCache = make_backend.cache
    assert len(cache.loaded()) == 1, "no second pipeline was loaded for edits"
    slot = cache.acquire(backend._load_spec(), id(backend))
    try:
        base = slot.pipe
        assert set(slot.edit_pipes) == {"img2img", "inpaint"}
        for derived in slot.edit_pipes.values():
            assert derived.unet is base.unet and derived.vae is base.vae
            assert derived.text_encoder_2 is base.text_encoder_2
        assert type(slot.edit_pipes["inpaint"]).__name__ == "StableDiffusionXLInpaintPipeline"
    finally:
        cache.release(slot)
    text = backend.generate(build_edit_request(PHOTO, None, prompt="p", seed=1, steps=2), Deadline(None))
    assert text.images  # the base pipeline still generates after its edit twins ran


def test_inpainting_and_image_to_image_differ_and_strength_counts(make_backend: Any) -> None:
    backend = make_backend("sd15")
    masked = backend.edit(build_edit_request(PHOTO, MASK, prompt="p", seed=3, steps=4, strength=0.75), Deadline(None))
    plain = backend.edit(build_edit_request(PHOTO, None, prompt="p", seed=3, steps=4, strength=0.75), Deadline(None))
    weaker = backend.edit(build_edit_request(PHOTO, None, prompt="p", seed=3, steps=4, strength=0.25), Deadline(None))
    assert not np.array_equal(px(masked.images[0]), px(plain.images[0]))
    assert not np.array_equal(px(plain.images[0]), px(weaker.images[0]))
    assert plain.params["strength"] == 0.75 and masked.params["strength"] == 0.75
    default = backend.edit(build_edit_request(PHOTO, MASK, prompt="p", seed=3, steps=2), Deadline(None))
    assert default.params["strength"] == 1.0  # diffusers' inpainting default


def test_a_strength_that_leaves_no_step_is_refused_before_running(make_backend: Any) -> None:
    backend = make_backend("sd15")
    with pytest.raises(ValidationError, match=r"`strength` 0.2 x 4 steps leaves no denoising step") as err:
        backend.edit(build_edit_request(PHOTO, None, prompt="p", steps=4, strength=0.2), Deadline(None))
    assert err.value.field == "strength"


def test_width_and_height_resize_the_input_and_its_mask(make_backend: Any) -> None:
    for family in ("sd15", "sd3"):
        backend = make_backend(family)
        for mask in (None, MASK):
            out = backend.edit(build_edit_request(PHOTO, mask, prompt="p", seed=2, steps=2, width=96, height=64),
                               Deadline(None))
            assert out.images[0].size == (96, 64) and out.params["width"] == 96


def test_the_deadline_stops_an_edit_in_its_denoising_loop(make_backend: Any) -> None:
    backend = make_backend("sd15")
    backend.edit(build_edit_request(PHOTO, None, prompt="p", seed=1, steps=2), Deadline(None))  # loaded
    with pytest.raises(DeadlineExceeded):
        backend.edit(build_edit_request(PHOTO, None, prompt="p", seed=1, steps=800, strength=1.0), Deadline(0.5))
    assert backend.edit(build_edit_request(PHOTO, None, prompt="p", seed=1, steps=2), Deadline(None)).images


def test_a_generic_pipeline_only_generates_unless_configured_otherwise(tmp_path: Path) -> None:
    generic = DiffusersBackend(DiffusersSettings(name="g", model="someone/unknown-model"))
    assert generic.operations == ("generate",)
    with pytest.raises(ConfigError, match="`operations` includes 'edit'"):
        DiffusersBackend(DiffusersSettings(name="g", model="someone/unknown-model", operations=["edit"]))
    only_edits = DiffusersBackend(DiffusersSettings(name="e", model=str(tmp_path / "m"), make_tiny="sd15",
                                                    operations=["edit"]))
    assert only_edits.operations == ("edit",) and only_edits.describe()["operations"] == ["edit"]


def test_an_edit_reports_its_progress_and_partial_images(make_backend: Any) -> None:
    from pixelroute.events import Done, Step

    backend = make_backend("sd15")
    events: list[Any] = []
    with Client(OFF, backends=[backend]) as client:
        r = client.edit(PHOTO, "p", mask=MASK, seed=1, steps=4, strength=0.5, on_progress=events.append, previews=1)
    steps = [e for e in events if isinstance(e, Step)]
    assert [(e.step, e.steps) for e in steps] == [(1, 2), (2, 2)]  # int(4 x 0.5) denoising steps
    assert any(e.previews for e in steps) and isinstance(events[-1], Done) and events[-1].result is r
