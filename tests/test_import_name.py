"""An application with its own ``router.py`` and ``sdk/`` package still gets pixelroute (issue: the import name).

Each test runs a real interpreter in the application's folder, so that folder is first on ``sys.path``, as it
is for ``python main.py`` or ``python -m`` in a project; the application's modules raise if they are imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests._import_root import IMPORT_PATH

APP = textwrap.dedent(
    """
    import json, sys

    import pixelroute.router
    from pixelroute import SLA, AsyncClient, Client, load_settings

    settings = load_settings({
        "router": {"exploration": 0.0, "seed": 1},
        "telemetry": {"store": "sqlite:///" + sys.argv[1]},
        "backends": [{"name": "mock-a", "kind": "mock", "price": {"per_image": 0.01}}],
    })
    with Client(settings) as client:
        result = client.generate("a cat", sla=SLA(deadline_s=30), width=64, height=64)
    import router, sdk  # the application's own modules, after pixelroute has been used
    print(json.dumps({"backend": result.backend, "size": list(result.image.size), "async": AsyncClient.__name__,
                      "router": pixelroute.router.__name__, "own": [router.OWN, sdk.OWN]}))
    """
)


def make_app(folder: Path) -> Path:
    """A project whose ``router.py`` and ``sdk/`` are its own, as a user would name them."""
    (folder / "sdk").mkdir(parents=True)
    (folder / "sdk" / "__init__.py").write_text('OWN = "app sdk"\nClient = None  # not the SDK\'s\n')
    (folder / "router.py").write_text('OWN = "app router"\nRouter = None  # not the SDK\'s\n')
    (folder / "main.py").write_text(APP)
    return folder


def run_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # only this checkout's pixelroute on the path: neither the repository root (its sdk/ and router/) nor anything else
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELROUTE_") and k != "PYTHONPATH"}
    env.update(PIXELROUTE_CACHE_DIR=str(folder / "cache"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if IMPORT_PATH:
        env["PYTHONPATH"] = IMPORT_PATH
    return subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=240,
                          check=False)


def test_an_application_with_its_own_router_and_sdk_generates(tmp_path: Path) -> None:
    app = make_app(tmp_path / "myapp")
    done = run_in(app, "main.py", str(tmp_path / "t.db"))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out == {"backend": "mock-a", "size": [64, 64], "async": "AsyncClient", "router": "pixelroute.router",
                   "own": ["app router", "app sdk"]}


def test_the_command_line_runs_from_an_application_with_its_own_router(tmp_path: Path) -> None:
    app = make_app(tmp_path / "myapp")
    done = run_in(app, "-m", "pixelroute", "route", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: pixelroute route")
    version = run_in(app, "-m", "pixelroute", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().startswith("pixelroute ")
