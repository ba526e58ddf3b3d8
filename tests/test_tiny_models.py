"""Tiny random-weight pipelines: real classes, deterministic, atomic, loadable the normal way."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
from _tiny_fixtures import tiny_models  # noqa: F401  (session fixture)

from pixelroute._errors import ValidationError
from pixelroute._tiny import MARKER, build_tiny, tiny_family
from pixelroute.cli import main


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize(
    ("family", "pipeline_class", "denoiser"),
    [("sd15", "StableDiffusionPipeline", "unet"), ("sdxl", "StableDiffusionXLPipeline", "unet"),
     ("sd3", "StableDiffusion3Pipeline", "transformer")],
)
def test_real_classes_saved_with_model_index(tiny_models, family: str, pipeline_class: str,  # noqa: F811
                                             denoiser: str) -> None:
    folder = tiny_models[family]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == pipeline_class and denoiser in index
    assert tiny_family(folder) == family
    assert "RANDOM" in json.loads((folder / MARKER).read_text())["note"]
    if family == "sd3":
        assert index["text_encoder_3"] == [None, None]  # T5 dropped, loaded back with None


def test_builds_are_deterministic_and_concurrent_builders_do_not_clash(
    tiny_models, tmp_path: Path  # noqa: F811
) -> None:
    target = tmp_path / "sd15"
    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_tiny("sd15", target)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [p.name for p in tmp_path.iterdir()] == ["sd15"]  # no temp folders left behind
    assert _digest(target) == _digest(tiny_models["sd15"])
    assert _digest(build_tiny("sd15", tmp_path / "other-seed", seed=1)) != _digest(target)


def test_unknown_family_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="`family`.*'sd9'"):
        build_tiny("sd9", tmp_path / "x")


def test_cli_make_tiny_builds_and_says_random_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "make-tiny", "--family", "sd3", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "built at" in out and "RANDOM weights" in out
    assert (tmp_path / "m" / "model_index.json").is_file()
    assert main(["models", "make-tiny", "--family", "sd3", "--out", str(tmp_path / "m")]) == 0
    assert "already present" in capsys.readouterr().out


def test_a_folder_an_older_builder_made_is_rebuilt_and_others_are_left_alone(tmp_path: Path) -> None:
    from pixelroute._tiny import BUILDER_VERSION

    target = build_tiny("sd15", tmp_path / "sd15")
    marker = json.loads((target / MARKER).read_text())
    assert marker["builder"] == BUILDER_VERSION
    (target / MARKER).write_text(json.dumps({k: v for k, v in marker.items() if k != "builder"}))  # version 1
    (target / "stale.txt").write_text("left by the old builder")
    assert build_tiny("sd15", target) == target
    assert not (target / "stale.txt").exists()
    assert json.loads((target / MARKER).read_text())["builder"] == BUILDER_VERSION
    # a pipeline folder build_tiny did not make (no marker) is never replaced
    (target / MARKER).unlink()
    (target / "mine.txt").write_text("a user's own pipeline")
    build_tiny("sd15", target)
    assert (target / "mine.txt").exists()


@pytest.mark.parametrize("damaged", ["[1, 2]", "{\"family\": [\"sd15\"]}", "\x00not json", "null"])
def test_a_damaged_marker_is_no_tiny_folder(tmp_path: Path, damaged: str) -> None:
    (tmp_path / MARKER).write_text(damaged)
    assert tiny_family(tmp_path) is None
