"""The documentation is executed: runnable blocks run, the config reference is current, the site builds.

A block is runnable when the line before its opening fence is ``<!-- runnable -->`` (invisible
in GitHub and mkdocs alike). Each runs on its own in a fresh temp directory with the cache
dir isolated (conftest), so blocks must be self-contained and fast (MockBackend or tiny models).
"""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^```python\s*$")


def doc_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def runnable_blocks() -> list[tuple[str, str]]:
    """(``file:line`` id, source) for every block marked runnable."""
    blocks = []
    for page in doc_pages():
        if not page.is_file():
            continue
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() != MARKER:
                continue
            fence = i + 1
            if fence >= len(lines) or not FENCE.match(lines[fence]):
                raise AssertionError(
                    f"{page.relative_to(REPO)}:{i + 1}: {MARKER} must be followed by ```python"
                )
            end = next((j for j in range(fence + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise AssertionError(f"{page.relative_to(REPO)}:{fence + 1}: unclosed code block")
            blocks.append((f"{page.relative_to(REPO)}:{fence + 1}", "\n".join(lines[fence + 1 : end]) + "\n"))
    return blocks


BLOCKS = runnable_blocks()


def test_there_are_runnable_blocks_to_check() -> None:
    # the marker must not silently vanish from the pages that carry examples
    pages = {block_id.split(":")[0] for block_id, _ in BLOCKS}
    expected = {"docs/getting-started.md", "docs/concepts.md", "docs/configuration.md", "docs/edits.md"}
    assert expected <= pages, pages


@pytest.mark.parametrize(("block_id", "source"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_runnable_block(block_id: str, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "block.py"
    script.write_text(source, encoding="utf-8")
    runpy.run_path(str(script), run_name="__main__")


def test_configuration_reference_is_generated_from_the_current_settings_model() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "docs" / "gen_config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_generated_reference_names_every_setting() -> None:
    from pixelroute._config import ExecutionSettings, RouterSettings, TelemetrySettings

    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for section, model in (
        ("telemetry", TelemetrySettings),
        ("router", RouterSettings),
        ("execution", ExecutionSettings),
    ):
        for name in model.model_fields:
            assert f"`{section}.{name}`" in page and f"PIXELROUTE_{section.upper()}__{name.upper()}" in page


def test_mkdocs_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "concepts" / "index.html").is_file()
