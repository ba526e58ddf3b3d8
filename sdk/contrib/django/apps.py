"""The app config: registers the system checks and rebuilds the client when settings change."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class PixelrouteConfig(AppConfig):
    name = "sdk.contrib.django"
    label = "pixelroute"
    verbose_name = "pixelroute"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from django.core import checks
        from django.core.signals import setting_changed

        from . import checks as pixelroute_checks

        checks.register(pixelroute_checks.check_settings)
        setting_changed.connect(_on_setting_changed, dispatch_uid="pixelroute-setting-changed")


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    # override_settings(PIXELROUTE=...) in tests, or a reload: the old client no longer matches
    if setting == "PIXELROUTE":
        from . import reset_client

        reset_client()
