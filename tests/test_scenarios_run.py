"""Scenario runs on mock local and remote backends: the report, the scores, the feedback loop, the CLI.

The report is also rendered in headless Chromium (Debian's ``chromium``) and its screenshot
checked for the report's own colours and the inlined images.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from pixelroute import BackendOutput, Client, GenerateRequest, MockBackend, Price, ServerError
from pixelroute._config import load_settings
from pixelroute._deadline import Deadline
from pixelroute.backends.base import BackendSettings
from pixelroute.cli import main
from pixelroute.scenarios import (
    OcrScorer,
    Progress,
    Review,
    Scenario,
    ScenarioPrompt,
    Score,
    Suite,
    builtin_suite,
    run_scenarios,
    write_report,
)
from pixelroute.scenarios.suite import quoted_text
from pixelroute.scenarios.summary import scenario_metrics, winners
from tests._chromium import MARKDOWN_SYNTAX, chromium, rendered, screenshot
from tests._system_programs import system_program

MAGENTA = (255, 0, 255)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def letterer(request: GenerateRequest, deadline: Deadline) -> BackendOutput:
    """A 'perfect typography' backend: it paints the quoted text of the prompt, black on white."""
    img = Image.new("RGB", (256, 128), "white")
    text = quoted_text(request.prompt)
    if text:
        ImageDraw.Draw(img).text((10, 40), text, fill="black", font=_font(28))
    else:
        ImageDraw.Draw(img).rectangle((40, 20, 200, 100), fill=MAGENTA)
    return BackendOutput(images=[img], gpu_s=0.5, params={"width": 256, "height": 128})


def flaky(request: GenerateRequest, deadline: Deadline) -> BackendOutput:
    # fail on 3 of the 10 prompts of builtin_suite().limited(2): below the circuit breaker's 50% rate
    if request.prompt.split()[0] in ("three", "exactly", "one"):
        raise ServerError("upstream 503")
    return BackendOutput(images=[Image.new("RGB", (64, 64), (30, 120, 200))])


def build_client(tmp_path: Path) -> Client:
    def mk(name: str, handler: object, price: Price, local: bool) -> MockBackend:
        settings = BackendSettings(name=name, kind="mock", price=price, typical_latency_s=0.5)
        return MockBackend(name, handler, settings=settings, local=local)  # type: ignore[arg-type]

    backends = [
        mk("local-lettering", letterer, Price(per_gpu_second=0.0014), True),
        mk("remote-solid", None, Price(per_image=0.04), False),
        mk("remote-flaky", flaky, Price(per_image=0.02), False),
    ]
    cfg = load_settings({"router": {"exploration": 0.0, "seed": 1}})
    return Client(cfg, backends=backends, store=f"sqlite:///{tmp_path / 'telemetry.db'}")


def test_run_covers_every_scenario_and_backend_and_logs_through_the_client(tmp_path: Path) -> None:
    suite = builtin_suite().limited(2)
    stream = io.StringIO()
    reviewed: list[str] = []

    def reviewer(sample, image) -> Review | None:  # type: ignore[no-untyped-def]
        reviewed.append(sample.backend)
        return Review("edited", 30.0) if sample.backend == "remote-solid" else None

    with build_client(tmp_path) as client:
        result = run_scenarios(
            client, suite, seeds=2, base_seed=5, scorers={}, reviewer=reviewer, progress=Progress(1, stream)
        )
        assert len(result.samples) == 5 * 2 * 2 * 3
        assert {(s.scenario, s.backend) for s in result.samples} == {
            (sc, b)
            for sc in ["typography", "occlusion", "reflection", "counting", "control"]
            for b in ["local-lettering", "remote-solid", "remote-flaky"]
        }
        assert {s.seed for s in result.samples} == {5, 6}
        # every sample went through the client: its request id has a stored trace
        ok = [s for s in result.samples if s.ok]
        for s in ok[:3]:
            assert client.trace(s.request_id)["backend"] == s.backend
        # a reviewer's verdict went through the feedback API
        solid = next(s for s in ok if s.backend == "remote-solid")
        assert client.trace(solid.request_id)["correction"]["seconds"] == 30.0
        assert client.trace(solid.request_id)["correction"]["verdict"] == "edited"
    # nothing asked for ocr/clip scorers could run: they are reported as skipped, not silently dropped
    assert set(result.scorers_skipped) == {"ocr", "clip"}
    metrics = result.metrics()
    assert metrics["remote-solid"]["cost_usd"] == pytest.approx(0.04 * 20)
    assert (
        metrics["remote-solid"]["correction_s_mean"] == 30.0 and metrics["remote-solid"]["corrections"] == 20
    )
    assert metrics["local-lettering"]["gpu_s_per_request"] == pytest.approx(0.5)
    flaky_m = metrics["remote-flaky"]
    assert flaky_m["failure_rate"] == pytest.approx(6 / 20) and flaky_m["errors"] == {"server_error": 6}
    assert stream.getvalue().count("\n") == 60 and "FAILED server_error" in stream.getvalue()
    assert len(reviewed) == len(ok)


def test_report_html_and_json_hold_every_scenario_and_backend(tmp_path: Path) -> None:
    with build_client(tmp_path) as client:
        result = run_scenarios(client, builtin_suite().limited(1), scorers={}, progress=False)
    html_path, json_path = write_report(result, tmp_path / "out")
    html = html_path.read_text()
    for name in ["typography", "occlusion", "reflection", "counting", "control"]:
        assert f'data-scenario="{name}"' in html
    for backend in ["local-lettering", "remote-solid", "remote-flaky"]:
        assert html.count(f'<th data-backend="{backend}">') == 5  # one contact-sheet column per scenario
    # self-contained: images inline, no external resources
    assert html.count('src="data:image/png;base64,') == sum(s.ok for s in result.samples)
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    assert "failed:<br>server_error" in html
    data = json.loads(json_path.read_text())
    assert data["schema"] == "pixelroute.scenarios/1"
    assert data["scenarios"] == ["typography", "occlusion", "reflection", "counting", "control"]
    assert set(data["metrics"]) == {"local-lettering", "remote-solid", "remote-flaky"}
    assert len(data["samples"]) == 15 and all("thumbnail_png" not in s for s in data["samples"])
    assert oct(html_path.stat().st_mode & 0o777) == "0o644"
    assert not [p.name for p in html_path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_prompts_and_errors_are_escaped_in_the_html(tmp_path: Path) -> None:
    suite = Suite(
        "x",
        (
            Scenario(
                "odd",
                "<b>odd</b>",
                "desc & more",
                (ScenarioPrompt('a <script>alert(1)</script> "sign"'),),
                (),
            ),
        ),
    )
    with build_client(tmp_path) as client:
        result = run_scenarios(client, suite, scorers={}, progress=False, backends=["remote-solid"])
    html, _ = write_report(result, tmp_path / "o")
    text = html.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "&lt;b&gt;odd&lt;/b&gt;" in text


def test_unknown_backend_and_bad_seeds_are_refused(tmp_path: Path) -> None:
    from pixelroute import ValidationError

    with build_client(tmp_path) as client:
        with pytest.raises(ValidationError, match="`backends` must be among the configured .* 'nope'"):
            run_scenarios(client, builtin_suite(), backends=["nope"], progress=False)
        with pytest.raises(ValidationError, match="`seeds` must be at least 1 but is 0"):
            run_scenarios(client, builtin_suite(), seeds=0, progress=False)


def test_ocr_scores_legible_text_high_and_a_blank_image_low(tmp_path: Path) -> None:
    system_program("tesseract", package="tesseract-ocr", purpose="the typography OCR scorer")
    suite = builtin_suite().select(["typography"]).limited(3)
    with build_client(tmp_path) as client:
        result = run_scenarios(
            client,
            suite,
            backends=["local-lettering", "remote-solid"],
            scorers={"ocr": OcrScorer()},
            progress=False,
        )
    assert result.scorers_used == ["ocr"] and "clip" in result.scorers_skipped
    by_backend = {
        b: [sc for s in result.samples if s.backend == b for sc in s.scores] for b in result.backends
    }
    assert len(by_backend["local-lettering"]) == 3
    assert all(sc.value >= 0.8 for sc in by_backend["local-lettering"]), by_backend["local-lettering"]
    assert all(sc.value <= 0.2 for sc in by_backend["remote-solid"]), by_backend["remote-solid"]
    log = result.score_log()
    assert {e["scorer"] for e in log} == {"ocr"} and all(e["request_id"] for e in log)
    # OneIG-Bench's text metrics per scenario and backend: the letterer renders the text exactly
    text = {b: m["text"] for b, m in scenario_metrics(result)["typography"].items()}
    assert text["local-lettering"]["completion_rate"] >= 2 / 3 and text["local-lettering"]["word_accuracy"] >= 0.8
    assert text["remote-solid"]["word_accuracy"] == 0.0 and text["remote-solid"]["completion_rate"] == 0.0
    assert text["remote-solid"]["edit_distance"] == pytest.approx(
        sum(len(p.expect_text or "") for p in suite.scenarios[0].prompts) / 3)
    assert winners(result)[0]["winner"]["backend"] == "local-lettering"


def test_an_ocr_engine_that_is_missing_is_skipped_with_the_reason(tmp_path: Path) -> None:
    scorer = OcrScorer("no-such-tesseract-binary")
    assert "`no-such-tesseract-binary` is not on PATH" in (scorer.unavailable() or "")
    with build_client(tmp_path) as client:
        result = run_scenarios(
            client, builtin_suite().select(["typography"]).limited(1), scorers={"ocr": scorer}, progress=False
        )
    assert "not on PATH" in result.scorers_skipped["ocr"]
    assert all(not s.scores for s in result.samples)


def test_tiny_local_pipelines_and_a_mock_remote_produce_a_full_report(tmp_path: Path) -> None:
    """The embedded default's two real diffusers pipelines (random weights) beside a priced mock remote."""
    pytest.importorskip("diffusers")
    from pixelroute._config import embedded_default
    from pixelroute.backends import create_backend

    settings = embedded_default(tmp_path / "cache")
    remote = MockBackend(
        "remote-mock", settings=BackendSettings(name="remote-mock", kind="mock", price=Price(per_image=0.04))
    )
    backends = [create_backend(s) for s in settings.backends] + [remote]
    with Client(settings, backends=backends, store=f"sqlite:///{tmp_path / 't.db'}") as client:
        result = run_scenarios(client, builtin_suite().limited(1), scorers={}, progress=False)
    assert all(s.ok for s in result.samples), [
        (s.backend, s.error_message) for s in result.samples if not s.ok
    ]
    html, data = write_report(result, tmp_path / "out")
    page = html.read_text()
    for scenario in ["typography", "occlusion", "reflection", "counting", "control"]:
        assert f'data-scenario="{scenario}"' in page
    for backend in ["local-fast", "local-quality", "remote-mock"]:
        assert page.count(f'<td class="card" data-backend="{backend}"') == 5
    metrics = json.loads(data.read_text())["metrics"]
    # local pipelines are priced by GPU-seconds they really used; the remote by the image
    assert (
        metrics["local-fast"]["gpu_s_per_request"] > 0 and metrics["remote-mock"]["gpu_s_per_request"] is None
    )
    assert metrics["remote-mock"]["cost_usd"] == pytest.approx(0.2)


def tiny_clip(folder: Path) -> Path:
    """A random-weight CLIP model with a local tokenizer, saved like a hub snapshot (nothing downloaded)."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    from pixelroute._tiny import _clip_config, _write_clip_tokenizer

    _write_clip_tokenizer(folder)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    config = CLIPConfig(
        text_config=_clip_config(32, 2).to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )
    CLIPModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(
        image_processor=images, tokenizer=CLIPTokenizer.from_pretrained(str(folder))
    ).save_pretrained(folder)
    return folder


def test_clip_scorer_runs_from_a_local_model_folder_and_is_skipped_without_one(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from pixelroute.scenarios import ClipScorer

    assert "neither a local folder nor in the hub cache" in (
        ClipScorer("no-org/no-such-clip").unavailable() or ""
    )
    scorer = ClipScorer(tiny_clip(tmp_path / "clip"))
    assert scorer.unavailable() is None
    with build_client(tmp_path) as client:
        result = run_scenarios(
            client,
            builtin_suite().select(["control"]).limited(2),
            backends=["local-lettering"],
            scorers={"clip": scorer},
            progress=False,
        )
    assert result.scorers_used == ["clip"] and result.scorers_skipped == {}
    scores = [sc for s in result.samples for sc in s.scores]
    assert len(scores) == 2 and all(sc.scorer == "clip" and 0.0 <= sc.value <= 1.0 for sc in scores)


class InkScorer:
    """A stand-in quality scorer for the summary's rules: the share of pixels that are not white."""

    name = "ink"

    def unavailable(self) -> str | None:
        return None

    def score(self, image: Image.Image, item: ScenarioPrompt) -> Score:
        grey = image.convert("L")
        inked = sum(n for value, n in enumerate(grey.histogram()) if value < 250)
        return Score(self.name, inked / (grey.width * grey.height))


def test_each_scenario_has_a_winner_at_a_price(tmp_path: Path) -> None:
    ink = ("ink",)
    suite = Suite("s", (
        # remote-flaky fails on "three ...": its failure scores 0, so the dearer remote-solid wins
        Scenario("fails", "Fails", "", (ScenarioPrompt("a red apple"), ScenarioPrompt("three bicycles")), ink),
        # both remotes score 1.0: the tie goes to the cheaper remote-flaky
        Scenario("ties", "Ties", "", (ScenarioPrompt("a red apple"), ScenarioPrompt("a blue car")), ink),
        # no scorer: the highest success rate at the lowest price (local-lettering, 0.0007 per image)
        Scenario("unscored", "Unscored", "", (ScenarioPrompt("a red apple"), ScenarioPrompt("one cat")), ()),
    ))
    with build_client(tmp_path) as client:
        result = run_scenarios(client, suite, scorers={"ink": InkScorer()}, progress=False)
    rows = {r["scenario"]: r for r in winners(result)}
    assert rows["fails"]["winner"]["backend"] == "remote-solid" and rows["fails"]["decided_by"] == "ink"
    assert rows["fails"]["runner_up"]["backend"] == "remote-flaky"
    assert rows["fails"]["runner_up"]["score"] == pytest.approx(0.5) and rows["fails"]["winner"]["score"] == 1.0
    assert (rows["ties"]["winner"]["backend"], rows["ties"]["runner_up"]["backend"]) == ("remote-flaky", "remote-solid")
    assert rows["ties"]["winner"]["cost_usd_per_image"] == pytest.approx(0.02)
    assert rows["unscored"]["winner"]["backend"] == "local-lettering"
    assert rows["unscored"]["decided_by"] == "success rate, then price"
    assert rows["unscored"]["winner"]["cost_usd_per_image"] == pytest.approx(0.0014 * 0.5)
    per = scenario_metrics(result)["fails"]["remote-flaky"]
    assert (per["requests"], per["images"], per["failure_rate"]) == (2, 1, 0.5)
    assert per["cost_usd_per_image"] == pytest.approx(0.02)  # a failed call that charged nothing
    html, data = write_report(result, tmp_path / "out")
    page = html.read_text()
    assert '<tr data-scenario="fails">' in page and '<span class="winner">remote-solid</span>' in page
    doc = json.loads(data.read_text())
    assert [r["winner"]["backend"] for r in doc["winners"]] == ["remote-solid", "remote-flaky", "local-lettering"]
    assert doc["by_scenario"]["ties"]["remote-solid"]["score_per_request"] == {"ink": 1.0}


CONFIG = """
[telemetry]
store = "sqlite:///{db}"
[router]
exploration = 0.0
[[backends]]
name = "tiny-mock"
kind = "mock"
local = true
price = {{ per_gpu_second = 0.0014 }}
[[backends]]
name = "remote-mock"
kind = "mock"
price = {{ per_image = 0.04 }}
[[backends]]
name = "down-mock"
kind = "mock"
failure = "server_error"
price = {{ per_image = 0.02 }}
"""


def test_cli_run_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "t.db"))
    out = tmp_path / "report"
    code = main(
        [
            "scenarios",
            "run",
            "--config",
            str(cfg),
            "--backends",
            "tiny-mock,down-mock",
            "--max-per-scenario",
            "1",
            "--seeds",
            "2",
            "--out",
            str(out),
            "--tesseract",
            "no-such-ocr",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert f"report: {out / 'report.html'}" in captured.out
    assert "scorer ocr skipped" in captured.out
    assert "[##############################] 20/20" in captured.err
    data = json.loads((out / "report.json").read_text())
    assert data["backends"] == ["tiny-mock", "down-mock"] and data["seeds"] == [0, 1]
    assert data["metrics"]["down-mock"]["failure_rate"] == 1.0
    assert data["metrics"]["tiny-mock"]["failure_rate"] == 0.0


def test_cli_review_sends_verdicts_through_the_feedback_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "t.db"))
    # a person answers: edited in 40 s, then a typo (asked again), then accepted
    monkeypatch.setattr("sys.stdin", io.StringIO("e 40\nmaybe\na\n"))
    out = tmp_path / "r"
    code = main(["scenarios", "run", "--config", str(cfg), "--backends", "tiny-mock", "--scenarios",
                 "counting,control", "--max-per-scenario", "1", "--review", "--quiet", "--out", str(out)])
    assert code == 0
    assert "`verdict` must be a, e, r or s but is 'maybe'" in capsys.readouterr().err
    samples = json.loads((out / "report.json").read_text())["samples"]
    assert [s["review"] for s in samples] == [{"verdict": "edited", "seconds": 40.0},
                                              {"verdict": "accepted", "seconds": 0.0}]
    saved = sorted(p.name for p in (out / "review").iterdir())
    assert saved == sorted(f"{s['request_id']}.png" for s in samples)
    from pixelroute.telemetry import open_store

    with open_store(f"sqlite:///{tmp_path / 't.db'}") as store:
        history = store.correction_history(samples[0]["request_id"])
    assert [(h["seconds"], h["verdict"]) for h in history] == [(40.0, "edited")]


def test_cli_list_and_bad_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "list"]) == 0
    assert "typography" in capsys.readouterr().out
    assert main(["scenarios", "list", "--suite", str(tmp_path / "nope.jsonl")]) == 1
    assert "`suite` must be `builtin` or an existing file" in capsys.readouterr().err


# -------------------------------------------------------------------------- headless Chromium


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """A screenshot (``scenario-report.png`` in the tmp dir) for a person; the rendered text and images checked."""
    exe = chromium()
    with build_client(tmp_path) as client:
        # OCR when tesseract is installed (the report then shows its scores); skipped with the reason otherwise
        result = run_scenarios(client, builtin_suite().limited(2), scorers={"ocr": OcrScorer()}, progress=False)
    html, _ = write_report(result, tmp_path / "out")
    seen = rendered(exe, html, tmp_path)
    assert not MARKDOWN_SYNTAX.search(seen["text"]), MARKDOWN_SYNTAX.search(seen["text"])
    assert "Who wins each scenario" in seen["text"] and "success rate, then price" in seen["text"]
    assert len(seen["images"]) == sum(s.ok for s in result.samples) and all(i["loaded"] for i in seen["images"])
    img = screenshot(exe, html, tmp_path, "scenario-report.png", (1280, 2400))
    assert img.size == (1280, 2400)
    colours = img.getcolors(maxcolors=1 << 20) or []
    counts = {c: n for n, c in colours}
    assert counts.get((0x1D, 0x2B, 0x3A), 0) > 20_000  # the header bar was laid out and painted
    assert counts.get(MAGENTA, 0) > 2_000  # an inlined thumbnail decoded and shows
    assert len(colours) > 200  # text was drawn (anti-aliasing makes many shades), not a blank page
