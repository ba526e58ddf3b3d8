"""The documentation is executed and checked: runnable blocks run, the config reference is current, and
the Markdown has none of the mistakes that render badly (a list glued to a paragraph, an escaped pipe in
a table's code span, a sentence for a title). The built site is checked in tests/test_docs_site.py.

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


# ------------------------------------------------------------------------ Markdown that renders badly

LIST_ITEM = re.compile(r"^(?P<indent> *)(?P<marker>[-*+]|\d+[.)]) +\S")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks and HTML comments."""
    out = []
    fenced = comment = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if comment or stripped.startswith("<!--"):
            comment = "-->" not in stripped
            continue
        if not fenced:
            out.append((number, line))
    return out


def list_problems(text: str, name: str) -> list[str]:
    """Python-Markdown (mkdocs) needs a blank line between a paragraph and a list, and 4 spaces to nest.

    GitHub forgives both, so a page can look right there and still collapse a list into a paragraph
    on the site: ``- a`` directly under a line of text is that text's continuation, not an item.
    """
    problems = []
    previous = "blank"  # what the line before was: blank, list (an item or its continuation), or text
    for number, line in prose_lines(text):
        where = f"{name}:{number}"
        item = LIST_ITEM.match(line)
        if not line.strip():
            previous = "blank" if previous != "list" else "list-gap"
        elif item:
            # a wrapped sentence may put "6. Medians ..." at a line's start: only "1." begins a numbered list
            starts_a_list = item.group("marker") in "-*+" or item.group("marker")[:-1] == "1"
            if previous == "text" and starts_a_list:
                problems.append(f"{where}: a list item directly after a paragraph line needs a blank line before it")
            indent = len(item.group("indent"))
            if 0 < indent < 4:
                problems.append(f"{where}: a nested list item needs 4 spaces of indentation, not {indent}")
            previous = "list"
        elif previous == "list" or (previous == "list-gap" and line.startswith(" ")):
            previous = "list"  # a continuation line of the item
        elif line.startswith(":::") or (previous == "directive" and line.startswith(" ")):
            previous = "directive"  # mkdocstrings' `::: name` and its indented YAML options
        elif line.lstrip().startswith(("#", "|", "<", "!!!", "???")):
            previous = "block"
        else:
            previous = "text"
    return problems


def test_list_checker_flags_a_list_glued_to_a_paragraph() -> None:
    text = (
        "Paying once:\n- first\n  continued\n- second\n\n- ok\n  - two spaces\n\n::: a.b\n    options:\n      - x\n"
        "\nfor X = 2, 4 and\n6. Medians (a sentence, not a list)\n"
    )
    problems = list_problems(text, "probe.md")
    assert len(problems) == 2, problems
    assert ":2: a list item directly after a paragraph line" in problems[0]
    assert ":7: a nested list item needs 4 spaces" in problems[1]


def test_no_page_has_a_broken_list() -> None:
    problems = [
        problem
        for page in doc_pages()
        if page.is_file()
        for problem in list_problems(page.read_text(encoding="utf-8"), str(page.relative_to(REPO)))
    ]
    assert not problems, "\n".join(problems)


def test_no_table_cell_escapes_a_pipe_inside_code() -> None:
    """In a table, ``\\|`` inside a code span shows its backslash on the site: say "or" instead."""
    problems = []
    for page in sorted((REPO / "docs").rglob("*.md")):
        for number, line in prose_lines(page.read_text(encoding="utf-8")):
            if not line.lstrip().startswith("|"):
                continue
            code_spans = line.split("`")[1::2]
            if any("\\|" in span for span in code_spans):
                problems.append(f"{page.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not problems, "\n".join(problems)


MAX_TITLE = 40


def nav_titles(nav: list[object]) -> list[str]:
    titles = []
    for entry in nav:
        if isinstance(entry, dict):
            for title, value in entry.items():
                titles.append(title)
                if isinstance(value, list):
                    titles += nav_titles(value)
    return titles


def test_page_titles_are_short() -> None:
    """A title names the page; what it covers goes in the first paragraph."""
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with mkdocs (dev extra)")
    long_titles = []
    for page in sorted((REPO / "docs").rglob("*.md")):
        lines = prose_lines(page.read_text(encoding="utf-8"))
        heading = next((line for _, line in lines if line.startswith("# ")), None)
        assert heading is not None, f"{page.relative_to(REPO)} has no H1"
        if len(heading[2:].replace("`", "")) > MAX_TITLE:
            long_titles.append(f"{page.relative_to(REPO)}: {heading}")
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    long_titles += [f"mkdocs.yml nav: {t}" for t in nav_titles(config["nav"]) if len(t) > MAX_TITLE]
    assert not long_titles, "\n".join(long_titles)


def test_readme_opens_with_exactly_the_two_commands() -> None:
    """A fresh machine with Python 3.11 and make needs these two and nothing else."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert readme.index("```sh") < 100
    assert [line.split("#")[0].strip() for line in block.splitlines() if line.strip()] == ["make demo", "make test"]
