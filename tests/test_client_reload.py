"""A running client switches from the cold-start policy to a trained artifact as soon as one is written."""

from __future__ import annotations

from pathlib import Path

from pixelroute import Client, MockBackend, Price
from pixelroute._config import load_settings
from pixelroute.backends.base import BackendSettings
from pixelroute.router import simulate, train
from pixelroute.router.simulate import DEFAULT_BACKENDS


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cold_start_client_picks_up_a_new_artifact_without_restart(tmp_path: Path) -> None:
    model_dir = tmp_path / "router-model"
    clock = Clock()
    settings = load_settings({"router": {"model": str(model_dir), "exploration": 0.0}})
    be = MockBackend("m", settings=BackendSettings(name="m", kind="mock", price=Price(per_image=0.01),
                                                   typical_latency_s=0.1))
    with Client(settings, backends=[be], store=f"sqlite:///{tmp_path / 't.db'}", clock=clock) as client:
        first = client.generate("a red bicycle", width=64, height=64)
        assert first.trace["decision"]["policy"] == "cold_start"

        train(simulate(1500, seed=3), model_dir, profiles=[b.profile() for b in DEFAULT_BACKENDS])
        clock.now += 2.0  # the client looks for the artifact at most once a second
        second = client.generate("a red bicycle", width=64, height=64)
    assert second.trace["decision"]["policy"] == "lgbm"
    assert second.trace["decision"]["router_version"].startswith("lgbm-")
