"""Warm-up: `Backend.loaded`/`warmup`, `Client.warmup`, `pixelroute warmup`, and `[execution] preload`
in the gateway, Flask and Django (and under gunicorn --preload, across the fork), on tiny pipelines."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pixelroute import AsyncClient, Client
from pixelroute._config import load_settings
from pixelroute._deadline import CancelToken, Deadline
from pixelroute._errors import Cancelled, ConfigError, DeadlineExceeded, PixelrouteError, ValidationError
from pixelroute._types import GenerateRequest
from pixelroute.backends import create_backend
from pixelroute.backends._pipeline_cache import PipelineCache
from pixelroute.backends.base import MockBackend
from pixelroute.backends.diffusers import DiffusersBackend, DiffusersSettings
from pixelroute.cli import build_parser, main
from tests._import_root import SUBPROCESS_PYTHONPATH

REPO = Path(__file__).resolve().parents[1]


def tiny(tmp_path: Path, name: str = "tiny-fast", family: str = "sd15", **extra: Any) -> dict[str, Any]:
    """A diffusers backend whose tiny model is built at first load (as in the embedded default)."""
    return {"name": name, "kind": "diffusers", "model": str(tmp_path / "models" / name), "make_tiny": family,
            "device": "cpu", **extra}


def settings(tmp_path: Path, *backends: dict[str, Any], preload: bool = False) -> dict[str, Any]:
    return {
        "telemetry": {"store": f"sqlite:///{tmp_path / 'warmup.db'}"},
        "execution": {"preload": preload},
        "backends": list(backends) or [tiny(tmp_path), {"name": "remote", "kind": "mock"}],
    }


@pytest.fixture
def cache() -> Iterator[PipelineCache]:
    own = PipelineCache()
    yield own
    own.close()


def backend(tmp_path: Path, cache: PipelineCache, **kw: Any) -> DiffusersBackend:
    return DiffusersBackend(DiffusersSettings(**tiny(tmp_path, **kw)), pipeline_cache=cache)


# -- the backend hooks ---------------------------------------------------------------------------


def test_loaded_is_false_until_warmup_builds_and_loads_then_warmup_is_idempotent(
    tmp_path: Path, cache: PipelineCache
) -> None:
    b = backend(tmp_path, cache)
    assert b.loaded is False and not (tmp_path / "models" / "tiny-fast").exists()  # `loaded` builds nothing
    took = b.warmup()
    assert took > 0 and b.loaded is True
    assert (tmp_path / "models" / "tiny-fast" / "model_index.json").is_file()  # make_tiny built it
    assert len(cache.loaded()) == 1
    again = b.warmup()
    assert again >= 0 and b.loaded is True and len(cache.loaded()) == 1  # nothing loaded twice
    out = b.generate(GenerateRequest(prompt="a red bicycle", seed=1), Deadline(None))
    assert out.images[0].size == (64, 64)
    b.close()
    assert b.loaded is False
    with pytest.raises(PixelrouteError, match="`tiny-fast` is closed"):
        b.warmup()


def test_loaded_turns_false_when_the_memory_budget_evicts_the_pipeline(tmp_path: Path, cache: PipelineCache) -> None:
    # tiny sdxl holds ~10.8 MB and tiny sd15 ~6.7 MB: a 12 MB budget keeps one of them
    big = backend(tmp_path, cache, name="big", family="sdxl", memory_budget_gb=0.012)
    small = backend(tmp_path, cache, name="small", family="sd15")
    big.warmup()
    assert big.loaded
    small.warmup()
    assert small.loaded and not big.loaded  # least recently used, evicted
    big.warmup()
    assert big.loaded and not small.loaded
    big.close()
    small.close()


def test_loaded_sees_a_pipeline_another_backend_loaded(tmp_path: Path, cache: PipelineCache) -> None:
    first = backend(tmp_path, cache, name="same", default_steps=2)
    second = DiffusersBackend(
        DiffusersSettings(**{**tiny(tmp_path, name="same"), "name": "same-more-steps", "default_steps": 4}),
        pipeline_cache=cache,
    )
    first.warmup()
    assert second.loaded  # same model, device and dtype: one pipeline, already in memory
    assert len(cache.loaded()) == 1
    first.close()
    second.close()


def test_warmup_deadline_raises_while_the_load_goes_on_in_the_background(
    tmp_path: Path, cache: PipelineCache
) -> None:
    from pixelroute import _tiny

    b = backend(tmp_path, cache)
    times = iter([0.0, 0.0])  # set at 0, the first look sees time left; every later one sees it gone
    deadline = Deadline(1.0, clock=lambda: next(times, 100.0))
    with _tiny._BUILD_LOCK:  # hold the tiny build, so the load cannot finish before the deadline
        with pytest.raises(DeadlineExceeded, match="`tiny-fast` did not load before the deadline"):
            b.warmup(deadline)
        assert not b.loaded
    until = time.monotonic() + 120
    while not b.loaded and time.monotonic() < until:
        time.sleep(0.05)
    assert b.loaded  # the load went on and landed
    b.close()


def test_warmup_refuses_a_spent_deadline_or_a_cancelled_token_before_loading(
    tmp_path: Path, cache: PipelineCache
) -> None:
    b = backend(tmp_path, cache)
    with pytest.raises(DeadlineExceeded, match="before the warm-up started"):
        b.warmup(Deadline(0.0))
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled, match="cancelled before it started"):
        b.warmup(Deadline(None, cancel=token))
    assert not b.loaded and cache.loaded() == []
    assert asyncio.run(b.awarmup()) > 0 and b.loaded
    assert asyncio.run(b.awarmup()) == 0.0  # loaded: no thread hop, nothing to do
    b.close()


def test_describe_reports_typical_load_s_from_the_setting_the_family_or_none(tmp_path: Path) -> None:
    assert DiffusersBackend(DiffusersSettings(**tiny(tmp_path))).describe()["typical_load_s"] == 0.2
    own = DiffusersBackend(DiffusersSettings(**tiny(tmp_path, typical_load_s=3.5)))
    assert own.describe()["typical_load_s"] == 3.5
    # hub ids: the estimate from the family's size (nothing is imported or downloaded for it)
    estimates = {
        model: DiffusersBackend(DiffusersSettings(name="x", kind="diffusers", model=model)).describe()["typical_load_s"]
        for model in ("runwayml/stable-diffusion-v1-5", "stabilityai/stable-diffusion-xl-base-1.0",
                      "stabilityai/stable-diffusion-3.5-large", "black-forest-labs/FLUX.1-schnell")
    }
    assert list(estimates.values()) == [2.6, 6.4, 22.2, 27.0]
    on_cpu = DiffusersSettings(name="x", kind="diffusers", model="runwayml/stable-diffusion-v1-5", device="cpu")
    assert DiffusersBackend(on_cpu).describe()["typical_load_s"] == 3.9  # float32: twice the bytes, no copy
    remote = MockBackend("remote")
    assert remote.describe()["typical_load_s"] is None and remote.loaded and remote.warmup() == 0.0


def test_a_remote_backend_warms_up_without_any_network_call(tmp_path: Path) -> None:
    # port 9 (discard) on loopback: any connection attempt would fail loudly
    s = load_settings({"backends": [{"name": "webui", "kind": "a1111", "base_url": "http://127.0.0.1:9"}]})
    remote = create_backend(s.backends[0])
    assert remote.loaded and remote.warmup() == 0.0 and asyncio.run(remote.awarmup()) == 0.0
    assert remote.describe()["typical_load_s"] is None
    remote.close()


def test_typical_load_s_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"`backends\[0\]\.typical_load_s`.*-1"):
        load_settings({"backends": [{"name": "m", "kind": "mock", "typical_load_s": -1}]})


# -- Client and AsyncClient ------------------------------------------------------------------------


def test_client_warmup_loads_all_or_the_named_backends_and_refuses_unknown_names(tmp_path: Path) -> None:
    with Client(settings(tmp_path, tiny(tmp_path), tiny(tmp_path, name="tiny-quality", family="sdxl"),
                         {"name": "remote", "kind": "mock"})) as client:
        assert not client.backends["tiny-fast"].loaded
        took = client.warmup(["tiny-fast"])
        assert list(took) == ["tiny-fast"] and took["tiny-fast"] > 0
        assert client.backends["tiny-fast"].loaded and not client.backends["tiny-quality"].loaded
        every = client.warmup()
        assert list(every) == ["tiny-fast", "tiny-quality", "remote"] and every["remote"] == 0.0
        assert all(b.loaded for b in client.backends.values())
        with pytest.raises(ValidationError, match=r"`backends` must name configured backends.*'nope'") as bad:
            client.warmup(["tiny-fast", "nope"])
        assert (bad.value.field, bad.value.value) == ("backends", "nope")
        with pytest.raises(ValidationError, match=r"`backends` must be a list of backend names but is 'tiny-fast'"):
            client.warmup("tiny-fast")
    with pytest.raises(PixelrouteError, match="closed"):
        client.warmup()


def test_client_warmup_failure_names_the_backend_and_chains_the_cause(tmp_path: Path) -> None:
    missing = {"name": "missing", "kind": "diffusers", "model": str(tmp_path / "no-such-model"), "device": "cpu"}
    with Client(settings(tmp_path, tiny(tmp_path), missing)) as client:
        with pytest.raises(ConfigError, match="backend `missing` could not be warmed up") as err:
            client.warmup()
        assert isinstance(err.value.__cause__, ConfigError)
        assert "no-such-model" in str(err.value)
        assert client.backends["tiny-fast"].loaded  # the ones before it did load


def test_async_client_warmup(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, dict[str, float], bool]:
        async with AsyncClient(settings(tmp_path)) as client:
            before = client.backends["tiny-fast"].loaded
            took = await client.warmup()
            with pytest.raises(ValidationError, match="`backends`"):
                await client.warmup(["nope"])
            return before, took, client.backends["tiny-fast"].loaded

    before, took, after = asyncio.run(scenario())
    assert (before, after) == (False, True) and set(took) == {"tiny-fast", "remote"}


# -- the CLI -----------------------------------------------------------------------------------------


def write_config(tmp_path: Path, *backend_tables: str) -> Path:
    path = tmp_path / "pixelroute.toml"
    path.write_text(f'[telemetry]\nstore = "sqlite:///{tmp_path / "cli.db"}"\n\n' + "\n".join(backend_tables))
    return path


def tiny_table(tmp_path: Path, name: str = "tiny-fast") -> str:
    return (f'[[backends]]\nname = "{name}"\nkind = "diffusers"\nmodel = "{tmp_path / "models" / name}"\n'
            'make_tiny = "sd15"\ndevice = "cpu"\n')


def test_cli_warmup_prints_seconds_per_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, tiny_table(tmp_path), '[[backends]]\nname = "remote"\nkind = "mock"\n')
    assert main(["warmup", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny-fast") and lines[0].endswith(" s  loaded")
    assert lines[1].startswith("remote") and lines[1].endswith("remote: nothing to load")
    assert (tmp_path / "models" / "tiny-fast" / "model_index.json").is_file()  # what outlives the process
    assert main(["warmup", "--config", str(config), "--backend", "remote"]) == 0
    assert capsys.readouterr().out.splitlines() == ["remote     0.00 s  remote: nothing to load"]


def test_cli_warmup_fails_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = f'[[backends]]\nname = "missing"\nkind = "diffusers"\nmodel = "{tmp_path / "gone"}"\ndevice = "cpu"\n'
    config = write_config(tmp_path, missing)
    assert main(["warmup", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "pixelroute: error: backend `missing` could not be warmed up" in err
    assert main(["warmup", "--config", str(config), "--backend", "nope"]) == 1
    assert "`backends` must name configured backends (missing) but contains 'nope'" in capsys.readouterr().err


def test_cli_warmup_help_says_the_load_ends_with_the_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["warmup", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "The load ends with this process" in help_text and "preload = true" in help_text


# -- preload at start: gateway, Flask, Django --------------------------------------------------------


def test_gateway_preload_loads_before_the_first_request(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from pixelroute.gateway import create_app

    with TestClient(create_app(settings(tmp_path, preload=True), allow_anonymous=True)) as http:
        body = http.get("/healthz").json()
        assert body["loaded"] == {"tiny-fast": True, "remote": True}
    with TestClient(create_app(settings(tmp_path / "lazy"), allow_anonymous=True)) as http:
        assert http.get("/healthz").json()["loaded"] == {"tiny-fast": False, "remote": True}


def test_gateway_does_not_start_when_a_preloaded_pipeline_fails(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from pixelroute.gateway import create_app

    missing = {"name": "missing", "kind": "diffusers", "model": str(tmp_path / "gone"), "device": "cpu"}
    app = create_app(settings(tmp_path, missing, preload=True), allow_anonymous=True)
    with pytest.raises(ConfigError, match="backend `missing` could not be warmed up"), TestClient(app):
        pass


def test_flask_preload_loads_at_init_app(tmp_path: Path) -> None:
    from flask import Flask

    from pixelroute.contrib.flask import Pixelroute, get_state

    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = settings(tmp_path, preload=True)
    Pixelroute().init_app(app, auth=lambda request, action: True)
    state = get_state(app)
    assert state.client is not None and state.client.backends["tiny-fast"].loaded
    state.close()

    lazy = Flask(__name__)
    lazy.config["PIXELROUTE_SETTINGS"] = settings(tmp_path / "lazy")
    lazy.config["PIXELROUTE_EXECUTION"] = {"preload": False}
    Pixelroute().init_app(lazy, auth=lambda request, action: True)
    assert get_state(lazy).client is None  # built (and loaded) on first use, as before
    get_state(lazy).close()


DJANGO_SCRIPT = """
import json, os, sys
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "pixelroute.contrib.django"],
                   DATABASES={}, PIXELROUTE=json.loads(os.environ["SETTINGS"]))
django.setup()
import pixelroute.contrib.django as pixelroute
client = pixelroute._client
print(json.dumps(None if client is None else {n: b.loaded for n, b in client.backends.items()}))
"""


def run_django(tmp_path: Path, config: dict[str, Any], **env: str) -> Any:
    environ = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH, "SETTINGS": json.dumps(config),
               "OMP_NUM_THREADS": "1", **env}
    done = subprocess.run([sys.executable, "-c", DJANGO_SCRIPT], env=environ, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_django_ready_preloads_when_the_environment_switches_it_on(tmp_path: Path) -> None:
    # a fresh process: AppConfig.ready() runs once per process, inside django.setup()
    config = settings(tmp_path)  # preload off in the settings, on for the server's environment only
    assert run_django(tmp_path, config, PIXELROUTE_EXECUTION__PRELOAD="true") == {"tiny-fast": True, "remote": True}


GUNICORN_APP = """
import json, os
from flask import Flask
from pixelroute.contrib.flask import Pixelroute, get_state

MASTER = os.getpid()
pixelroute = Pixelroute()


def create_app():
    app = Flask(__name__)
    app.config["PIXELROUTE_SETTINGS"] = json.loads(os.environ["SETTINGS"])
    pixelroute.init_app(app, auth=lambda request, action: True)

    @app.get("/loaded")
    def loaded():
        client = get_state(app).get_client()
        return {"master": MASTER, "pid": os.getpid(), "loaded": {n: b.loaded for n, b in client.backends.items()}}

    return app
"""


def test_gunicorn_preload_loads_in_the_master_and_the_forked_worker_uses_it(tmp_path: Path) -> None:
    (tmp_path / "warm_app.py").write_text(textwrap.dedent(GUNICORN_APP))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH, "OMP_NUM_THREADS": "1",
           "SETTINGS": json.dumps(settings(tmp_path, preload=True))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "-w", "1", "--threads", "4", "-b", f"127.0.0.1:{port}",
         "--chdir", str(tmp_path), "--log-level", "warning", "warm_app:create_app()"],
        env=env, cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        until = time.monotonic() + 180
        while True:
            try:
                first = httpx.get(f"{url}/loaded", timeout=30).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < until, "gunicorn did not start"
                time.sleep(0.2)
        # the worker's own client, built after the fork, finds the master's pipeline in memory
        assert first["pid"] != first["master"] and first["loaded"] == {"tiny-fast": True, "remote": True}
        # and the inherited pipeline runs in the worker (fresh worker thread, fresh locks)
        r = httpx.post(f"{url}/pixelroute/generate", timeout=60,
                       json={"prompt": "a red bicycle", "backend": "tiny-fast", "sla": {"deadline_s": 30}})
        assert r.status_code == 200, r.text
        # the worker records through its own telemetry writer (the master's thread did not fork)
        trace = httpx.get(f"{url}/pixelroute/trace/{r.headers['X-Pixelroute-Request-Id']}", timeout=30)
        assert trace.status_code == 200 and trace.json()["backend"] == "tiny-fast"
    finally:
        proc.terminate()
        proc.wait(timeout=60)



def test_a_forked_child_runs_a_pipeline_its_parent_loaded_and_used(tmp_path: Path, cache: PipelineCache) -> None:
    import warnings

    b = backend(tmp_path, cache)
    b.warmup()
    request = GenerateRequest(prompt="a red bicycle", seed=3)
    b.generate(request, Deadline(None))  # the parent's pipeline worker thread is running now
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork() may deadlock"
        pid = os.fork()
    if pid == 0:  # the child: the inherited slot needs a worker thread of its own
        code = 1
        try:
            code = 0 if b.loaded and b.generate(request, Deadline(20.0)).images else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    b.close()
