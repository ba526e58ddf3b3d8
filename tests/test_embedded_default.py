"""The embedded default: two tiny local pipelines whose cold-start routing follows the hybrid rule."""

from __future__ import annotations

from pathlib import Path

from pixelroute._config import embedded_default
from pixelroute.backends import create_backend
from pixelroute.router import BackendProfile, RouteContext, Router, RouteRequest, SLASpec


def decide(prompt: str, tmp_path: Path) -> str | None:
    settings = embedded_default(tmp_path)
    profiles = [BackendProfile.from_dict(create_backend(b).describe()) for b in settings.backends]
    router = Router.cold_start(exploration=0.0)
    decision = router.decide(RouteRequest(prompt, width=64, height=64), SLASpec(deadline_s=30), profiles,
                             RouteContext())
    return decision.backend


def test_loading_the_default_builds_nothing(tmp_path: Path) -> None:
    settings = embedded_default(tmp_path)
    assert [b.name for b in settings.backends] == ["local-fast", "local-quality"]
    assert not (tmp_path / "tiny").exists()  # the tiny pipelines are built on first use only


def test_simple_stylistic_prompts_take_the_fast_path(tmp_path: Path) -> None:
    for prompt in ("a watercolor painting of a lighthouse at dusk", "an oil painting of a quiet harbour"):
        assert decide(prompt, tmp_path) == "local-fast", prompt


def test_typography_and_dense_scenes_take_the_high_fidelity_path(tmp_path: Path) -> None:
    for prompt in ("a shop sign that says 'OPEN 24 HOURS' above a glass door",
                   "three red apples behind a glass vase, reflected in a mirror"):
        assert decide(prompt, tmp_path) == "local-quality", prompt
