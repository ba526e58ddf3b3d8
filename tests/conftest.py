"""Shared fixtures. Tests run offline on 2 CPU cores: keep torch to one thread."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# On 2 cores a tiny pipeline call drops from seconds to tens of milliseconds with one thread.
# Only set it when torch is already wanted: `import pixelroute` must stay light in the light tests.
if "torch" in sys.modules or os.environ.get("PIXELROUTE_TEST_TORCH", "1") == "1":
    import torch

    torch.set_num_threads(1)

from tests._import_root import IMPORT_PATH, SUBPROCESS_PYTHONPATH

# this checkout's pixelroute, in this process and in every subprocess that inherits the environment
if IMPORT_PATH:
    sys.path.insert(0, IMPORT_PATH)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SUBPROCESS_PYTHONPATH, os.environ.get("PYTHONPATH")) if p)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The read-only ../shared folder (prompt sets, backend figures)."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared is not present at {SHARED}")
    return SHARED


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's PIXELROUTE_* settings or writes to the real cache dir."""
    for key in list(os.environ):
        if key.startswith("PIXELROUTE_") and key != "PIXELROUTE_TEST_POSTGRES_URL":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PIXELROUTE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
