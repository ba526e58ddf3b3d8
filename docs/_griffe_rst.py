"""A griffe extension (mkdocs.yml, mkdocstrings ``extensions``): the source's reST docstrings as Markdown.

The docstrings are written for a reader of the source and for ``help()``: Sphinx roles
(``:class:`~pixelroute.SLA```) and ``::`` literal blocks. mkdocstrings renders docstrings as Markdown,
where a role shows as its literal text and a literal block as an unhighlighted block under a stray ``::``.
This rewrites them when the API reference is built, so the source keeps one convention:

- ``:role:`~a.b.C``` -> `` `C` `` and ``:role:`a.b.C``` -> `` `a.b.C` `` (a code span: most targets are private
  modules the reference does not show, and an unresolved link would fail the strict build);
- a paragraph ending in ``::`` (or a line of only ``::``) followed by an indented block -> a fenced block,
  highlighted as Python when it parses as Python;
- double backticks -> single ones (the same code span, without the doubled marks in the page source).
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|exc|data|mod|obj|const):`(~?)([^`]+)`")


def role_to_code(match: re.Match[str]) -> str:
    target = match.group(2).strip()
    if "<" in target and target.endswith(">"):  # :class:`title <target>`
        return f"`{target.split('<', 1)[0].strip()}`"
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def literal_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.rstrip()
        if stripped.endswith("::") and not stripped.lstrip().startswith(("```", ">>>")):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            base = len(line) - len(line.lstrip())
            block_end = j
            while block_end < len(lines) and (
                not lines[block_end].strip() or len(lines[block_end]) - len(lines[block_end].lstrip()) > base
            ):
                block_end += 1
            if block_end > j:
                lead = stripped[:-2].rstrip()
                if lead.strip():
                    out.append(lead + ":")
                    out.append("")
                block = textwrap.dedent("\n".join(lines[j:block_end])).strip("\n")
                indent = " " * base
                out.append(f"{indent}```{language(block)}")
                out.extend(f"{indent}{b}" if b else "" for b in block.split("\n"))
                out.append(f"{indent}```")
                out.append("")
                i = block_end
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def language(block: str) -> str:
    """``python`` for a block that parses as Python; ``text`` for the rest (a tree, a shell line, output)."""
    try:
        ast.parse(block)
    except SyntaxError:
        return "text"
    return "python"


def to_markdown(text: str) -> str:
    """Literal blocks first, so that the roles and double backticks inside them stay as written."""
    parts = re.split(r"(^[ \t]*```.*?^[ \t]*```[ \t]*$)", literal_blocks(text), flags=re.M | re.S)
    for i in range(0, len(parts), 2):  # the even parts are outside fences
        prose = ROLE.sub(role_to_code, parts[i])
        parts[i] = re.sub(r"(?<!`)``([^`]+)``(?!`)", r"`\1`", prose)
    return "".join(parts)


class RestDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
