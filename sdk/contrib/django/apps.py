"""The app config: registers the system checks, rebuilds the client when settings change, and
loads the pipelines at start-up when ``[execution] preload`` is true."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class PixelrouteConfig(AppConfig):
    name = "pixelroute.contrib.django"
    label = "pixelroute"
    verbose_name = "pixelroute"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from django.core import checks
        from django.core.signals import setting_changed

        from . import checks as pixelroute_checks

        checks.register(pixelroute_checks.check_settings)
        setting_changed.connect(_on_setting_changed, dispatch_uid="pixelroute-setting-changed")
        _preload()


def _preload() -> None:
    """Build the client and load every pipeline now, when the settings ask for it.

    ``ready()`` runs in every process that sets Django up, management commands included: keep
    ``preload`` off in the settings file and switch it on for the server alone with
    ``PIXELROUTE_EXECUTION__PRELOAD=true`` in its environment.
    """
    import logging

    from ..._errors import ConfigError
    from . import get_client, get_settings

    try:
        settings = get_settings()
    except ConfigError:
        return  # `manage.py check` reports it as pixelroute.E001; nothing to preload
    if settings.execution.preload:
        took = get_client().warmup()
        logging.getLogger("pixelroute").info(
            "preloaded %s", ", ".join(f"{n} in {s:.2f} s" for n, s in took.items())
        )


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    # override_settings(PIXELROUTE=...) in tests, or a reload: the old client no longer matches
    if setting == "PIXELROUTE":
        from . import reset_client

        reset_client()
