"""The diffusers backend on real tiny pipelines (random weights), offline on CPU."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _tiny_fixtures import tiny_models  # noqa: F401  (session fixture)

from pixelroute._config import embedded_default
from pixelroute._deadline import CancelToken, Deadline
from pixelroute._errors import Cancelled, ConfigError, DeadlineExceeded, ValidationError
from pixelroute._types import GenerateRequest
from pixelroute.backends import create_backend
from pixelroute.backends._pipeline_cache import PipelineCache
from pixelroute.backends.diffusers import DiffusersBackend, DiffusersSettings


@pytest.fixture
def make_backend(tiny_models: dict[str, Path]) -> Iterator[object]:  # noqa: F811
    made: list[DiffusersBackend] = []
    shared = PipelineCache()

    def make(family: str = "sd15", cache: PipelineCache | None = None, **settings: object
             ) -> DiffusersBackend:
        s = DiffusersSettings(name=f"tiny-{family}", model=str(tiny_models[family]), device="cpu", **settings)
        backend = DiffusersBackend(s, pipeline_cache=cache or shared)
        made.append(backend)
        return backend

    yield make
    for b in made:
        b.close()
    shared.close()


def _req(**kw: object) -> GenerateRequest:
    return GenerateRequest(**{"prompt": "a red bicycle", **kw})  # type: ignore[arg-type]


def _px(image: object) -> np.ndarray:
    return np.asarray(image)


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3"])
def test_each_family_generates_sync_and_async_with_identical_seeded_pixels(make_backend, family: str) -> None:
    backend = make_backend(family)
    out = backend.generate(_req(seed=7), Deadline(None))
    again = asyncio.run(backend.agenerate(_req(seed=7), Deadline(None)))
    other = backend.generate(_req(seed=8), Deadline(None))
    assert out.images[0].size == (64, 64)
    assert np.array_equal(_px(out.images[0]), _px(again.images[0]))
    assert not np.array_equal(_px(out.images[0]), _px(other.images[0]))
    assert out.params["seed"] == 7 and out.params["steps"] == backend.capabilities.default_steps
    assert out.model == str(backend.config.model) and out.gpu_s is not None and out.gpu_s > 0
    assert backend.local and backend.kind == "diffusers"


def test_n_images_use_consecutive_seeds_and_a_random_seed_is_reported(make_backend) -> None:
    # batch invariance (on with micro-batching) makes image 2 of n=2 exactly the seed+1 image
    backend = make_backend("sd3", max_batch_size=2, batch_window_ms=0)
    pair = backend.generate(_req(seed=20, n=2), Deadline(None))
    second = backend.generate(_req(seed=21), Deadline(None))
    assert pair.extra["seeds"] == [20, 21]
    assert np.array_equal(_px(pair.images[1]), _px(second.images[0]))
    unseeded = backend.generate(_req(), Deadline(None))
    replay = backend.generate(_req(seed=unseeded.params["seed"]), Deadline(None))
    assert np.array_equal(_px(unseeded.images[0]), _px(replay.images[0]))


def test_family_defaults_config_overrides_and_embedded_default_keys(make_backend, tmp_path: Path) -> None:
    sd3 = make_backend("sd3")
    assert sd3.family.name == "tiny-sd3" and sd3.capabilities.size_multiple == 16
    tuned = make_backend("sd15", default_steps=3, default_guidance=0.0, default_width=32, default_height=32)
    out = tuned.generate(_req(seed=1), Deadline(None))
    assert (out.params["steps"], out.params["guidance"], out.images[0].size) == (3, 0.0, (32, 32))
    honoured = tuned.generate(_req(seed=1, steps=1, guidance=2.0), Deadline(None))
    assert (honoured.params["steps"], honoured.params["guidance"]) == (1, 2.0)
    # the embedded default's two diffusers backends build from their settings without loading anything
    backends = [create_backend(s) for s in embedded_default(tmp_path).backends]
    assert [b.capabilities.default_steps for b in backends] == [2, 8]
    assert not (tmp_path / "tiny").exists()  # nothing built until first use


def test_scheduler_switch_by_alias_or_class_and_unknown_name_lists_compatibles(make_backend) -> None:
    backend = make_backend("sd15")
    base = backend.generate(_req(seed=3), Deadline(None))
    euler = backend.generate(_req(seed=3, scheduler="euler_a"), Deadline(None))
    by_class = backend.generate(_req(seed=3, scheduler="EulerAncestralDiscreteScheduler"), Deadline(None))
    assert euler.params["scheduler"] == "EulerAncestralDiscreteScheduler"
    assert np.array_equal(_px(euler.images[0]), _px(by_class.images[0]))
    assert not np.array_equal(_px(base.images[0]), _px(euler.images[0]))
    assert backend.generate(_req(seed=3), Deadline(None)).params["scheduler"] == "DDIMScheduler"
    with pytest.raises(ValidationError, match="`scheduler`.*DDIMScheduler.*'warp-drive'") as info:
        backend.generate(_req(scheduler="warp-drive"), Deadline(None))
    assert info.value.field == "scheduler"
    with pytest.raises(ConfigError, match="default_scheduler"):
        make_backend("sd15", default_scheduler="nope").generate(_req(), Deadline(None))


@pytest.mark.parametrize(
    ("family", "knobs", "field"),
    [
        ("sd15", {"width": 60, "height": 64}, "width"),
        ("sd3", {"width": 64, "height": 72}, "height"),  # 16-multiple for SD3/FLUX
        ("sd15", {"width": 1024, "height": 64}, "width"),  # over max_side of the tiny family
        ("sd15", {"n": 5}, "n"),
    ],
)
def test_bad_inputs_are_refused_naming_the_field(make_backend, family: str, knobs: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=f"`{field}`") as info:
        make_backend(family).generate(_req(**knobs), Deadline(None))
    assert info.value.field == field


def test_deadline_interrupts_the_denoising_loop_and_the_pipeline_stays_usable(make_backend) -> None:
    backend = make_backend("sd15")
    backend.generate(_req(seed=1), Deadline(None))  # warm: the first call pays for imports and load
    fresh = make_backend("sd15", cache=PipelineCache())  # no measured speed: it must start and stop itself
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="stopped at denoising step"):
        fresh.generate(_req(seed=1, steps=400), Deadline(1.5))
    # stopped by the in-loop estimate (400 steps cannot fit), well before the deadline itself
    assert time.monotonic() - started < 1.5
    # the worker is free again at once: a 400-step call still running would block this one
    ok = fresh.generate(_req(seed=1, steps=2), Deadline(5.0))
    assert len(ok.images) == 1 and time.monotonic() - started < 3.0


def test_a_call_predicted_not_to_fit_is_refused_before_computing(make_backend) -> None:
    now = [100.0]
    backend = make_backend("sd15")
    backend.clock = lambda: now[0]
    backend.generate(_req(seed=1), Deadline(None))  # loads the slot
    slot = backend._cache.acquire(backend._load_spec(), id(backend))
    slot.record((64, 64, 1, True), 2, per_step_s=5.0, total_s=12.0)  # as if the pipeline were slow
    backend._cache.release(slot)
    with pytest.raises(DeadlineExceeded, match="2 steps at 64x64 take about .* but 3.00 s are left"):
        backend.generate(_req(seed=1), Deadline(3.0, clock=lambda: now[0]))


def test_cancel_token_stops_a_running_call(make_backend) -> None:
    backend = make_backend("sd15")
    backend.generate(_req(seed=1), Deadline(None))
    token = CancelToken()
    threading.Timer(0.3, token.cancel).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        backend.generate(_req(seed=1, steps=400), Deadline(None, cancel=token))
    assert time.monotonic() - started < 1.5
    assert backend.generate(_req(seed=1), Deadline(5.0)).images


def test_asyncio_cancellation_interrupts_and_leaves_nothing_running(make_backend) -> None:
    backend = make_backend("sd15")
    backend.generate(_req(seed=1), Deadline(None))
    slot = backend._cache.acquire(backend._load_spec(), id(backend))
    backend._cache.release(slot)

    async def main() -> None:
        task = asyncio.create_task(backend.agenerate(_req(seed=1, steps=400), Deadline(None)))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert slot.worker.busy == 0  # the denoising loop has stopped, not just been abandoned

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 2.0


def test_eight_threads_on_one_pipeline_all_succeed_with_their_own_seeds(make_backend) -> None:
    backend = make_backend("sd3")
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            results[i] = backend.generate(_req(prompt=f"prompt {i}", seed=100 + i), Deadline(30.0))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == list(range(8))
    for i in (0, 7):
        alone = backend.generate(_req(prompt=f"prompt {i}", seed=100 + i), Deadline(None))
        assert results[i].params["seed"] == 100 + i  # type: ignore[attr-defined]
        assert np.array_equal(_px(results[i].images[0]), _px(alone.images[0]))  # type: ignore[attr-defined]


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_micro_batched_images_are_pixel_identical_to_unbatched(make_backend, family: str) -> None:
    backend = make_backend(family, max_batch_size=4, batch_window_ms=300)
    requests = [_req(prompt=f"prompt {i}", seed=40 + i, n=1 + (i == 2)) for i in range(4)]
    alone = [backend.generate(r, Deadline(None)) for r in requests]
    assert all(o.extra["batch_images"] == o.params["n"] for o in alone)
    batched: dict[int, object] = {}

    def call(i: int) -> None:
        batched[i] = backend.generate(requests[i], Deadline(30))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(batched[i].extra["batch_images"] for i in range(4)) > 1  # type: ignore[attr-defined]
    for i in range(4):
        for a, b in zip(alone[i].images, batched[i].images, strict=True):  # type: ignore[attr-defined]
            assert np.array_equal(_px(a), _px(b))


def test_importing_the_backend_module_does_not_import_torch() -> None:
    code = ("import sys, pixelroute.backends.diffusers; "
            "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
