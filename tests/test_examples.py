"""Every example runs, offline, on the embedded default (tiny random-weight pipelines), 64x64."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelroute import Client, load_settings
from pixelroute.backends import KINDS
from tests._import_root import SUBPROCESS_PYTHONPATH

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir for the module: the tiny pipelines are built once, then reused like a user's."""
    return tmp_path_factory.mktemp("example-cache")


def run(args: list[str], cache: Path, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIXELROUTE_")}
    proc = subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={
            **clean,
            "PIXELROUTE_CACHE_DIR": str(cache),
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": SUBPROCESS_PYTHONPATH,
            "OMP_NUM_THREADS": "1",
            **env,
        },
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_config_example_covers_every_backend_kind_and_validates() -> None:
    settings = load_settings(EXAMPLES / "config.example.toml")
    assert {b.kind for b in settings.backends} == set(KINDS)
    assert all(b.price.as_dict() for b in settings.backends if b.kind != "mock")


def test_quickstart(cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bike.png"
    proc = run([sys.executable, str(EXAMPLES / "quickstart.py"), str(out)], cache_dir)
    assert "correction stored: {'seconds': 42.0" in proc.stdout
    from PIL import Image

    with Image.open(out) as img:
        assert img.size == (64, 64)


def test_async_batch(cache_dir: Path) -> None:
    proc = run([sys.executable, str(EXAMPLES / "async_batch.py")], cache_dir)
    assert "4/4 generated" in proc.stdout


@pytest.fixture
def flask_example(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("PIXELROUTE_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("EXAMPLE_API_KEY", "secret")
    monkeypatch.syspath_prepend(str(EXAMPLES / "flask_app"))
    import app as example  # type: ignore[import-not-found]

    flask_app = example.create_app()
    yield flask_app
    example.pixelroute.close(flask_app)
    sys.modules.pop("app", None)


def test_flask_app(flask_example: object) -> None:
    from flask import Flask

    assert isinstance(flask_example, Flask)
    http = flask_example.test_client()
    r = http.post(
        "/pixelroute/generate",
        json={"prompt": "a red bicycle", "width": 64, "height": 64},
        headers={"X-Key": "secret", "Accept": "image/png"},
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.mimetype == "image/png"
    r = http.post("/poster", json={"title": "SALE"}, headers={"X-Key": "secret"})
    assert r.status_code == 200 and r.get_json()["backend"] in {"local-fast", "local-quality"}
    assert http.post("/poster", json={}, headers={"X-Key": "nope"}).status_code == 403


SMOKE = """
from django.contrib.auth.models import User
from django.test import Client
User.objects.create_superuser("admin", "admin@example.com", "pw")
c = Client(); c.login(username="admin", password="pw")
r = c.post("/pixelroute/generate/", {"prompt": "a lighthouse", "width": 64, "height": 64},
           content_type="application/json")
assert r.status_code == 200, r.content
rid = r.json()["request_id"]
assert c.post(f"/pixelroute/feedback/{rid}/", {"seconds": 5, "verdict": "accepted"},
              content_type="application/json").status_code == 200
print("trace", c.get(f"/pixelroute/trace/{rid}/").json()["correction"]["verdict"])
"""


def test_django_project(cache_dir: Path, tmp_path: Path) -> None:
    project = EXAMPLES / "django_project"
    env = {"EXAMPLE_DATA_DIR": str(tmp_path)}
    run([sys.executable, "manage.py", "check", "--fail-level", "WARNING"], cache_dir, cwd=project, **env)
    run([sys.executable, "manage.py", "migrate", "-v", "0"], cache_dir, cwd=project, **env)
    proc = run([sys.executable, "manage.py", "shell", "-c", SMOKE], cache_dir, cwd=project, **env)
    assert "trace accepted" in proc.stdout
    stats = run([sys.executable, "manage.py", "pixelroute_stats", "--json"], cache_dir, cwd=project, **env)
    # the cache dir's store also holds the other examples' requests
    assert json.loads(stats.stdout)["totals"]["requests"] >= 1


def test_retrain_cron(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'telemetry.db'}"
    settings = load_settings(
        {
            "telemetry": {"store": store},
            "router": {"exploration": 0.2, "seed": 1},
            "backends": [
                {"name": "a", "kind": "mock", "price": {"per_image": 0.01}},
                {"name": "b", "kind": "mock", "price": {"per_image": 0.02}},
            ],
        }
    )
    with Client(settings) as client:  # a day of (mock) traffic with some corrections
        for i in range(240):
            r = client.generate(f"poster number {i}", sla={"deadline_s": 5}, seed=i)
            if i % 3 == 0:
                client.report_correction(r.request_id, float(i % 40), "edited")
    out = tmp_path / "router-model"
    proc = run(
        ["bash", str(EXAMPLES / "retrain_cron.sh")],
        tmp_path / "cache",
        STORE=store,
        OUT=str(out),
        PYTHON=sys.executable,
        PIXELROUTE_BIN="no-such-binary",
    )
    assert (out / "manifest.json").is_file(), proc.stderr
    assert "done" in proc.stdout
