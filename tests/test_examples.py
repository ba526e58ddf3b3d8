"""Every example runs as its docstring says: the documented commands, in order, as subprocesses.

The commands come out of the examples' docstrings (and retrain_cron.sh's crontab comment) and
run under bash in a copy of examples/ (they write files where they run), with the servers they
start (`flask run`, gunicorn, `manage.py runserver`, `rq worker`) listening for real on
127.0.0.1. The only changes are a free port for the documented one and, for RQ, a Redis
database of this test's own (see tests/_doc_commands.py). Offline, on the embedded default:
tiny random-weight pipelines, 64x64.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pixelroute import Client, load_settings
from pixelroute.backends import KINDS
from tests._doc_commands import (
    Session,
    copy_examples,
    free_port,
    python_docstring_commands,
    require_tool,
    session,
    shell_comment_commands,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir for the module: the tiny pipelines are built once, then reused like a user's."""
    return tmp_path_factory.mktemp("example-cache")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder holding a copy of examples/: where the commands' `cd examples/...` start from."""
    return copy_examples(REPO, tmp_path / "checkout")


def assert_png(path: Path, size: tuple[int, int] = (64, 64)) -> None:
    from PIL import Image

    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path.read_bytes()[:200]
    with Image.open(path) as img:
        assert img.size == size


def test_config_example_covers_every_backend_kind_and_validates() -> None:
    settings = load_settings(EXAMPLES / "config.example.toml")
    assert {b.kind for b in settings.backends} == set(KINDS)
    assert all(b.price.as_dict() for b in settings.backends if b.kind != "mock")


def test_a_mock_backend_beside_real_ones_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    # config.example.toml keeps a free `mock` to show every kind: the router would send it most requests
    with caplog.at_level(logging.WARNING, logger="pixelroute"), Client.from_config(EXAMPLES / "config.example.toml"):
        pass
    warned = [r.getMessage() for r in caplog.records if "kind `mock`" in r.getMessage()]
    assert len(warned) == 1 and "`mock`" in warned[0] and "remove them from a real config" in warned[0]
    caplog.clear()
    only_mocks = load_settings({"backends": [{"name": "a", "kind": "mock"}, {"name": "b", "kind": "mock"}]})
    with caplog.at_level(logging.WARNING, logger="pixelroute"), Client(only_mocks):
        pass  # a test's all-mock config is what mocks are for
    assert not [r for r in caplog.records if "kind `mock`" in r.getMessage()]


def test_quickstart(root: Path, cache_dir: Path) -> None:
    (command,) = python_docstring_commands(EXAMPLES / "quickstart.py")
    with session(root, cache_dir) as shell:
        done = shell.run(command)
    assert done is not None and "correction stored: {'seconds': 42.0" in done.stdout
    assert_png(root / "quickstart.png")


def test_async_batch(root: Path, cache_dir: Path) -> None:
    (command,) = python_docstring_commands(EXAMPLES / "async_batch.py")
    with session(root, cache_dir) as shell:
        done = shell.run(command)
    assert done is not None and "4/4 generated" in done.stdout


MOCK_CONFIG = '[[backends]]\nname = "configured-mock"\nkind = "mock"\n'


@pytest.mark.parametrize("server", ["flask", "gunicorn"])
def test_flask_app(root: Path, cache_dir: Path, server: str) -> None:
    """`flask run` on the embedded default; gunicorn on a config named by PIXELROUTE_CONFIG.

    The docstring documents both; the config is a mock one so that gunicorn's two workers do not
    each pay the import of torch (the embedded default's pipelines are run by the `flask` case).
    """
    require_tool("curl")
    cd, *servers, generate, poster = python_docstring_commands(EXAMPLES / "flask_app" / "app.py")
    (start,) = [s for s in servers if f" {server} " in s]
    port = free_port()
    env = {"FLASK_RUN_PORT": str(port)}
    expected = {"local-fast", "local-quality"}
    if server == "gunicorn":
        (root / "pixelroute.toml").write_text(MOCK_CONFIG)
        env["PIXELROUTE_CONFIG"] = str(root / "pixelroute.toml")
        expected = {"configured-mock"}
    with session(root, cache_dir, {"5000": str(port)}, **env) as shell:
        shell.run(cd)
        shell.spawn(start)
        shell.wait_for_http(f"http://127.0.0.1:{port}/")
        shell.run(generate)
        answer = shell.run(poster)
        forbidden = httpx.post(f"http://127.0.0.1:{port}/poster", json={}, headers={"X-Key": "nope"})
    assert_png(root / "examples" / "flask_app" / "bike.png")
    assert answer is not None and json.loads(answer.stdout)["backend"] in expected
    assert forbidden.status_code == 403


def test_django_project(root: Path, cache_dir: Path) -> None:
    cd, check, migrate, superuser, runserver, stats = python_docstring_commands(
        EXAMPLES / "django_project" / "manage.py"
    )
    port = free_port()
    with session(root, cache_dir, {"8000": str(port)}) as shell:
        for command in (cd, check, migrate, superuser):
            shell.run(command)
        shell.spawn(runserver)
        base = f"http://127.0.0.1:{port}"
        shell.wait_for_http(f"{base}/admin/login/")
        with httpx.Client(base_url=base, timeout=120) as http:
            assert http.post("/pixelroute/generate/", json={"prompt": "x"}).status_code == 401  # anonymous
            log_in(http, "admin", password_in(superuser))
            r = http.post("/pixelroute/generate/", json={"prompt": "a lighthouse", "width": 64, "height": 64})
            assert r.status_code == 200, r.text
            rid = r.json()["request_id"]
            fb = http.post(f"/pixelroute/feedback/{rid}/", json={"seconds": 5, "verdict": "accepted"})
            assert fb.status_code == 200, fb.text
            assert http.get(f"/pixelroute/trace/{rid}/").json()["correction"]["verdict"] == "accepted"
            recent = http.get("/admin/pixelroute/pixelrouteaccess/")
            assert recent.status_code == 200 and rid in recent.text
        printed = shell.run(stats)
    assert printed is not None and re.search(r"local-(fast|quality)", printed.stdout), printed.stdout


def password_in(command: str) -> str:
    match = re.search(r"DJANGO_SUPERUSER_PASSWORD=(\S+)", command)
    assert match, command
    return match.group(1)


def log_in(http: httpx.Client, username: str, password: str) -> None:
    """The admin's login form, as a browser fills it in (CSRF cookie and token included)."""
    form = http.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token, form.text[:500]
    r = http.post(
        "/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": token.group(1), "username": username, "password": password, "next": "/admin/"},
    )
    assert r.status_code == 302 and r.headers["location"] == "/admin/", r.text[:500]


REDIS_LOCK = "pixelroute-example-test"


@pytest.fixture
def redis_db() -> Iterator[int]:
    """A Redis database no other test session uses now (the example's queue name is fixed)."""
    redis = pytest.importorskip("redis")
    for db in range(1, 15):  # 0 is the default others use; tests/test_taskqueue_rq.py uses 15
        conn = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_connect_timeout=1)
        try:
            taken = conn.set(REDIS_LOCK, "1", nx=True, ex=900)
        except redis.exceptions.ConnectionError as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"Redis must run at 127.0.0.1:6379 under CI: {exc}")
            pytest.skip(f"no Redis at 127.0.0.1:6379: {exc}")
        if taken and conn.dbsize() == 1:
            try:
                yield db
            finally:
                conn.flushdb()
                conn.close()
            return
        if taken:
            conn.delete(REDIS_LOCK)
        conn.close()
    pytest.skip("no empty Redis database to run the RQ example in")


def test_taskqueue_rq(root: Path, cache_dir: Path, redis_db: int) -> None:
    require_tool("curl")
    commands = python_docstring_commands(EXAMPLES / "taskqueue_rq" / "web.py")
    *start, submit, poll, feedback = commands
    port = free_port()
    subs = {"5000": str(port), "redis://127.0.0.1:6379/0": f"redis://127.0.0.1:6379/{redis_db}"}
    with session(root, cache_dir, subs, FLASK_RUN_PORT=str(port)) as shell:
        for command in start:  # cd, pixelroute init, export, rq worker &, flask run &
            shell.run(command)
        shell.wait_for_http(f"http://127.0.0.1:{port}/jobs/nope")
        queued = answer(shell.run(submit))
        assert queued["status"] == "queued", queued
        status = poll_until_done(shell, poll, queued["job_id"])
        assert status["ok"] is True and status["backend"] in {"local-fast", "local-quality"}, status
        recorded = answer(shell.run(feedback, {"request_id": status["request_id"]}))
        missing = httpx.get(f"http://127.0.0.1:{port}/jobs/nope")
    # the web app found the worker's request in the one store both read
    assert recorded == {"request_id": status["request_id"], "seconds": 30.0, "verdict": "edited"}
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_job"
    assert (root / "examples" / "taskqueue_rq" / "pixelroute.db").is_file()


def answer(done: Any) -> dict[str, Any]:
    assert done is not None
    try:
        body: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON: {done.stdout[:500]}\n{done.stderr[:500]}") from None
    return body


def poll_until_done(shell: Session, command: str, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    """Repeat `curl .../jobs/<job_id>` as a person would, until the job has finished or failed."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        status = answer(shell.run(command, {"job_id": job_id}))
        if status["status"] in ("finished", "failed"):
            return status
        assert time.monotonic() < deadline, f"the job did not finish: {status}\n{shell.logs()}"
        time.sleep(0.5)


RETRAIN_CONFIG = """
[telemetry]
store = "sqlite:///pixelroute.db"

[router]
model = "router-model"
exploration = 0.2
seed = 1

[[backends]]
name = "a"
kind = "mock"
price = { per_image = 0.01 }

[[backends]]
name = "b"
kind = "mock"
price = { per_image = 0.02 }
"""


def crontab_command(app: Path) -> str:
    """The crontab line's command, with the app folder (and its venv's interpreter) put here."""
    (line,) = shell_comment_commands(EXAMPLES / "retrain_cron.sh", "crontab")
    command = line.split(None, 5)[5]  # minute hour day month weekday, then the command
    return command.replace("/srv/app/.venv/bin/python", sys.executable).replace("/srv/app", str(app))


def test_retrain_cron_as_its_crontab_line_says(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("flock")
    app = copy_examples(REPO, tmp_path / "app")
    (app / "pixelroute.toml").write_text(RETRAIN_CONFIG)
    monkeypatch.chdir(app)  # the config's relative store is the app folder's, as for the app itself
    with Client.from_config("pixelroute.toml") as client:  # a day of (mock) traffic with some corrections
        for i in range(240):
            r = client.generate(f"poster number {i}", sla={"deadline_s": 5}, seed=i)
            if i % 3 == 0:
                client.report_correction(r.request_id, float(i % 40), "edited")
    # cron's own environment: a bare PATH without the virtual environment
    with session(tmp_path, cache_dir, PATH="/usr/bin:/bin") as shell:
        shell.run(crontab_command(app))
    log = (app / "retrain.log").read_text()
    assert (app / "router-model" / "manifest.json").is_file(), log
    assert log.rstrip().endswith("done"), log


def test_retrain_cron_names_the_interpreter_it_needs(tmp_path: Path, cache_dir: Path) -> None:
    app = copy_examples(REPO, tmp_path / "app")
    shell = Session.start(tmp_path, cache_dir, PATH="/usr/bin:/bin", PYTHONPATH="")
    command = crontab_command(app).replace(sys.executable, str(tmp_path / "no-venv" / "python"))
    with pytest.raises(AssertionError, match="cannot import pixelroute: set PYTHON to the interpreter"):
        shell.run(command.replace(">> retrain.log 2>&1", ""))


def test_the_django_project_reads_its_config_from_pixelroute_config(root: Path, cache_dir: Path) -> None:
    folder = root / "examples" / "django_project"
    with (
        session(folder, cache_dir, PIXELROUTE_CONFIG="no-such.toml") as shell,
        pytest.raises(AssertionError, match=r"pixelroute\.E001.*no-such\.toml"),
    ):
        shell.run("python manage.py check")
