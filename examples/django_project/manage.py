#!/usr/bin/env python
"""The example project: the pixelroute app, its endpoints under /pixelroute/ and its admin page.

    cd examples/django_project
    python manage.py check
    python manage.py migrate
    DJANGO_SUPERUSER_PASSWORD=change-me python manage.py createsuperuser --noinput --username admin --email admin@example.com
    python manage.py runserver 8000     # http://127.0.0.1:8000/admin/ (admin / change-me): pixelroute > Recent requests
    python manage.py pixelroute_stats   # per backend, once there were requests

The endpoints (`POST /pixelroute/generate/`, `feedback/<request_id>/`, `GET trace/<request_id>/`,
`metrics/`) answer a logged-in user with the `pixelroute.*` permissions (a superuser has them).
With `PIXELROUTE_CONFIG=path/to/pixelroute.toml` in the environment (`pixelroute init` writes one)
the project uses that config; without, the embedded default (tiny pipelines with RANDOM weights).
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
