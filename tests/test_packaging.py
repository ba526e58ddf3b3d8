"""One import name: sdk/ is ``pixelroute``, router/ is ``pixelroute.router``, and nothing imports ``sdk`` or ``router``.

Top-level ``sdk`` and ``router`` modules clashed with an application's own ``router.py`` or ``sdk/``; these
checks keep the wheel's package list complete and every reference on the new names.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"pixelroute": REPO / "sdk", "pixelroute.router": REPO / "router"}
#: a module path on the old name, as importlib, RQ, gunicorn or Django would be handed it ("sdk" alone is the folder)
OLD_MODULE_STRING = re.compile(r"^sdk[.:][A-Za-z_][\w.:]*$")


def _python_files() -> Iterator[Path]:
    for top in ("sdk", "router", "tests", "benchmarks", "examples", "docs"):
        yield from sorted((REPO / top).rglob("*.py"))


def test_the_wheel_lists_every_package_under_its_import_name() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {name: folder.name for name, folder in FOLDERS.items()}
    found = {
        ".".join([name, *init.parent.relative_to(folder).parts])
        for name, folder in FOLDERS.items()
        for init in folder.rglob("__init__.py")
    }
    assert sorted(config["packages"]) == sorted(found)
    assert config["package-data"].keys() == FOLDERS.keys()
    script = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["pixelroute"]
    assert script == "pixelroute.cli:main"


def test_no_code_imports_the_old_top_level_names() -> None:
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("sdk"):
                names = [node.value] if OLD_MODULE_STRING.match(node.value) else []
            if any(name.split(".")[0] in ("sdk", "router") for name in names):
                offenders.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}: {names}")
    assert offenders == []


def test_the_router_imports_nothing_from_the_rest_of_pixelroute() -> None:
    router = FOLDERS["pixelroute.router"]
    offenders = []
    for path in sorted(router.rglob("*.py")):
        depth = len(path.parent.relative_to(router).parts)  # packages below pixelroute.router
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level > depth + 1:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: a relative import above the router")
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            for module in modules:
                if module.split(".")[0] == "pixelroute" and not re.match(r"^pixelroute\.router(\.|$)", module):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: imports {module}")
    assert offenders == []


def test_docs_and_examples_show_the_new_names() -> None:
    old = re.compile(r"\b(?:from|import) (?:sdk|router)\b|-m sdk\b|[\"'`]sdk\.[a-z_]")
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "examples").rglob("*")),
             REPO / "Makefile", REPO / ".ci" / "run"]
    offenders = [
        f"{page.relative_to(REPO)}:{n}"
        for page in pages
        if page.is_file()
        for n, line in enumerate(page.read_text(errors="replace").splitlines(), 1)
        # getting-started's Flask app imports its own router.py, to show it no longer clashes
        if old.search(line) and "the app's" not in line
    ]
    assert offenders == []
