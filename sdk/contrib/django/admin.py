"""The admin page: recent requests, each request's trace, and a form to record correction time.

Django's admin autodiscovers this module and registers :class:`RecentRequestsAdmin` on the default
site under the app's table-less model, so "pixelroute › Recent requests" appears in the admin index.
Nothing is read from the Django database: rows come from the pixelroute telemetry store through
:func:`pixelroute.contrib.django.get_client`. On a custom ``AdminSite``::

    my_site.register(PixelrouteAccess, RecentRequestsAdmin)

Access: staff users (the admin's own login check) holding ``pixelroute.trace`` see the pages (a
trace holds the prompt, like ``GET trace/``); posting a correction also needs ``pixelroute.feedback``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from ..._errors import ConfigError, UnknownRequest, ValidationError
from . import get_client
from .forms import CorrectionForm, RecentRequestsForm
from .models import PixelrouteAccess

#: attempt columns shown in their own cells; any other outcome keys go to the "details" cell
ATTEMPT_COLUMNS = ("attempt", "backend", "ts", "ok", "error", "latency_s", "queue_s", "gpu_s", "cost_usd", "hedge")


def user_may(request: HttpRequest, action: str) -> bool:
    """Active staff with ``pixelroute.<action>`` (superusers hold every permission)."""
    user: Any = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff and user.has_perm(f"pixelroute.{action}"))


class RecentRequestsAdmin(admin.ModelAdmin):
    """Read-only pages over the telemetry store plus one form; never touches the model's (absent) table."""

    list_limit = 50
    list_template = "pixelroute/admin/recent_requests.html"
    detail_template = "pixelroute/admin/request_detail.html"

    # -- permissions: view = pixelroute.trace, nothing to add, change or delete ---------------
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return user_may(request, "trace")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # -- urls: the default change/add/delete views would query the missing table --------------
    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view  # staff login, never_cache and csrf_protect
        return [
            path("", wrap(self.changelist_view), name=self._url_name("changelist")),
            path("<str:request_id>/", wrap(self.request_view), name=self._url_name("request")),
        ]

    def _url_name(self, view: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{view}"

    def _url(self, view: str, *args: str) -> str:
        name = f"{self.admin_site.name}:{self._url_name(view)}"
        return reverse(name, args=args, current_app=self.admin_site.name)

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "changelist_url": self._url("changelist"),
            **extra,
        }

    # -- views --------------------------------------------------------------------------------
    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """The newest requests (``?limit=N``, 1 to 500), newest first."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = RecentRequestsForm(request.GET or None)
        limit = form.limit_or(self.list_limit)
        rows: list[dict[str, Any]] = []
        problem = None
        try:
            rows = get_client().recent_requests(limit)
        except ConfigError as exc:  # telemetry disabled: say so instead of a 500
            problem = str(exc)
        for row in rows:
            row["url"] = self._url("request", str(row["request_id"]))
        context = self._context(request, "Recent requests", rows=rows, limit=limit, limit_form=form, problem=problem)
        context.update(extra_context or {})
        return TemplateResponse(request, self.list_template, context)

    def request_view(self, request: HttpRequest, request_id: str) -> HttpResponse:
        """One request's trace; POST records a correction (needs ``pixelroute.feedback``)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        may_correct = user_may(request, "feedback")
        client = get_client()
        form = CorrectionForm()
        if request.method == "POST":
            if not may_correct:
                raise PermissionDenied
            form = CorrectionForm(request.POST)
            if form.is_valid() and self._record(request, request_id, form):
                return HttpResponseRedirect(request.get_full_path())  # POST/redirect/GET
        try:
            trace = client.trace(request_id)
        except UnknownRequest:
            raise Http404(f"no request with id {request_id!r} was recorded") from None
        except ConfigError as exc:
            raise Http404(str(exc)) from None
        context = self._context(
            request,
            f"Request {request_id}",
            trace=trace,
            candidates=(trace.get("decision") or {}).get("candidates") or [],
            attempts=[_attempt_row(a) for a in trace["attempts"]],
            form=form,
            may_correct=may_correct,
        )
        return TemplateResponse(request, self.detail_template, context)

    def _record(self, request: HttpRequest, request_id: str, form: CorrectionForm) -> bool:
        """Store the correction; a refusal from the store becomes an error on the form's field."""
        seconds, verdict = form.cleaned_data["seconds"], form.cleaned_data["verdict"]
        try:
            get_client().report_correction(request_id, seconds, verdict)
        except UnknownRequest:
            raise Http404(f"no request with id {request_id!r} was recorded") from None
        except (ValidationError, ConfigError) as exc:
            field = getattr(exc, "field", None)
            form.add_error(field if field in form.fields else None, str(exc))
            return False
        self.message_user(request, f"Recorded {seconds:g} s, {verdict}.", messages.SUCCESS)
        return True


def _attempt_row(attempt: dict[str, Any]) -> dict[str, Any]:
    row = {key: attempt.get(key) for key in ATTEMPT_COLUMNS}
    row["details"] = ", ".join(
        f"{k}={v}" for k, v in attempt.items() if k not in ATTEMPT_COLUMNS and v not in (None, "")
    )
    return row


admin.site.register(PixelrouteAccess, RecentRequestsAdmin)
