"""mkdocs hooks (mkdocs.yml ``hooks:``), run by every ``mkdocs build`` and ``mkdocs serve``.

The API reference reads the ``pixelroute`` package from source, but that import name has no folder of its
own (pyproject.toml maps sdk/ and router/ onto it). tests/_import_root.py builds the tree of links,
build/import-root/pixelroute/, that mypy reads too; mkdocs.yml points mkdocstrings at it, so it must
exist before a page is rendered.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def on_startup(**kwargs: Any) -> None:
    spec = importlib.util.spec_from_file_location("_pixelroute_import_root", REPO / "tests" / "_import_root.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_link_tree()
