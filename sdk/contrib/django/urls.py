"""``path("pixelroute/", include("pixelroute.contrib.django.urls"))`` mounts the five endpoints."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "pixelroute"

urlpatterns = [
    path("generate/", views.generate, name="generate"),
    path("edit/", views.edit, name="edit"),
    path("feedback/<str:request_id>/", views.feedback, name="feedback"),
    path("trace/<str:request_id>/", views.trace, name="trace"),
    path("metrics/", views.metrics, name="metrics"),
]
