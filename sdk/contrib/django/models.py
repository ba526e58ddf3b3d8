"""No tables: one unmanaged model carries the app's permissions and its admin page.

Permissions (``user.has_perm("pixelroute.generate")`` etc.) need a content type, and content
types need a model; ``managed = False`` keeps it out of the database schema.
"""

from __future__ import annotations

from django.db import models


class PixelrouteAccess(models.Model):
    class Meta:
        managed = False
        default_permissions: tuple[str, ...] = ()
        verbose_name = "recent request"
        verbose_name_plural = "recent requests"
        permissions = [
            ("generate", "Can generate images through pixelroute"),
            ("edit", "Can edit images through pixelroute"),
            ("feedback", "Can record correction time"),
            ("trace", "Can read request traces"),
            ("metrics", "Can read pixelroute metrics"),
        ]
