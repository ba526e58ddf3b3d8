#!/usr/bin/env python
"""The example project's manage.py: `python manage.py check`, `runserver`, `pixelroute_stats`, ..."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # the repository root, so `sdk` imports without installing (an installed pixelroute works too)
    sys.path.insert(1, str(Path(__file__).resolve().parents[2]))
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
