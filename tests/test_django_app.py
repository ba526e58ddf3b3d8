"""The Django app through Django's test client and call_command: endpoints, permissions, checks, commands."""

from __future__ import annotations

import base64
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

_DB_DIR = tempfile.TemporaryDirectory(prefix="pixelroute-django-")

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="pixelroute-tests-only",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.admin",
            "pixelroute.contrib.django",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{_DB_DIR.name}/django.db"}},
        USE_TZ=True,
        PIXELROUTE={"backends": [{"name": "m", "kind": "mock"}]},
    )
    django.setup()

from django.contrib import admin  # noqa: E402 - needs settings
from django.contrib.auth.models import Permission, User  # noqa: E402
from django.core import checks  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.management.base import CommandError  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import include, path  # noqa: E402

from pixelroute.contrib.django import get_client, reset_client  # noqa: E402

urlpatterns = [path("pixelroute/", include("pixelroute.contrib.django.urls")), path("admin/", admin.site.urls)]


@pytest.fixture(scope="module", autouse=True)
def _database() -> Iterator[None]:
    call_command("migrate", run_syncdb=True, verbosity=0)
    yield
    reset_client()


@pytest.fixture(autouse=True)
def pixelroute(tmp_path: Path) -> Iterator[dict[str, Any]]:
    config = {
        "telemetry": {"store": f"sqlite:///{tmp_path / 'dj.db'}"},
        "backends": [{"name": "mock-a", "kind": "mock"}, {"name": "mock-b", "kind": "mock"}],
    }
    with override_settings(PIXELROUTE=config):
        yield config
    reset_client()


def user_with(*actions: str, name: str = "alice") -> Client:
    user, _ = User.objects.get_or_create(username=name)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="pixelroute", codename__in=actions)
    )
    client = Client()
    client.force_login(user)
    return client


ALL = ("generate", "feedback", "trace", "metrics")


def test_every_endpoint_with_permissions() -> None:
    c = user_with(*ALL)
    r = c.post(
        "/pixelroute/generate/",
        {"prompt": "a red bicycle", "width": 64, "height": 64, "seed": 2},
        content_type="application/json",
        headers={"X-Pixelroute-Deadline": "5"},
    )
    assert r.status_code == 200, r.content
    body = r.json()
    from PIL import Image

    assert Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).size == (64, 64)
    rid = body["request_id"]
    assert r.headers["X-Pixelroute-Request-Id"] == rid
    r = c.post(
        f"/pixelroute/feedback/{rid}/", {"seconds": 30, "verdict": "edited"}, content_type="application/json"
    )
    assert r.status_code == 200, r.content
    trace = c.get(f"/pixelroute/trace/{rid}/").json()
    assert trace["correction"]["seconds"] == 30
    assert trace["sla"]["deadline_s"] == 5
    metrics = c.get("/pixelroute/metrics/")
    assert metrics.status_code == 200
    from prometheus_client.parser import text_string_to_metric_families

    found = {(s.name, s.labels.get("backend")): s.value
             for f in text_string_to_metric_families(metrics.content.decode()) for s in f.samples}
    assert found[("pixelroute_requests", body["backend"])] == 1
    assert found[("pixelroute_generation_latency_seconds_count", body["backend"])] == 1


def test_png_response_and_pinned_backend() -> None:
    r = user_with("generate").post(
        "/pixelroute/generate/",
        {"prompt": "a cat", "backend": "mock-b"},
        content_type="application/json",
        headers={"Accept": "image/png"},
    )
    assert r.status_code == 200
    assert r["Content-Type"] == "image/png"
    assert r.headers["X-Pixelroute-Backend"] == "mock-b"


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/pixelroute/generate/"),
        ("post", "/pixelroute/feedback/x/"),
        ("get", "/pixelroute/trace/x/"),
        ("get", "/pixelroute/metrics/"),
    ],
)
def test_anonymous_is_401_and_missing_permission_is_403(method: str, url: str) -> None:
    kwargs: dict[str, Any] = {"content_type": "application/json"} if method == "post" else {}
    r = getattr(Client(), method)(url, {"prompt": "x"} if method == "post" else None, **kwargs)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    r = getattr(user_with(name="bob"), method)(url, {"prompt": "x"} if method == "post" else None, **kwargs)
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error"


def allow_everyone(request: Any, action: str) -> bool:
    return action != "metrics"


def test_configurable_permission_check() -> None:
    with override_settings(PIXELROUTE_PERMISSION_CHECK=f"{__name__}:allow_everyone"):
        assert (
            Client()
            .post("/pixelroute/generate/", {"prompt": "x"}, content_type="application/json")
            .status_code
            == 200
        )
        assert Client().get("/pixelroute/metrics/").status_code == 403


@pytest.mark.parametrize(
    ("body", "headers", "param"),
    [
        ('{"prompt": "x", "sla": {"deadline_s": "never"}}', {}, "sla.deadline_s"),
        ('{"prompt": "x", "sla": {"max_cost_usd": -0.5}}', {}, "sla.max_cost_usd"),
        ('{"prompt": "x"}', {"X-Pixelroute-Max-Cost": "cheap"}, "X-Pixelroute-Max-Cost"),
        ('{"prompt": "x", "steps": 0}', {}, "steps"),
        ('{"prompt": "x", "n": true}', {}, "n"),
        ('{"prompt": "x",', {}, "body"),
        ('"x"', {}, "body"),
        # once 500s: int() on n in the png branch, int() past 4,300 digits, the decoder's recursion
        ('{"prompt": "x", "n": "x"}', {"Accept": "image/png"}, "n"),
        ('{"prompt": "x", "n": [1]}', {"Accept": "image/png"}, "n"),
        ('{"prompt": "x", "n": 1e400}', {"Accept": "image/png"}, "n"),
        ('{"prompt": "x", "seed": ' + "9" * 5000 + "}", {}, "seed"),
        ('{"prompt": "x", "sla": ' + "[" * 100_000 + "]" * 100_000 + "}", {}, "body"),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else None,
)
def test_bad_json_and_sla_are_400_naming_the_field(body: str, headers: dict[str, str], param: str) -> None:
    r = user_with("generate").post(
        "/pixelroute/generate/", body, content_type="application/json", headers=headers
    )
    assert r.status_code == 400, r.content
    err = r.json()["error"]
    assert err["param"] == param
    assert param.split(".")[-1] in err["message"]


def test_feedback_and_trace_errors() -> None:
    c = user_with(*ALL)
    assert c.get("/pixelroute/trace/unknown/").status_code == 404
    r = c.post(
        "/pixelroute/feedback/unknown/",
        {"seconds": 1, "verdict": "accepted"},
        content_type="application/json",
    )
    assert r.status_code == 404
    r = c.post("/pixelroute/feedback/x/", "seconds=1", content_type="application/x-www-form-urlencoded")
    assert (r.status_code, r.json()["error"]["param"]) == (400, "Content-Type")
    assert c.get("/pixelroute/generate/").status_code == 405


def test_get_client_is_one_per_process_and_follows_settings(tmp_path: Path) -> None:
    first = get_client()
    assert get_client() is first
    with override_settings(
        PIXELROUTE={
            "backends": [{"name": "other", "kind": "mock"}],
            "telemetry": {"store": f"sqlite:///{tmp_path / 'o.db'}"},
        }
    ):
        assert list(get_client().backends) == ["other"]
    assert first._closed


def pixelroute_ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages if str(m.id).startswith("pixelroute.")]


def test_checks_pass_on_good_settings() -> None:
    assert pixelroute_ids(checks.run_checks()) == []


@pytest.mark.parametrize(
    ("setting", "expected", "fragment"),
    [
        ({"PIXELROUTE": {"routerr": {}}}, "pixelroute.E001", "routerr"),
        ({"PIXELROUTE": {"router": {"exploration": 5}}}, "pixelroute.E001", "router.exploration"),
        ({"PIXELROUTE": ["not", "a", "dict"]}, "pixelroute.E001", "`PIXELROUTE` must be"),
        (
            {"PIXELROUTE": {"telemetry": {"store": "postgresql://nobody@127.0.0.1:1/none"}}},
            "pixelroute.E002",
            "unreachable",
        ),
        (
            {"PIXELROUTE": {"telemetry": {"store": f"sqlite:///{__file__}/t.db"}}},
            "pixelroute.E002",
            "not a directory",
        ),
        ({"PIXELROUTE": {"telemetry": {"store": "sqlite:////tmp"}}}, "pixelroute.E002", "is a directory"),
        (
            {"PIXELROUTE_PERMISSION_CHECK": "nowhere.at_all:check"},
            "pixelroute.E003",
            "PIXELROUTE_PERMISSION_CHECK",
        ),
        ({"PIXELROUTE": {"router": {"model": "/nonexistent/router-model"}}}, "pixelroute.W001", "cold-start"),
    ],
)
def test_settings_errors_surface_as_system_checks(
    setting: dict[str, Any], expected: str, fragment: str
) -> None:
    with override_settings(**setting):
        found = [m for m in checks.run_checks() if m.id == expected]
    assert found, f"no {expected}"
    assert fragment in found[0].msg
    assert found[0].hint


def test_stats_command_prints_the_store_stats() -> None:
    client = get_client()
    client.generate("a cat")
    client.recorder.flush()  # the web process's writer flushes within a second; don't wait for it
    out = io.StringIO()
    call_command("pixelroute_stats", "--json", stdout=out)
    stats = json.loads(out.getvalue())
    assert "mock-a" in json.dumps(stats) or "mock-b" in json.dumps(stats)


def test_stats_command_refuses_bad_since() -> None:
    with pytest.raises(CommandError, match="exit status 1"):
        call_command(
            "pixelroute_stats", "--since", "yesterday-ish", stdout=io.StringIO(), stderr=io.StringIO()
        )


def test_train_command_fails_cleanly_without_records_or_out(
    pixelroute: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(CommandError, match="--out"):
        call_command("pixelroute_train", stdout=io.StringIO())
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("pixelroute_train", "--out", str(tmp_path / "model"), stdout=io.StringIO(), stderr=err)
    assert "pixelroute: error" in err.getvalue()
    assert not (tmp_path / "model").exists()  # nothing half-written


def test_train_command_writes_the_artifact(tmp_path: Path) -> None:
    client = get_client()
    for i in range(240):
        r = client.generate(f"poster number {i}", sla={"deadline_s": 5}, seed=i)
        if i % 3 == 0:
            client.report_correction(r.request_id, float(i % 40), "edited")
    client.recorder.flush()
    out = tmp_path / "router-model"
    call_command(
        "pixelroute_train", "--out", str(out), verbosity=0, stdout=io.StringIO(), stderr=io.StringIO()
    )
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize("on_infeasible", [None, "best_effort", "refuse"])
def test_on_infeasible_is_honoured_by_the_views(tmp_path: Path, on_infeasible: str | None) -> None:
    """One backend declared 10 s against a 2 s deadline: tried by default (the trace says it was
    predicted to miss), 422 with the candidate under ``refuse``, and tried anyway when pinned."""
    router: dict[str, Any] = {"exploration": 0.0, "seed": 1}
    if on_infeasible is not None:
        router["on_infeasible"] = on_infeasible
    config = {"telemetry": {"store": f"sqlite:///{tmp_path / 'late.db'}"}, "router": router,
              "backends": [{"name": "slow", "kind": "mock", "typical_latency_s": 10.0}]}
    with override_settings(PIXELROUTE=config):
        c = user_with(*ALL)
        body = {"prompt": "a cat", "width": 64, "height": 64, "sla": {"deadline_s": 2}}
        r = c.post("/pixelroute/generate/", body, content_type="application/json")
        if on_infeasible == "refuse":
            assert r.status_code == 422, r.content
            err = r.json()["error"]
            assert err["code"] == "no_feasible_backend" and [x["backend"] for x in err["candidates"]] == ["slow"]
            r = c.post("/pixelroute/generate/", {**body, "backend": "slow"}, content_type="application/json")
        assert r.status_code == 200, r.content
        assert r.json()["backend"] == "slow"
        trace = c.get(f"/pixelroute/trace/{r.json()['request_id']}/").json()
        assert trace["decision"]["predicted_to_miss"] is True
    reset_client()


def _stream(body: dict[str, Any]) -> tuple[Any, str]:
    """POST ``body`` through Django's ASGI test client; the response and its whole streamed text."""
    import asyncio

    from django.test import AsyncClient

    user, _ = User.objects.get_or_create(username="streamer")
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="pixelroute", codename="generate"))

    async def go() -> tuple[Any, str]:
        c = AsyncClient()
        await c.aforce_login(user)
        r = await c.post("/pixelroute/generate/", body, content_type="application/json")
        if not r.streaming:
            return r, r.content.decode()
        return r, b"".join([chunk async for chunk in r.streaming_content]).decode()

    return asyncio.run(go())


def test_generate_streams_progress_events_over_asgi() -> None:
    r, text = _stream({"prompt": "a cat", "backend": "mock-b", "stream": True, "width": 64, "height": 64})
    assert r.status_code == 200 and r["Content-Type"] == "text/event-stream"
    frames = [dict(line.split(": ", 1) for line in block.splitlines()) for block in text.strip().split("\n\n")]
    assert [f["event"] for f in frames] == ["decided", "attempt_started", "done"]
    done = json.loads(frames[-1]["data"])
    assert done["backend"] == "mock-b" and done["request_id"] == r.headers["X-Pixelroute-Request-Id"]
    assert len(done["data"]) == 1


def test_a_stream_with_a_bad_field_is_a_plain_400() -> None:
    r, text = _stream({"prompt": "a cat", "stream": True, "previews": -1})
    assert r.status_code == 400 and json.loads(text)["error"]["param"] == "previews"
    r, text = _stream({"prompt": "a cat", "stream": True, "backend": "nope"})
    assert r.status_code == 400 and json.loads(text)["error"]["param"] == "backend"


def _png(size: tuple[int, int] = (64, 64)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_edit_takes_multipart_or_json_and_needs_the_edit_permission() -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    upload = {"image": SimpleUploadedFile("in.png", _png(), "image/png"), "prompt": "x", "strength": "0.5",
              "backend": "mock-b"}
    assert user_with("generate").post("/pixelroute/edit/", upload).status_code == 403
    upload["image"] = SimpleUploadedFile("in.png", _png(), "image/png")
    r = user_with("edit").post("/pixelroute/edit/", upload)
    assert r.status_code == 200, r.content
    assert r.headers["X-Pixelroute-Backend"] == "mock-b"
    assert Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))).size == (64, 64)
    body = {"image": base64.b64encode(_png()).decode(), "mask": base64.b64encode(_png((32, 32))).decode(),
            "prompt": "x"}
    r = user_with("edit").post("/pixelroute/edit/", body, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"]["param"] == "mask"


def test_a_multipart_edit_without_a_csrf_token_is_refused() -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    user, _ = User.objects.get_or_create(username="csrf")
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="pixelroute", codename="edit"))
    c = Client(enforce_csrf_checks=True)
    c.force_login(user)
    r = c.post("/pixelroute/edit/", {"image": SimpleUploadedFile("in.png", _png(), "image/png"), "prompt": "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = c.post("/pixelroute/edit/", {"image": base64.b64encode(_png()).decode(), "prompt": "x"},
               content_type="application/json")
    assert r.status_code == 200, r.content


def test_edit_streams_over_asgi() -> None:
    import asyncio

    from django.test import AsyncClient

    user, _ = User.objects.get_or_create(username="edit-streamer")
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="pixelroute", codename="edit"))

    async def go() -> tuple[Any, str]:
        c = AsyncClient()
        await c.aforce_login(user)
        r = await c.post("/pixelroute/edit/", {"image": base64.b64encode(_png()).decode(), "prompt": "x",
                                               "stream": True, "backend": "mock-a"}, content_type="application/json")
        return r, b"".join([chunk async for chunk in r.streaming_content]).decode()

    r, text = asyncio.run(go())
    assert r["Content-Type"] == "text/event-stream"
    frames = [dict(line.split(": ", 1) for line in block.splitlines()) for block in text.strip().split("\n\n")]
    assert [f["event"] for f in frames] == ["decided", "attempt_started", "done"]
    assert json.loads(frames[-1]["data"])["backend"] == "mock-a"
