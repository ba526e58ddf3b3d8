"""Where the tests, their subprocesses and mypy import ``pixelroute`` from: this checkout, installed or not.

The import name has no folder of its own: sdk/ is ``pixelroute`` and router/ is ``pixelroute.router``
(pyproject.toml's package-dir). An editable install of this checkout maps them with a finder of its
own, and then nothing is needed. Run from another checkout's environment (or none), ``pixelroute``
would be that other code, or missing; the tests then import it from a tree of links,
build/import-root/pixelroute/ (each entry of sdk/, plus ``router`` -> router/), put first on the path.
mypy needs the same tree in any case: it does not run import finders.

``python tests/_import_root.py`` builds the tree and prints its root.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK_ROOT = REPO / "build" / "import-root"


def build_link_tree(root: Path = LINK_ROOT) -> Path:
    """``root/pixelroute``: a link per entry of sdk/ and ``router`` -> router/; stale links go."""
    package = root / "pixelroute"
    package.mkdir(parents=True, exist_ok=True)
    wanted = {entry.name: entry for entry in (REPO / "sdk").iterdir() if entry.name != "__pycache__"}
    wanted["router"] = REPO / "router"
    for link in package.iterdir():
        stale = link.name not in wanted or not link.is_symlink() or link.resolve() != wanted[link.name].resolve()
        if stale and (link.is_symlink() or link.is_file()):
            link.unlink()
    for name, target in wanted.items():
        link = package / name
        if not link.is_symlink():
            with contextlib.suppress(FileExistsError):  # another test process made it a moment ago
                link.symlink_to(target, target_is_directory=target.is_dir())
    return root


def installed_is_this_checkout() -> bool:
    """Whether ``import pixelroute`` (without help) finds this checkout's sdk/ (an editable install of it)."""
    try:
        spec = importlib.util.find_spec("pixelroute")
    except (ImportError, ValueError):
        return False
    # the parent, not the file: the link tree's __init__.py resolves to sdk/ as well
    return spec is not None and spec.origin is not None and Path(spec.origin).parent.resolve() == REPO / "sdk"


#: what to put first on ``sys.path`` for this checkout's ``pixelroute``: "" when the install is this checkout
IMPORT_PATH = "" if installed_is_this_checkout() else str(build_link_tree())
#: PYTHONPATH for the tests' subprocesses: the link tree when needed, and the repository root (``tests.*``)
SUBPROCESS_PYTHONPATH = os.pathsep.join(p for p in (IMPORT_PATH, str(REPO)) if p)

if __name__ == "__main__":
    sys.stdout.write(f"{build_link_tree()}\n")
