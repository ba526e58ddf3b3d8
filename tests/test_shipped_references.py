"""What ships cites only the repository: its docs/ are the reference, not notes outside it.

A help text, docstring, example or page that points at a design note or a folder beside the
checkout sends a user to something they do not have.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["sdk", "router", "docs", "examples", "README.md"]
OUTSIDE = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared\b|/work/shared\b")


def shipped_text_files() -> list[Path]:
    files: list[Path] = []
    for entry in SHIPPED:
        path = REPO / entry
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in candidates if "__pycache__" not in p.parts]
    return files


def test_no_shipped_file_cites_a_note_or_path_outside_the_repository() -> None:
    found = []
    for path in shipped_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images, model weights
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in OUTSIDE.finditer(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)}")
    assert found == [], "cite the docs/ page instead:\n" + "\n".join(found)


def test_the_check_sees_the_shipped_files() -> None:
    names = {p.relative_to(REPO).as_posix() for p in shipped_text_files()}
    assert {"README.md", "sdk/cli/train.py", "docs/telemetry.md", "examples/config.example.toml"} <= names
