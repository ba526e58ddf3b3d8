"""Edits are routed like generations, among the backends that can edit: fallbacks, one deadline,
hedging, the cascade, de-duplication, telemetry, traces and PNG metadata, on both clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pixelroute import Client, NoFeasibleBackend, Result, ServerError, ValidationError
from pixelroute._execution import GRACE_S
from pixelroute._png import read_png_metadata, save_png
from pixelroute.backends.base import BackendOutput, MockBackend
from pixelroute.cli.generate import png_metadata
from pixelroute.router import BackendProfile, RouteContext, RouteRequest, SLASpec
from pixelroute.router.policy import PolicyConfig, Predictions, decide
from pixelroute.telemetry import build_trace
from tests.test_execution import MODES, Hold, Runner, Stall, attempts, backend, checkerboard, failing, flat, stored

PHOTO = Image.new("RGB", (64, 64), (20, 90, 160))
MASK = Image.new("L", (64, 64), 0)
MASK.paste(255, (0, 0, 32, 64))


class EditRunner(Runner):
    def edit(self, prompt: str = "x", **kwargs: Any) -> Result:
        image = kwargs.pop("image", PHOTO)
        if self._loop is None:
            result: Result = self.client.edit(image, prompt, **kwargs)
            return result
        return self._loop.run(self.client.edit(image, prompt, **kwargs))


@pytest.fixture(params=MODES)
def runner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EditRunner]:
    r = EditRunner(request.param, tmp_path)
    yield r
    r.close()


def text_only(name: str, price: float, handler: Any = checkerboard) -> MockBackend:
    be = backend(name, handler, price=price)
    be.operations = ("generate",)
    return be


def test_an_edit_never_goes_to_a_backend_that_only_generates(runner: EditRunner) -> None:
    cheap_text = text_only("text", 0.0001)
    editor = backend("editor", checkerboard, price=0.05)
    runner.open([cheap_text, editor])
    r = runner.edit(mask=MASK, seed=3)
    assert r.backend == "editor" and cheap_text.calls == 0
    assert "cannot edit images" in r.trace["excluded"]["text"]
    assert runner.generate().backend == "text"  # generations still go to the cheap one


def test_pinning_a_backend_that_cannot_edit_is_a_clear_error(runner: EditRunner) -> None:
    runner.open([text_only("text", 0.001), backend("editor", checkerboard, price=0.05)])
    with pytest.raises(ValidationError, match=r"`backend` 'text' cannot edit images .*that can: editor") as err:
        runner.edit(backend="text")
    assert err.value.field == "backend"


def test_no_backend_that_edits_is_refused_and_recorded(runner: EditRunner) -> None:
    runner.open([text_only("a", 0.001), text_only("b", 0.002)])
    with pytest.raises(NoFeasibleBackend, match="cannot edit images"):
        runner.edit()
    runner.client.recorder.flush()
    (row,) = list(runner.client._store.iter_records())
    assert row["operation"] == "edit" and row["outcome"]["error"] == "no_feasible_backend"
    assert row["input"]["width"] == 64 and len(row["input"]["sha256"]) == 64


def test_a_failed_edit_falls_back_to_another_editor_under_one_deadline(runner: EditRunner) -> None:
    runner.open([backend("first", failing(ServerError("down")), price=0.001),
                 text_only("text", 0.0001), backend("second", checkerboard, price=0.01)])
    r = runner.edit(sla={"deadline_s": 5})
    assert r.backend == "second"
    assert [a[:2] for a in attempts(r)] == [("first", "server_error"), ("second", None)]
    rows = runner.rows(r.request_id)
    assert {row["operation"] for row in rows} == {"edit"} and all(row["backend"] != "text" for row in rows)


def test_a_hedged_edit_races_another_editor(runner: EditRunner) -> None:
    stall = Stall(runner.mode)
    runner.open([backend("primary", stall, price=0.001), text_only("text", 0.0001),
                 backend("hedge", checkerboard, price=0.002)])
    r = runner.edit(sla={"deadline_s": 5, "hedge": True})
    assert r.backend == "hedge" and r.trace["hedge"]["winner"] == "hedge"
    assert stall.cancelled.wait(GRACE_S)
    assert stored(runner, r.request_id) == [(0, "primary", "cancelled", 0.001), (1, "hedge", None, 0.002)]


def test_the_cascade_escalates_an_edit_among_editors(runner: EditRunner) -> None:
    runner.open([backend("cheap", flat, price=0.001), text_only("text", 0.0001),
                 backend("hifi", checkerboard, price=0.04, strengths={"typography": 1.0})])
    r = runner.edit("fix the sign so it says 'OPEN'", mask=MASK, cascade=True)
    assert r.trace["cascade"]["first"] == "cheap" and r.trace["cascade"]["escalated"] is True
    assert r.backend == "hifi" and [a[0] for a in attempts(r)] == ["cheap", "hifi"]


def test_identical_concurrent_edits_share_one_execution_and_other_masks_do_not(tmp_path: Path) -> None:
    hold = Hold("sync")
    editor = backend("editor", hold, price=0.01)
    with Client({"router": {"exploration": 0.0}}, backends=[editor], store=f"sqlite:///{tmp_path / 't.db'}") as client:
        prepare = client._prepare_edit
        entered = threading.Semaphore(0)

        def counting(*args: Any, **kw: Any) -> Any:
            call = prepare(*args, **kw)
            entered.release()
            return call

        client._prepare_edit = counting  # type: ignore[method-assign]
        results: list[Result] = []
        jobs = [threading.Thread(target=lambda: results.append(client.edit(PHOTO, "same", mask=MASK, seed=1,
                                                                         dedupe=True))) for _ in range(4)]
        for t in jobs:
            t.start()
        for _ in jobs:
            assert entered.acquire(timeout=5)
        threading.Event().wait(0.2)  # from prepare to registration is microseconds
        hold.release()
        for t in jobs:
            t.join(5)
        assert editor.calls == 1 and len({r.request_id for r in results}) == 1
        other = Image.new("L", (64, 64), 255)
        assert client.edit(PHOTO, "same", mask=other, seed=1, dedupe=True).request_id != results[0].request_id
        assert editor.calls == 2


def test_async_dedupe_keys_edits_by_their_inputs(tmp_path: Path) -> None:
    from pixelroute import AsyncClient

    calls: list[str] = []

    async def handler(request: Any, deadline: Any) -> BackendOutput:
        calls.append(request.image.sha256)
        await asyncio.sleep(0.05)
        return checkerboard(request, deadline)

    async def main() -> list[Result]:
        async with AsyncClient({"telemetry": {"enabled": False}}, backends=[MockBackend("m", handler)]) as c:
            same = [c.edit(PHOTO, "p", seed=1, dedupe=True) for _ in range(3)]
            other = c.edit(Image.new("RGB", (64, 64), (1, 2, 3)), "p", seed=1, dedupe=True)
            return list(await asyncio.gather(*same, other))

    results = asyncio.run(main())
    assert len(calls) == 2 and len({r.request_id for r in results[:3]}) == 1
    assert results[3].request_id != results[0].request_id


def test_records_traces_and_png_metadata_say_it_was_an_edit(tmp_path: Path) -> None:
    with Client({"router": {"exploration": 0.0}}, backends=[MockBackend("m")],
                store=f"sqlite:///{tmp_path / 't.db'}") as client:
        r = client.edit(PHOTO, "paint the left half", mask=MASK, seed=9, strength=0.6)
        stored_trace = client.trace(r.request_id)
        client.recorder.flush()
        (row,) = list(client._store.iter_records())
    assert np.asarray(r.image)[5, 60].tolist() == [20, 90, 160], "the mock keeps what the mask keeps"
    assert row["operation"] == "edit" and row["params"]["strength"] == 0.6 and row["params"]["masked"] is True
    assert row["input"] == {"sha256": r.trace["input"]["sha256"], "width": 64, "height": 64, "format": "png",
                            "mask_sha256": r.trace["input"]["mask_sha256"]}
    assert stored_trace["operation"] == "edit" and stored_trace["input"] == row["input"]
    assert r.trace["operation"] == "edit"
    meta = png_metadata(r, "paint the left half", 0)
    path = save_png(r.image, tmp_path / "edited.png", meta)
    back = read_png_metadata(path)
    assert back["operation"] == "edit" and back["input"]["sha256"] == row["input"]["sha256"]
    with Image.open(path) as png:
        assert "Denoising strength: 0.6" in png.text["parameters"]


def test_records_from_before_edits_read_as_generations() -> None:
    old = {"request_id": "r", "attempt": 0, "ts": "2026-01-01T00:00:00Z", "backend": "a", "prompt": "a fox",
           "params": {"width": 64, "height": 64}, "outcome": {"ok": True, "latency_s": 1.0}}
    assert RouteRequest.from_record(old).operation == "generate"
    assert build_trace([old])["operation"] == "generate"
    edit = RouteRequest.from_record({**old, "operation": "edit", "params": {"strength": 0.4, "masked": True}})
    assert (edit.operation, edit.strength, edit.masked) == ("edit", 0.4, True)
    with pytest.raises(ValueError, match="`operation` must be one of generate, edit but is 'paint'"):
        RouteRequest.from_record({**old, "operation": "paint"})
    with pytest.raises(ValueError, match="`params.strength`"):
        RouteRequest.from_record({**old, "operation": "edit", "params": {"strength": 3}})


def test_the_policy_never_picks_a_backend_without_the_operation_even_as_best_effort() -> None:
    texter = BackendProfile("texter", price={"per_image": 0.001})
    editor = BackendProfile("editor", price={"per_image": 0.05}, operations=("generate", "edit"))
    options = [(texter, None), (editor, None)]
    preds = Predictions(latency_p50_s=np.array([1.0, 50.0]), latency_sigma=np.array([0.2, 0.2]),
                        p_fail=np.array([0.0, 0.0]), correction_s=np.array([1.0, 1.0]),
                        price_usd=np.array([0.001, 0.05]))
    rng = np.random.default_rng(0)
    config = PolicyConfig(exploration=0.0)
    fits = decide(options, preds, SLASpec(deadline_s=100), RouteContext(), config, rng, policy_name="t",
                  router_version="v", operation="edit")
    assert fits.backend == "editor" and "cannot edit" in (fits.candidates[0].why_not or "")
    late = decide(options, preds, SLASpec(deadline_s=5), RouteContext(), config, rng, policy_name="t",
                  router_version="v", operation="edit")
    assert late.backend == "editor" and late.predicted_to_miss  # best effort, still never the text-only one
    first = Predictions(*(a[:1] for a in (preds.latency_p50_s, preds.latency_sigma, preds.p_fail,
                                           preds.correction_s, preds.price_usd)))
    only_text = decide([(texter, None)], first, SLASpec(), RouteContext(), config, rng, policy_name="t",
                       router_version="v", operation="edit")
    assert only_text.backend is None
    assert decide(options, preds, SLASpec(), RouteContext(), config, rng, policy_name="t",
                  router_version="v").backend == "texter"


def test_async_edit_decodes_encoded_inputs_off_the_loop_with_the_same_checks() -> None:
    import io

    from pixelroute import AsyncClient

    buf = io.BytesIO()
    PHOTO.save(buf, format="PNG")
    loop_threads: list[int] = []

    async def main() -> tuple[Result, Result]:
        loop_threads.append(threading.get_ident())
        async with AsyncClient({"telemetry": {"enabled": False}}, backends=[MockBackend("m")]) as client:
            real = client._prepare_edit

            def spy(*args: Any, **kwargs: Any) -> Any:
                loop_threads.append(threading.get_ident())
                return real(*args, **kwargs)

            client._prepare_edit = spy  # type: ignore[method-assign]
            from_bytes = await client.edit(buf.getvalue(), "p", seed=2)
            from_pil = await client.edit(PHOTO, "p", seed=2)
            with pytest.raises(ValidationError) as err:
                await client.edit(b"not an image", "p")
            assert err.value.field == "image"
            return from_bytes, from_pil

    from_bytes, from_pil = asyncio.run(main())
    loop, bytes_thread, pil_thread, _bad = loop_threads
    assert bytes_thread != loop and pil_thread == loop  # bytes decoded in a worker thread, PIL checked in place
    assert from_bytes.trace["input"]["sha256"] == from_pil.trace["input"]["sha256"]
