"""The command line fails cleanly: a missing extra is named, a closed pipe ends quietly, a reading
command never creates a store, and ``serve`` checks its config before uvicorn starts.

Missing extras are simulated by putting ``None`` in ``sys.modules`` for the module and its
submodules (Python then refuses the import with ``ModuleNotFoundError``, as when it is absent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pixelroute._errors import ConfigError, MissingExtra
from pixelroute._extras import EXTRA_OF, missing_extra, require
from pixelroute.cli import EXIT_PIPE_CLOSED, main
from pixelroute.telemetry import example_record, open_store
from tests.test_telemetry_store import _drop_schema, _postgres_or_skip

REPO = Path(__file__).resolve().parents[1]


def block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` (and their loaded submodules) unimportable for this test."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(f"{m}.") for m in modules):
            monkeypatch.setitem(sys.modules, name, None)
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def pixelroute(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixelroute", *args], capture_output=True, text=True,
                          timeout=120, cwd=kwargs.pop("cwd", REPO), **kwargs)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> str:
    """A store with 400 records (~350 KB of JSONL: more than a pipe holds)."""
    url = f"sqlite:///{tmp_path / 'telemetry.db'}"
    with open_store(url) as store:
        store.write_batch([example_record(f"req-{i:04d}", ts=f"2026-11-25T19:00:{i % 60:02d}.{i:03d}Z")
                           for i in range(400)])
    return url


# ----------------------------------------------------------------------------- missing extras


def test_every_extra_in_pyproject_has_its_import_names_mapped() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRA_OF.values()) == set(extras) - {"dev"}


def test_serve_without_uvicorn_names_the_extra_without_a_traceback() -> None:
    code = "import sys; sys.modules['uvicorn'] = None; from pixelroute.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, "serve", "--no-auth"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "pixelroute: error: `pixelroute serve` needs the optional `serve` extra (uvicorn is not installed): "
        "pip install 'pixelroute[serve]'"
    )


@pytest.mark.parametrize(
    ("argv", "blocked", "extra"),
    [
        (["train", "--jsonl", "x.jsonl", "--out", "m", "--dask-scheduler", "tcp://127.0.0.1:1"], "distributed",
         "dask"),
        (["train", "--jsonl", "x.jsonl", "--out", "m", "--dask-scheduler", "tcp://127.0.0.1:1"], "sklearn", "dask"),
        (["stats", "--store", "postgresql://nobody@127.0.0.1:1/db"], "psycopg", "postgres"),
        (["telemetry", "export", "--store", "postgresql://nobody@127.0.0.1:1/db"], "psycopg", "postgres"),
        (["serve", "--no-auth"], "starlette", "serve"),
    ],
)
def test_a_command_whose_extra_is_missing_says_which_to_install(
    argv: list[str], blocked: str, extra: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    block(monkeypatch, blocked)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"needs the optional `{extra}` extra ({blocked} is not installed)" in err
    assert f"pip install 'pixelroute[{extra}]'" in err


def _gateway() -> Any:
    from pixelroute.gateway import create_app

    return create_app()


def _flask() -> Any:
    from pixelroute.contrib.flask import Pixelroute

    return Pixelroute().init_app(object())  # type: ignore[arg-type] # refused before the app is looked at


def _rq() -> Any:
    from pixelroute.contrib.rq import make_queue

    return make_queue(None)


def _django() -> Any:
    from pixelroute.contrib.django import get_settings

    return get_settings()


def _aiohttp() -> Any:
    import httpx

    from pixelroute.backends._http_settings import aiohttp_transport

    return aiohttp_transport(httpx.Limits(), "remote-a")


def _postgres() -> Any:
    return open_store("postgresql://nobody@127.0.0.1:1/db")


@pytest.mark.parametrize(
    ("call", "blocked", "extra", "needed_by"),
    [
        (_gateway, "starlette", "serve", "pixelroute.gateway"),
        (_flask, "flask", "flask", "pixelroute.contrib.flask"),
        (_rq, "rq", "queue", "pixelroute.contrib.rq"),
        (_django, "django", "django", "pixelroute.contrib.django"),
        (_aiohttp, "httpx_aiohttp", "aiohttp", 'backend `remote-a`: `async_transport = "aiohttp"`'),
        (_postgres, "psycopg", "postgres", "`telemetry.store` 'postgresql://nobody@127.0.0.1:1/db'"),
    ],
)
def test_an_api_whose_extra_is_missing_raises_an_error_naming_it(
    call: Callable[[], Any], blocked: str, extra: str, needed_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    block(monkeypatch, blocked)
    with pytest.raises(MissingExtra) as caught:
        call()
    assert str(caught.value) == (
        f"{needed_by} needs the optional `{extra}` extra ({blocked} is not installed): "
        f"pip install 'pixelroute[{extra}]'"
    )
    # code written against the plain errors still catches it
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ModuleNotFoundError)
    assert (caught.value.name, caught.value.extra) == (blocked, extra)


def test_router_training_on_dask_names_the_extra_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from pixelroute.router import train

    block(monkeypatch, "distributed")
    with pytest.raises(ModuleNotFoundError, match=r"needs the optional `dask` extra .*pixelroute\[dask\]") as caught:
        train([], "unused", dask_scheduler="tcp://127.0.0.1:1")
    # ...and keeps the module's name, so the command line maps it the same way
    assert caught.value.name == "distributed"
    assert missing_extra(caught.value, "x") is not None


def test_an_unrelated_missing_module_is_not_blamed_on_an_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing_extra(ModuleNotFoundError("No module named 'numpy'", name="numpy"), "x") is None
    with pytest.raises(ValueError, match="no optional extra named 'nope'"):
        require("nope", "x")


# ----------------------------------------------------------------------------- a closed stdout


def _closed_pipe() -> int:
    """The write end of a pipe whose reader has already gone (as after `| head` exits)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        # argparse's own writes (help, version) ignore a failed write: it exits 0
        (["--help"], 0),
        (["train", "--help"], 0),
        (["--version"], 0),
        (["telemetry", "export", "--store", "{store}"], EXIT_PIPE_CLOSED),
        (["stats", "--store", "{store}"], EXIT_PIPE_CLOSED),
        (["stats", "--json", "--store", "{store}"], EXIT_PIPE_CLOSED),
        (["trace", "req-0001", "--store", "{store}"], EXIT_PIPE_CLOSED),
        (["scenarios", "list"], EXIT_PIPE_CLOSED),
    ],
)
def test_a_command_writing_into_a_closed_pipe_ends_quietly(argv: list[str], code: int, sqlite_store: str) -> None:
    write_end = _closed_pipe()
    try:
        done = subprocess.run([sys.executable, "-m", "pixelroute", *(a.format(store=sqlite_store) for a in argv)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, cwd=REPO)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    assert done.returncode == code


def test_telemetry_export_into_head(sqlite_store: str) -> None:
    """The issue's own case: a real shell pipeline whose reader leaves after one line."""
    script = f"set -o pipefail; {sys.executable} -m pixelroute telemetry export --store {sqlite_store} | head -n 1"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.stdout.startswith('{"schema"') and done.stdout.count("\n") == 1
    assert done.stderr == ""  # no traceback, and no "exported N records": the export did not finish
    assert done.returncode == EXIT_PIPE_CLOSED  # what pipefail reports for the writer


# ----------------------------------------------------------------------------- reading never creates


READERS = [
    ["stats", "--store", "{url}"],
    ["telemetry", "export", "--store", "{url}"],
    ["trace", "req-0001", "--store", "{url}"],
    ["train", "--store", "{url}", "--out", "{tmp}/model"],
]


@pytest.mark.parametrize("argv", READERS, ids=lambda a: " ".join(a[:2]))
def test_a_reading_command_refuses_a_sqlite_store_that_does_not_exist(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "nonexist" / "dir"
    url = f"sqlite:///{folder / 'x.db'}"
    assert main([a.format(url=url, tmp=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err
    assert f"`telemetry.store` '{url}' does not exist" in err and "never create a store" in err
    assert not (tmp_path / "nonexist").exists()
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("argv", READERS, ids=lambda a: " ".join(a[:2]))
def test_a_reading_command_refuses_a_file_pixelroute_never_wrote(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    assert main([a.format(url=f"sqlite:///{empty}", tmp=tmp_path) for a in argv]) == 1
    assert "holds no pixelroute telemetry (no tables)" in capsys.readouterr().err
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_a_reading_command_refuses_a_postgres_schema_with_no_tables(capsys: pytest.CaptureFixture[str]) -> None:
    import psycopg

    url = _postgres_or_skip()
    schema = url.rsplit("schema=", 1)[1]
    try:
        for argv in (["stats", "--store", url], ["telemetry", "export", "--store", url]):
            assert main(argv) == 1
            assert "holds no pixelroute telemetry (no tables)" in capsys.readouterr().err
        with psycopg.connect(url.rsplit("?", 1)[0]) as conn:
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchall()
        assert found == []  # the schema was not created
        with open_store(url):  # a writer creates it, after which readers see an empty store
            pass
        assert main(["stats", "--json", "--store", url]) == 0
        assert '"attempts": 0' in capsys.readouterr().out
    finally:
        _drop_schema(url)


def test_the_default_store_is_not_created_by_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats"]) == 1  # the cache dir's telemetry.db (PIXELROUTE_CACHE_DIR is tmp_path/cache)
    assert f"`telemetry.store` 'sqlite:///{tmp_path / 'cache' / 'telemetry.db'}' does not exist" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "cache").exists()


def test_reading_commands_read_an_existing_store(sqlite_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--json", "--store", sqlite_store]) == 0
    assert '"attempts": 400' in capsys.readouterr().out
    assert main(["trace", "req-0007", "--store", sqlite_store]) == 0
    assert "request   req-0007" in capsys.readouterr().out
    assert main(["trace", "req-nope", "--store", sqlite_store]) == 1
    assert "no request with id `req-nope` was recorded" in capsys.readouterr().err


def test_a_writing_command_still_creates_its_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(example_record("req-a")) + "\n")
    url = f"sqlite:///{tmp_path / 'new' / 'dir' / 'x.db'}"
    assert main(["telemetry", "import", str(src), "--store", url]) == 0
    assert main(["stats", "--json", "--store", url]) == 0
    assert '"attempts": 1' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--jsonl", "{tmp}/nope.jsonl", "--out", "{tmp}/m"], "`--jsonl` '{tmp}/nope.jsonl' cannot be read"),
        (["route", "--config", "{config}", "--requests", "{tmp}/nope.jsonl", "--out", "{tmp}/o.jsonl"],
         "`--requests` '{tmp}/nope.jsonl' cannot be read"),
    ],
)
def test_a_missing_input_file_is_named(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[backends]]\nname = "m"\nkind = "mock"\n')
    assert main([a.format(tmp=tmp_path, config=config) for a in argv]) == 1
    assert message.format(tmp=tmp_path) + ": No such file or directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


# ----------------------------------------------------------------------------- serve checks its config first


def test_serve_with_a_missing_config_fails_before_uvicorn_starts(tmp_path: Path) -> None:
    done = pixelroute("serve", "--no-auth", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 1
    assert done.stderr == f"pixelroute: error: config file `{tmp_path / 'missing.toml'}` does not exist\n"
    assert done.stdout == ""  # uvicorn never said a word


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[router\n", "is not valid TOML"),
        ('[telemetry]\nstore = "sqlite:///x.db"\n', "no backends configured"),
        ('[telemetry]\nstore = "mysql://db"\n[[backends]]\nname = "m"\nkind = "mock"\n',
         "`telemetry.store` must start with sqlite:/// or postgresql://"),
    ],
)
def test_serve_names_the_config_file_it_refuses(
    toml: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    assert main(["serve", "--no-auth", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"config file `{config}`" in err and message in err
