"""Headless Chromium (Debian's ``chromium``) for the report tests: screenshots and what a reader sees.

Skipped where Chromium is missing, except under ``CI=true``, where a missing browser is a failure
(``make test`` installs it): a report that is never rendered must not pass as checked.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from PIL import Image

from tests._chromium_pipe import HEADLESS_FLAGS
from tests._system_programs import system_program


def chromium() -> str:
    return system_program("chromium", "chromium-browser", package="chromium", purpose="the HTML render")


def _run(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        exe,
        *HEADLESS_FLAGS,
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def screenshot(
    exe: str, html: Path, tmp_path: Path, name: str = "shot.png", size: tuple[int, int] = (1280, 2000)
) -> Image.Image:
    """A PNG of ``html`` as a window of ``size`` shows it, kept as ``tmp_path / name`` for a person to look at."""
    shot = tmp_path / name
    done = _run(exe, tmp_path, f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}", html.resolve().as_uri())
    assert done.returncode == 0 and shot.is_file(), textwrap.shorten(done.stderr, 2000)
    with Image.open(shot) as img:
        return img.convert("RGB")


_PROBE = """<!DOCTYPE html><html><body><pre id="out">pending</pre>
<iframe id="page" src="{src}" width="1280" height="900"></iframe>
<script>
// runs after the frame and every image in it have loaded or failed (the window's load event waits for both)
window.addEventListener("load", () => {{
  const doc = document.getElementById("page").contentDocument;
  const images = [...doc.images].map(i => ({{src: i.getAttribute("src"), loaded: i.complete && i.naturalWidth > 0}}));
  document.getElementById("out").textContent = JSON.stringify({{text: doc.body.innerText, images: images}});
}});
</script></body></html>
"""


def rendered(exe: str, html: Path, tmp_path: Path) -> dict[str, Any]:
    """What a reader of ``html`` sees: ``text`` (the rendered text) and ``images`` (``src``, ``loaded``).

    A probe page beside the report frames it and reads the frame once everything has loaded; file
    pages may read each other only with ``--allow-file-access-from-files``.
    """
    probe = html.parent / ".chromium-probe.html"
    probe.write_text(_PROBE.format(src=html_lib.escape(html.name, quote=True)))
    try:
        done = _run(
            exe, tmp_path, "--allow-file-access-from-files", "--virtual-time-budget=15000", "--dump-dom",
            probe.resolve().as_uri(),
        )
    finally:
        probe.unlink()
    assert done.returncode == 0, textwrap.shorten(done.stderr, 2000)
    match = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    assert match and match.group(1) != "pending", textwrap.shorten(done.stdout, 2000)
    result: dict[str, Any] = json.loads(html_lib.unescape(match.group(1)))
    return result


#: Markdown a rendered page must not show: table rules, image and link syntax, headings, emphasis, code
MARKDOWN_SYNTAX = re.compile(r"\|\s*-{3}|!\[|\]\(|^#{1,6} |\*\*|`", re.M)
