"""The built docs site: a strict build, every internal link and anchor, the API reference, and pages in Chromium.

The site is built once for the module (``mkdocs build --strict``, as ``make docs``). The browser test serves it
over HTTP, as the search needs (its worker fetches the index; ``file://`` refuses that), loads pages in headless
Chromium over the DevTools pipe, checks what a reader would see (highlighted code with copy buttons, tables that
fit or scroll in their wrapper, no page wider than the window, search answering) and writes full-page
screenshots to build/docs-screenshots/ for a person to look at.
"""

from __future__ import annotations

import functools
import html.parser
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

from tests._chromium import chromium
from tests._chromium_pipe import Chromium

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "build" / "docs-screenshots"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's banner about MkDocs 2.0, not about this site
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


class PageParser(html.parser.HTMLParser):
    """The ids a page defines and the links it makes (``href`` and ``src``), and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            linking = (name == "href" and tag in ("a", "link")) or (name == "src" and tag in ("img", "script"))
            if linking and value:
                self.links.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@functools.cache
def parsed(page: Path) -> PageParser:
    parser = PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def site_pages(site: Path) -> list[Path]:
    # 404.html is served for unknown paths; its relative links are written for the site root
    return [p for p in sorted(site.rglob("*.html")) if p.name != "404.html"]


def test_mkdocs_builds_strict(site: Path) -> None:
    assert (site / "concepts" / "index.html").is_file()
    assert (site / "api" / "client" / "index.html").is_file()
    assert (site / "search" / "search_index.json").is_file()


def broken_links(site: Path) -> tuple[list[str], int]:
    """(each internal link whose page or anchor is missing, how many internal links were checked)."""
    broken = []
    checked = 0
    for page in site_pages(site):
        base = "/" + page.relative_to(site).as_posix()
        for link in parsed(page).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link == "#":
                continue  # external (not fetched: the tests run offline), or the top of the page
            checked += 1
            path = unquote(urlsplit(urljoin(base, link)).path)
            target = site / path.lstrip("/")
            if path.endswith("/") or target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(site)}: {link}"
            if not target.is_file():
                broken.append(f"{where} (no {target.relative_to(site)})")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in parsed(target).ids:
                broken.append(f"{where} (no anchor #{parts.fragment} in {target.relative_to(site)})")
    return broken, checked


def test_link_checker_finds_a_missing_page_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text('<h2 id="here">x</h2><a href="#here">ok</a>', encoding="utf-8")
    (tmp_path / "index.html").write_text(
        '<a href="a/">ok</a><a href="a/#here">ok</a><a href="a/#gone">bad anchor</a>'
        '<a href="b/">bad page</a><a href="https://example.org/x">external</a>',
        encoding="utf-8",
    )
    broken, checked = broken_links(tmp_path)
    assert checked == 5
    assert broken == ["index.html: a/#gone (no anchor #gone in a/index.html)", "index.html: b/ (no b/index.html)"]


def test_every_internal_link_and_anchor_resolves(site: Path) -> None:
    """mkdocs checks the Markdown's links; this checks the HTML (theme, API reference, raw HTML too)."""
    broken, checked = broken_links(site)
    assert checked > 1000  # every page's navigation alone links each page: the walk saw the site
    assert not broken, "\n".join(broken[:50])


def test_api_reference_documents_every_public_name(site: Path) -> None:
    import pixelroute
    import pixelroute.router

    documented = {
        anchor.rsplit(".", 1)[-1]
        for page in (site / "api").rglob("*.html")
        for anchor in parsed(page).ids
        if anchor.startswith("pixelroute.") and "--" not in anchor
    }
    missing = sorted(set(pixelroute.__all__) - documented) + sorted(
        f"router.{n}" for n in set(pixelroute.router.__all__) - documented
    )
    assert not missing, f"public names without an API reference entry: {missing}"


def test_no_page_shows_markup_that_did_not_render(site: Path) -> None:
    """An escaped pipe inside a table's code span, a Sphinx role or a reST ``::`` shows as typed."""
    leftovers = re.compile(r"\\\||:(?:class|meth|func|attr|exc|mod|data):`|^\s*::\s*$", re.M)
    found = []
    for page in site_pages(site):
        text = "".join(parsed(page).text)
        found += [f"{page.relative_to(site)}: {m.group(0)!r}" for m in leftovers.finditer(text)]
    assert not found, "\n".join(found[:30])


# ------------------------------------------------------------------------------ in headless Chromium

#: (page, what the screenshot is called); each is also checked in the browser
PAGES = [
    ("getting-started/", "getting-started"),
    ("configuration/", "configuration"),
    ("backends/replicate/", "backend-replicate"),
    ("api/client/", "api-client"),
]
MATERIAL_INDIGO = (64, 81, 181)  # the header bar: the theme's stylesheet loaded and painted

#: what a reader sees, measured in the page once its scripts ran
PAGE_FACTS = """(() => {
  const wraps = [...document.querySelectorAll('.md-typeset__scrollwrap')];
  return {
    title: document.querySelector('.md-content h1').textContent.replace('¶', '').trim(),
    pageWidth: document.documentElement.scrollWidth,
    windowWidth: window.innerWidth,
    tables: document.querySelectorAll('.md-content table').length,
    wrappedTables: document.querySelectorAll('.md-typeset__scrollwrap table').length,
    tablesThatScroll: wraps.filter(w => w.scrollWidth > w.clientWidth + 1).length,
    codeBlocks: document.querySelectorAll('.md-content pre > code').length,
    highlightedBlocks: [...document.querySelectorAll('.md-content .highlight pre > code')]
      .filter(c => c.querySelector('span[class]')).length,
    copyButtons: document.querySelectorAll('.md-content .md-code__button, .md-content .md-clipboard').length,
    escapedPipes: document.querySelector('.md-content').innerText.includes('\\\\|'),
  };
})()"""


@pytest.fixture
def served_site(site: Path) -> Iterator[tuple[str, list[str]]]:
    """(base URL, paths requested so far) of a local HTTP server over the built site."""
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requested.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_docs_pages_in_headless_chromium(served_site: tuple[str, list[str]], tmp_path: Path) -> None:
    from PIL import Image

    exe = chromium()
    base, requested = served_site
    SHOTS.mkdir(parents=True, exist_ok=True)
    with Chromium(exe, tmp_path / "profile", width=1280, height=1000) as page:
        for path, name in PAGES:
            page.goto(base + path)
            # the theme's script wraps every table (the wrapper is what scrolls) and adds the copy buttons
            page.wait_until(
                "document.querySelectorAll('.md-content table').length"
                " === document.querySelectorAll('.md-typeset__scrollwrap table').length"
            )
            facts = page.evaluate(PAGE_FACTS)
            assert len(facts["title"]) <= 40, (path, facts["title"])
            assert facts["pageWidth"] <= facts["windowWidth"], (path, facts)  # nothing overflows the page
            assert not facts["escapedPipes"], path
            assert facts["codeBlocks"] > 0 and facts["highlightedBlocks"] == facts["codeBlocks"], (path, facts)
            assert facts["copyButtons"] == facts["codeBlocks"], (path, facts)
            if path == "configuration/":
                # the generated reference fits at a laptop's width: no table of it needs its scroll bar
                assert facts["tables"] >= 5 and facts["tablesThatScroll"] == 0, facts
            shot = page.screenshot(SHOTS / f"{name}.png")
            with Image.open(shot) as img:
                rgb = img.convert("RGB")
            assert rgb.width == 1280 and rgb.height > 1000, (name, rgb.size)
            assert rgb.getpixel((10, 10)) == MATERIAL_INDIGO, name
            assert len(rgb.getcolors(maxcolors=1 << 20) or []) > 200, name  # text was drawn, not a blank page

        # search: the query in the address opens the search box; its worker fetches the index over HTTP
        page.goto(base + "configuration/?q=deadline")
        found = page.wait_until("document.querySelectorAll('.md-search-result__item').length")
        assert found > 0
        assert "/search/search_index.json" in requested
        page.screenshot(SHOTS / "search.png", max_height=1000)
