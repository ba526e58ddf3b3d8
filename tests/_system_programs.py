"""System programs some tests drive (Debian packages, not pip ones), found on PATH.

``make test`` installs them when missing and permitted (``.ci/system_packages.sh``). A test that
needs one fails under ``CI=true`` when it is missing (CI must run it), and elsewhere skips with
the command that installs it.
"""

from __future__ import annotations

import os
import shutil

import pytest


def system_program(*names: str, package: str, purpose: str) -> str:
    """The path of the first of ``names`` on PATH; fail (CI) or skip (elsewhere) when none is."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    what = f"`{names[0]}` (Debian package {package}) is not installed, so {purpose} is unchecked"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}; under CI=true it must be: `make test` installs it (.ci/system_packages.sh)")
    pytest.skip(f"{what}; install it with `sudo apt-get install {package}`, or run `make test` as root")
