"""``pixelroute init``: a commented starter config that validates, written atomically, never clobbering."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pixelroute import Client, load_settings
from pixelroute._config import embedded_default
from pixelroute.backends import create_backend
from pixelroute.cli import main


def test_init_writes_a_starter_that_validates_with_the_embedded_defaults_local_backends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert "wrote pixelroute.toml" in capsys.readouterr().out
    written = tmp_path / "pixelroute.toml"
    settings = load_settings(written)
    # the same tiny pipelines as Client(), at the same paths in the cache dir: built once, shared
    assert [b.model_dump() for b in settings.backends] == [b.model_dump() for b in embedded_default().backends]
    assert settings.telemetry.store == "sqlite:///pixelroute.db"
    assert settings.router.model == "router-model"
    text = written.read_text()
    assert "RANDOM weights" in text and text.count("\n#") > 20  # commented, for a person to read
    with Client.from_config(written) as client:  # builds, loads nothing yet
        assert set(client.backends) == {"local-fast", "local-quality"}


def uncommented_remote_backends(text: str) -> str:
    """The commented ``# [[backends]]`` blocks with their ``# `` taken off."""
    blocks = re.findall(r"^# \[\[backends\]\]\n(?:# \w+ = .*\n)+", text, flags=re.MULTILINE)
    return "\n".join(re.sub(r"^# ", "", block, flags=re.MULTILINE) for block in blocks)


def test_the_commented_remote_backends_validate_once_uncommented(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path)]) == 0
    text = (tmp_path / "pixelroute.toml").read_text()
    remote = uncommented_remote_backends(text)
    assert remote.count("[[backends]]") == 5
    (tmp_path / "all.toml").write_text(text + "\n" + remote)
    settings = load_settings(tmp_path / "all.toml")
    remotes = [b for b in settings.backends if b.kind != "diffusers"]
    assert {b.kind for b in remotes} == {"openai", "ideogram", "stability", "gemini", "replicate"}
    for b in remotes:  # a key named by its variable, a price from the presets
        assert getattr(b, "api_key_env", None), b.name
        assert create_backend(b).price.as_dict(), b.name


def test_init_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pixelroute.toml"
    target.write_text("# my own config\n")
    assert main(["init", str(target)]) == 1
    err = capsys.readouterr().err
    assert f"`{target}` already exists" in err and "--force" in err and "Traceback" not in err
    assert target.read_text() == "# my own config\n"
    assert main(["init", str(target), "--force"]) == 0
    assert load_settings(target).backends
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixelroute.toml"]  # no temp file left


def test_init_into_a_folder_that_does_not_exist_yet(tmp_path: Path) -> None:
    assert main(["init", f"{tmp_path / 'conf'}/"]) == 0
    assert load_settings(tmp_path / "conf" / "pixelroute.toml").backends


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pixelroute import _starter

    target = tmp_path / "pixelroute.toml"
    target.write_text("# keep me\n")

    def broken() -> str:
        raise OSError("disk full")

    monkeypatch.setattr(_starter, "starter_config", broken)
    with pytest.raises(OSError, match="disk full"):
        _starter.write_starter(target, force=True)
    assert target.read_text() == "# keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixelroute.toml"]


def test_paths_that_need_escaping_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    odd = tmp_path / 'a "quoted" dir\\with\tcontrol'
    monkeypatch.setenv("PIXELROUTE_CACHE_DIR", str(odd))
    assert main(["init", str(tmp_path / "p.toml")]) == 0
    models = [b.model for b in load_settings(tmp_path / "p.toml").backends]
    assert models == [str(odd / "tiny" / "sd15-fast"), str(odd / "tiny" / "sdxl-quality")]
