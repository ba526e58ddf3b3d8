"""The public surface: `__all__` is exactly the public names, and `import pixelroute` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pixelroute


def test_all_is_sorted_and_complete() -> None:
    public = {name for name in dir(pixelroute) if not name.startswith("_")}
    modules = {"backends", "cli", "contrib", "events", "gateway", "gates", "router", "scenarios", "telemetry"}
    assert sorted(pixelroute.__all__) == list(pixelroute.__all__)
    assert set(pixelroute.__all__) == public - modules - {"annotations"}


def test_import_pixelroute_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, json, time; t = time.perf_counter(); import pixelroute; "
        "c = pixelroute.Client; dt = time.perf_counter() - t; "
        "print(json.dumps({'mods': sorted(m for m in ('torch', 'diffusers', 'lightgbm', 'transformers', "
        "'psycopg', 'flask', 'django', 'matplotlib', 'jinja2') if m in sys.modules), 'seconds': dt}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["mods"] == []


def test_errors_form_one_tree() -> None:
    for name in pixelroute.__all__:
        obj = getattr(pixelroute, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, pixelroute.PixelrouteError), name
            assert obj.__doc__, f"{name} needs a docstring saying when it is raised"
    assert issubclass(pixelroute.RateLimited, pixelroute.BackendError)
    assert issubclass(pixelroute.DeadlineExceeded, TimeoutError)
    assert issubclass(pixelroute.ValidationError, ValueError)
