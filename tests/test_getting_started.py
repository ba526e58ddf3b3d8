"""docs/getting-started.md, followed literally: its walk-through runs in order, as one terminal.

Blocks are marked by the line before their fence:

- ``<!-- walkthrough -->`` before a ``sh`` block: each command runs (tests/_doc_commands.py:
  ``cd``/``export`` carry over, ``&`` starts a server, ``kill %1`` stops it), and must succeed;
- ``<!-- walkthrough: file NAME -->`` before a code block: the page says "save this as NAME";
  it is written to NAME in the current folder;
- ``<!-- walkthrough: setup -->``: the README's install (``make demo``, then activating
  ``.venv``). It is not run here (it would create a virtual environment); the session starts
  as after it, with the test environment's interpreter and tools first on ``PATH``.

``~`` is a fresh home folder; the documented ports are swapped for free ones.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._doc_commands import VENV_BIN, free_port, require_tool, session

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "getting-started.md"
MARKER = re.compile(r"<!-- walkthrough(?:: (setup|file (\S+)))? -->")


@dataclass
class Step:
    line: int
    kind: str  # "commands" | "file" | "setup"
    body: str
    name: str = ""

    def commands(self) -> list[str]:
        """The block's command lines, continuations joined, blank and comment-only lines dropped."""
        out: list[str] = []
        pending = ""
        for raw in self.body.splitlines():
            text = raw.strip()
            if text.endswith("\\"):
                pending += text[:-1].rstrip() + " "
                continue
            text = pending + text
            pending = ""
            if text and not text.startswith("#"):
                out.append(text)
        return out


def walkthrough(page: Path = PAGE) -> list[Step]:
    lines = page.read_text(encoding="utf-8").splitlines()
    steps = []
    for i, line in enumerate(lines):
        match = MARKER.fullmatch(line.strip())
        if not match:
            continue
        assert i + 1 < len(lines) and lines[i + 1].startswith("```"), f"{page.name}:{i + 1}: no code block after"
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{page.name}:{i + 2}: unclosed code block"
        body = "\n".join(lines[i + 2 : end]) + "\n"
        if match.group(1) == "setup":
            steps.append(Step(i + 1, "setup", body))
        elif match.group(2):
            steps.append(Step(i + 1, "file", body, match.group(2)))
        else:
            assert lines[i + 1].strip() == "```sh", f"{page.name}:{i + 2}: a walkthrough block runs in sh"
            steps.append(Step(i + 1, "commands", body))
    return steps


STEPS = walkthrough()


def test_the_walkthrough_starts_where_the_readme_ends() -> None:
    setup = [s for s in STEPS if s.kind == "setup"]
    words = [[shlex.join(shlex.split(c, comments=True)) for c in s.commands()] for s in setup]
    assert words == [["make demo", "source .venv/bin/activate"]]
    assert STEPS[0].kind == "setup"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.index("make demo") < 300  # the README's first command
    # `make demo` leaves the environment that `source .venv/bin/activate` switches on
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "VENV := .venv" in makefile and "$(PYTHON) -m venv $(VENV)" in makefile
    assert "\ndemo: $(STAMP)\n\t$(PY) -m pixelroute demo" in makefile


def test_the_page_marks_every_step_of_the_walkthrough() -> None:
    kinds = [s.kind for s in STEPS]
    assert kinds.count("file") >= 3 and kinds.count("commands") >= 5, kinds
    text = PAGE.read_text(encoding="utf-8")
    # the Flask app of step 5 has a router.py of its own and uses the Client and the extension
    files = {s.name: s.body for s in STEPS if s.kind == "file"}
    assert "router.py" in files and "from router import" in files["app.py"]
    assert "from pixelroute import SLA, Client" in files["app.py"] and "Pixelroute()" in files["app.py"]
    assert "pixelroute init" in text


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir for the module, like one user's: the tiny pipelines are built once."""
    return tmp_path_factory.mktemp("getting-started-cache")


def test_getting_started_walkthrough(tmp_path: Path, cache_dir: Path) -> None:
    require_tool("curl")
    home = tmp_path / "home"
    home.mkdir()
    clone = tmp_path / "clone"  # where the README's `make demo` ran
    clone.mkdir()
    ports = {"8000": str(free_port()), "5000": str(free_port())}
    with session(clone, cache_dir, ports, HOME=str(home)) as shell:
        assert shell.env["PATH"].split(":")[0] == VENV_BIN  # as after `source .venv/bin/activate`
        for step in STEPS:
            if step.kind == "file":
                (shell.cwd / step.name).write_text(step.body, encoding="utf-8")
            elif step.kind == "commands":
                for command in step.commands():
                    try:
                        shell.run(command)
                    except AssertionError as exc:
                        pytest.fail(f"getting-started.md:{step.line}: {exc}\n{shell.logs()}")
    hello, shop = home / "pixelroute-hello", home / "shop"
    # what the steps said they would leave behind
    for png in (hello / "bike.png", hello / "lighthouse.png", shop / "banner.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    answer = json.loads((hello / "answer.json").read_text())
    assert base64.b64decode(answer["data"][0]["b64_json"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert answer["request_id"]  # what feedback is reported against
    generated = json.loads((shop / "generated.json").read_text())
    assert generated["backend"] in {"local-fast", "local-quality"} and generated["request_id"]
    assert (hello / "pixelroute.db").is_file() and (shop / "pixelroute.db").is_file()
    assert (hello / "scenario-report" / "report.html").is_file()


def test_the_readmes_tour_runs_on_the_starter_config(tmp_path: Path, cache_dir: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    tour = re.search(r"^```python\n(.*?)^```$", readme, flags=re.MULTILINE | re.DOTALL)
    assert tour and 'Client.from_config("pixelroute.toml")' in tour.group(1)
    (tmp_path / "tour.py").write_text(tour.group(1), encoding="utf-8")
    with session(tmp_path, cache_dir) as shell:
        shell.run("pixelroute init")  # the file the tour loads, as its comment says
        done = shell.run("python tour.py")
    assert done is not None and re.match(r"local-(fast|quality) ", done.stdout), done.stdout
    assert (tmp_path / "sign.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
