"""The Django admin page through Django's test client: list, trace, correction form, permissions, CSRF."""

from __future__ import annotations

import importlib.util
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

_DB_DIR = tempfile.TemporaryDirectory(prefix="pixelroute-django-admin-")
_EXAMPLE_SETTINGS = Path(__file__).parents[1] / "examples" / "django_project" / "project" / "settings.py"


def _example_settings() -> dict[str, Any]:
    """The example project's settings (admin, sessions, CSRF middleware), with a throwaway database."""
    spec = importlib.util.spec_from_file_location("pixelroute_example_settings", _EXAMPLE_SETTINGS)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = {name: getattr(module, name) for name in dir(module) if name.isupper()}
    database = {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{_DB_DIR.name}/admin.db"}
    return {**values, "ROOT_URLCONF": __name__, "DATABASES": {"default": database}}


if not settings.configured:  # test_django_app may have configured Django first; both fit either set
    settings.configure(**_example_settings())
    django.setup()

from django.contrib import admin  # noqa: E402 - needs settings
from django.contrib.auth.models import Permission, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.utils.html import escape  # noqa: E402

from pixelroute.contrib.django import get_client, reset_client  # noqa: E402
from pixelroute.contrib.django.admin import RecentRequestsAdmin  # noqa: E402
from pixelroute.contrib.django.models import PixelrouteAccess  # noqa: E402

# the same routes as test_django_app's: whichever module configures Django first, both find theirs
urlpatterns = [path("pixelroute/", include("pixelroute.contrib.django.urls")), path("admin/", admin.site.urls)]

LIST = "/admin/pixelroute/pixelrouteaccess/"


@pytest.fixture(scope="module", autouse=True)
def _database() -> Iterator[None]:
    call_command("migrate", run_syncdb=True, verbosity=0)
    with override_settings(ROOT_URLCONF=__name__):
        yield
    reset_client()


@pytest.fixture(autouse=True)
def pixelroute(tmp_path: Path) -> Iterator[dict[str, Any]]:
    config = {
        "telemetry": {"store": f"sqlite:///{tmp_path / 'admin.db'}"},
        "backends": [
            {"name": "cheap", "kind": "mock", "price": {"per_image": 0.01}},
            # far slower than any deadline used here: the router records why it was not chosen
            {"name": "slow", "kind": "mock", "typical_latency_s": 60},
            {"name": "broken", "kind": "mock", "failure": "server_error", "price": {"per_image": 0.5}},
        ],
        "execution": {"max_attempts": 1},
        "router": {"exploration": 0},  # always the cheapest feasible backend, so tests know which
    }
    with override_settings(PIXELROUTE=config):
        yield config
    reset_client()


def login(*actions: str, name: str = "staff", staff: bool = True, csrf: bool = False) -> Client:
    user, _ = User.objects.get_or_create(username=name)
    user.is_staff = staff
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="pixelroute", codename__in=actions))
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def routed_request() -> str:
    return get_client().generate("a lighthouse at dusk", sla={"deadline_s": 5}, seed=1).request_id


def failed_request() -> str:
    from pixelroute import PixelrouteError

    with pytest.raises(PixelrouteError):
        get_client().generate("a broken poster", backend="broken")
    newest = get_client().recent_requests(1)[0]
    assert newest["prompt"] == "a broken poster"
    return str(newest["request_id"])


def detail_url(request_id: str) -> str:
    return f"{LIST}{request_id}/"


def test_admin_index_lists_the_page_for_staff_who_may_read_traces() -> None:
    assert admin.site.is_registered(PixelrouteAccess)
    assert isinstance(admin.site.get_model_admin(PixelrouteAccess), RecentRequestsAdmin)
    index = login("trace").get("/admin/")
    assert index.status_code == 200
    assert f'href="{LIST}"' in index.content.decode()
    index = login(name="no-perms").get("/admin/")
    assert f'href="{LIST}"' not in index.content.decode()


def test_list_shows_recent_requests_newest_first() -> None:
    first = routed_request()
    failed = failed_request()
    get_client().report_correction(first, 42, "edited")
    r = login("trace").get(LIST)
    assert r.status_code == 200
    assert r.template_name == "pixelroute/admin/recent_requests.html"
    page = r.content.decode()
    assert page.index(failed) < page.index(first)  # newest first
    rows = {row["request_id"]: row for row in r.context_data["rows"]}
    assert rows[first]["backend"] == "cheap" and rows[first]["ok"]
    assert rows[first]["correction"]["verdict"] == "edited"
    assert rows[failed]["backend"] == "broken" and not rows[failed]["ok"]
    assert "edited, 42 s" in page
    assert f"error: {rows[failed]['error']}" in page
    assert "0.0100" in page  # the cheap backend's cost per image
    assert f'href="{detail_url(first)}"' in page


def test_list_limit_is_validated() -> None:
    for _ in range(3):
        routed_request()
    c = login("trace")
    assert len(c.get(LIST, {"limit": 2}).context_data["rows"]) == 2
    r = c.get(LIST, {"limit": "lots"})
    assert r.status_code == 200
    assert len(r.context_data["rows"]) == 3  # the default page, with the refusal shown
    assert "Enter a whole number" in r.content.decode()
    assert "Ensure this value is less than or equal to 500" in c.get(LIST, {"limit": 501}).content.decode()


def test_detail_shows_the_decision_candidates_and_attempts() -> None:
    rid = routed_request()
    r = login("trace", "feedback").get(detail_url(rid))
    assert r.status_code == 200
    page = r.content.decode()
    trace = get_client().trace(rid)
    candidates = {c["backend"]: c for c in r.context_data["candidates"]}
    assert set(candidates) == {"cheap", "slow", "broken"}
    why_not = candidates["slow"]["why_not"]
    assert why_not and escape(why_not) in page  # the router's reason for passing it over is shown
    assert escape(trace["decision"]["reason"]) in page
    assert r.context_data["attempts"][0]["backend"] == "cheap"
    assert "a lighthouse at dusk" in page
    assert 'id="pixelroute-correction-form"' in page
    assert "No correction reported yet." in page


def test_unknown_request_is_404() -> None:
    assert login("trace").get(detail_url("no-such-request")).status_code == 404


def test_posting_a_correction_records_it_through_the_client() -> None:
    rid = routed_request()
    c = login("trace", "feedback")
    r = c.post(detail_url(rid), {"seconds": "30.5", "verdict": "rejected"})
    assert (r.status_code, r["Location"]) == (302, detail_url(rid))
    assert get_client().trace(rid)["correction"]["seconds"] == 30.5
    page = c.get(detail_url(rid)).content.decode()
    assert "Recorded 30.5 s, rejected." in page
    assert "In effect: <b>rejected</b>, 30.5 s" in page


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"seconds": "-1", "verdict": "edited"}, "seconds", "greater than or equal to 0"),
        ({"seconds": "86401", "verdict": "edited"}, "seconds", "less than or equal to 86400"),
        ({"seconds": "soon", "verdict": "edited"}, "seconds", "Enter a number"),
        ({"seconds": "inf", "verdict": "edited"}, "seconds", "Enter a number"),
        ({"seconds": "5", "verdict": "maybe"}, "verdict", "maybe is not one of the available choices"),
        ({"verdict": "edited"}, "seconds", "This field is required"),
    ],
)
def test_bad_corrections_are_refused_by_field_and_not_recorded(data: dict[str, str], field: str, message: str) -> None:
    rid = routed_request()
    r = login("trace", "feedback").post(detail_url(rid), data)
    assert r.status_code == 200
    assert list(r.context_data["form"].errors) == [field]
    page = r.content.decode()
    # the message sits in the row of the field it is about
    row = re.search(rf'<div class="form-row errors field-{field}">(.*?)</div>', page, re.S)
    assert row and message in row.group(1)
    assert get_client().trace(rid)["correction_history"] == []


def test_posting_needs_the_feedback_permission() -> None:
    rid = routed_request()
    c = login("trace")
    assert "needs the <code>pixelroute.feedback</code> permission" in c.get(detail_url(rid)).content.decode()
    assert c.post(detail_url(rid), {"seconds": "3", "verdict": "accepted"}).status_code == 403
    assert get_client().trace(rid)["correction_history"] == []


def test_staff_without_the_trace_permission_is_refused() -> None:
    rid = routed_request()
    c = login("feedback", name="feedback-only")
    assert c.get(LIST).status_code == 403
    assert c.get(detail_url(rid)).status_code == 403


@pytest.mark.parametrize("who", ["anonymous", "non-staff"])
def test_non_staff_are_sent_to_the_admin_login(who: str) -> None:
    rid = routed_request()
    c = Client() if who == "anonymous" else login("trace", "feedback", name="customer", staff=False)
    for r in (c.get(LIST), c.get(detail_url(rid)), c.post(detail_url(rid), {"seconds": "1", "verdict": "edited"})):
        assert r.status_code == 302
        assert r["Location"].startswith("/admin/login/")
    assert get_client().trace(rid)["correction_history"] == []


def test_the_form_is_csrf_protected() -> None:
    rid = routed_request()
    c = login("trace", "feedback", csrf=True)
    assert c.post(detail_url(rid), {"seconds": "1", "verdict": "edited"}).status_code == 403
    page = c.get(detail_url(rid)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token
    r = c.post(detail_url(rid), {"seconds": "1", "verdict": "edited", "csrfmiddlewaretoken": token.group(1)})
    assert r.status_code == 302
    assert get_client().trace(rid)["correction"]["verdict"] == "edited"


def test_disabled_telemetry_is_explained_not_a_crash() -> None:
    with override_settings(PIXELROUTE={"telemetry": {"enabled": False}, "backends": [{"name": "m", "kind": "mock"}]}):
        r = login("trace").get(LIST)
        assert r.status_code == 200
        assert "telemetry is disabled" in r.content.decode()
        assert login("trace").get(detail_url("anything")).status_code == 404
