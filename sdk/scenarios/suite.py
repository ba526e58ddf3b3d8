"""Scenario suites: named sets of prompts that probe one known weakness each.

Global scores hide the failures people actually fix by hand: text that comes out garbled,
objects that merge where one hides another, reflections that do not match the scene, and the
wrong number of things. The built-in suite holds the project's own prompts for those four
scenarios plus a control set of simple stylistic prompts (where every backend should do
well, so a difference there is a cost or latency difference, not a quality one).

Larger labelled sets are read from a file (:func:`load_suite`): a TSV with ``Prompt`` and
``Challenge`` columns (the PartiPrompts layout) or JSON Lines with ``prompt`` and
``scenario`` keys.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import ValidationError


@dataclass(frozen=True)
class ScenarioPrompt:
    """One prompt of a scenario and what a scorer may check in its image."""

    prompt: str
    #: text the image must show legibly (typography); ``None`` when the prompt asks for none
    expect_text: str | None = None


@dataclass(frozen=True)
class Scenario:
    """A named group of prompts and the automatic scorers that apply to them."""

    name: str
    title: str
    description: str
    prompts: tuple[ScenarioPrompt, ...]
    #: scorer names (see :mod:`pixelroute.scenarios.scorers`); unavailable ones are skipped and reported
    scorers: tuple[str, ...] = ("clip",)


@dataclass(frozen=True)
class Suite:
    """An ordered list of scenarios with the name the report shows."""

    name: str
    scenarios: tuple[Scenario, ...] = field(default_factory=tuple)

    def limited(self, per_scenario: int | None) -> Suite:
        """The same suite with at most ``per_scenario`` prompts in each scenario (first ones kept)."""
        if per_scenario is None:
            return self
        if per_scenario < 1:
            raise ValidationError(
                f"`max_per_scenario` must be at least 1 but is {per_scenario}",
                field="max_per_scenario",
                value=per_scenario,
            )
        return Suite(
            self.name,
            tuple(
                Scenario(s.name, s.title, s.description, s.prompts[:per_scenario], s.scorers)
                for s in self.scenarios
            ),
        )

    def select(self, names: list[str] | None) -> Suite:
        """Only the scenarios named in ``names`` (in the suite's order); all when ``None``."""
        if not names:
            return self
        known = {s.name for s in self.scenarios}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValidationError(
                f"`scenarios` must name scenarios of suite {self.name!r} ({', '.join(sorted(known))}) "
                f"but includes {', '.join(repr(n) for n in unknown)}",
                field="scenarios",
                value=names,
            )
        return Suite(self.name, tuple(s for s in self.scenarios if s.name in names))


def _p(prompt: str, text: str | None = None) -> ScenarioPrompt:
    return ScenarioPrompt(prompt, text)


_BUILTIN = (
    Scenario(
        "typography",
        "Typography",
        "Short, exact text rendered on a surface. The OCR scorer reads it back when tesseract is installed.",
        (
            _p('a hand-painted wooden sign at a farm stall that reads "FRESH EGGS"', "FRESH EGGS"),
            _p('a vintage enamel street plate on a brick wall with the words "MILL LANE"', "MILL LANE"),
            _p('a chalkboard menu outside a cafe with "SOUP 4" written in white chalk', "SOUP 4"),
            _p('a paperback book cover with the title "NIGHT FERRY" in bold serif letters', "NIGHT FERRY"),
            _p('a green neon sign glowing "OPEN LATE" above a shop door at dusk', "OPEN LATE"),
            _p('a cardboard box stamped "FRAGILE" in red ink, studio photo', "FRAGILE"),
        ),
        ("ocr", "clip"),
    ),
    Scenario(
        "occlusion",
        "Multi-object occlusion",
        "Several objects where one partly hides another; checks that objects stay separate and whole.",
        (
            _p("a tabby cat sitting behind a clear vase of tulips, its face half hidden by the stems"),
            _p("three bicycles leaning against each other at a rack, wheels overlapping"),
            _p("a stack of four books with a pair of glasses lying across the top two"),
            _p("a child peeking out from behind a red umbrella held by an adult in a park"),
            _p("a teapot in front of two cups, the handle of one cup hidden behind the teapot"),
        ),
    ),
    Scenario(
        "reflection",
        "Reflective and transparent surfaces",
        "Mirrors, water, glass and chrome: the reflection or refraction must agree with the scene.",
        (
            _p("a yellow rubber duck reflected in a bathroom mirror, both duck and reflection visible"),
            _p("a glass of water on a table bending the stripes of the tablecloth behind it"),
            _p("a city skyline at night mirrored in a calm river"),
            _p("a chrome kettle reflecting a kitchen window and a potted basil plant"),
            _p(
                "a wine glass half full of red wine in front of a lit candle, "
                "light refracted through the glass"
            ),
        ),
    ),
    Scenario(
        "counting",
        "Counting and plurals",
        "An exact number of things, singular against plural; "
        "a wrong count costs a person an inpainting pass.",
        (
            _p("exactly three red apples on a white plate"),
            _p("one dog and two cats sleeping on a sofa"),
            _p("five candles on a birthday cake"),
            _p("a single lemon next to four limes on a wooden board"),
            _p("seven colourful balloons tied to a park bench"),
        ),
    ),
    Scenario(
        "control",
        "Control: simple stylistic prompts",
        "Easy prompts every backend should handle; differences here are cost and latency, not quality.",
        (
            _p("a watercolour painting of a lighthouse on a cliff"),
            _p("a minimalist poster of a mountain at sunrise, flat colours"),
            _p("an oil painting of a bowl of pears in warm light"),
            _p("a pencil sketch of an old oak tree"),
            _p("a low-poly 3d render of a fox"),
        ),
    ),
)


def builtin_suite() -> Suite:
    """The project's own prompts: typography, occlusion, reflection, counting, and a control set."""
    return Suite("builtin", _BUILTIN)


#: scorers per scenario name for suites read from files; anything else gets CLIP only
_FILE_SCORERS: dict[str, tuple[str, ...]] = {"typography": ("ocr", "clip")}
#: PartiPrompts' Challenge labels that correspond to a built-in scenario
_ALIASES = {"writing-symbols": "typography", "quantity": "counting"}
_QUOTED = re.compile(r"[\"\u201c\u201d]([^\"\u201c\u201d]{1,60})[\"\u201c\u201d]|'([^']{1,60})'")


def slug(label: str) -> str:
    """A scenario name from a free-text label: ``"Writing & Symbols"`` -> ``"writing-symbols"``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def quoted_text(prompt: str) -> str | None:
    """The first quoted span of ``prompt`` (the text a typography prompt asks for), if any."""
    match = _QUOTED.search(prompt)
    if not match:
        return None
    return (match.group(1) or match.group(2)).strip() or None


def load_suite(path: str | Path) -> Suite:
    """Read a labelled prompt set: a TSV (``Prompt``, ``Challenge``) or JSONL (``prompt``, ``scenario``).

    Scenarios keep the file's order of first appearance. Labels are slugged; PartiPrompts'
    "Writing & Symbols" becomes ``typography`` and "Quantity" becomes ``counting`` so the
    matching scorers apply. A row without a prompt or label is an error naming its line.
    """
    p = Path(path)
    if not p.is_file():
        raise ValidationError(
            f"`suite` must be `builtin` or an existing file but is {str(p)!r}", field="suite", value=str(p)
        )
    rows = _read_tsv(p) if p.suffix.lower() in (".tsv", ".txt") else _read_jsonl(p)
    grouped: dict[str, list[ScenarioPrompt]] = {}
    titles: dict[str, str] = {}
    for prompt, label in rows:
        name = _ALIASES.get(slug(label), slug(label))
        titles.setdefault(name, label)
        grouped.setdefault(name, []).append(
            ScenarioPrompt(prompt, quoted_text(prompt) if name == "typography" else None)
        )
    if not grouped:
        raise ValidationError(f"`suite` file {str(p)!r} holds no prompts", field="suite", value=str(p))
    scenarios = tuple(
        Scenario(
            name,
            titles[name],
            f"{len(prompts)} prompts labelled {titles[name]!r} in {p.name}",
            tuple(prompts),
            _FILE_SCORERS.get(name, ("clip",)),
        )
        for name, prompts in grouped.items()
    )
    return Suite(p.stem, scenarios)


def _read_tsv(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = {c.lower(): c for c in reader.fieldnames or []}
        if "prompt" not in columns or not ({"challenge", "scenario"} & columns.keys()):
            raise ValidationError(
                f"`suite` TSV {str(path)!r} needs `Prompt` and `Challenge` (or `Scenario`) columns "
                f"but has {reader.fieldnames}",
                field="suite",
                value=str(path),
            )
        label_col = columns.get("challenge") or columns["scenario"]
        out = []
        for line_no, row in enumerate(reader, start=2):
            prompt, label = (row.get(columns["prompt"]) or "").strip(), (row.get(label_col) or "").strip()
            if not prompt or not label:
                raise ValidationError(
                    f"`suite` {str(path)!r} line {line_no} lacks a prompt or a label: {row!r}",
                    field="suite",
                    value=line_no,
                )
            out.append((prompt, label))
        return out


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(
                    f"`suite` {str(path)!r} line {line_no} is not JSON: {exc}", field="suite", value=line_no
                ) from None
            prompt = row.get("prompt") if isinstance(row, dict) else None
            label = row.get("scenario") if isinstance(row, dict) else None
            if (
                not isinstance(prompt, str)
                or not prompt.strip()
                or not isinstance(label, str)
                or not label.strip()
            ):
                raise ValidationError(
                    f"`suite` {str(path)!r} line {line_no} needs string `prompt` and `scenario` "
                    f"but is {row!r}",
                    field="suite",
                    value=line_no,
                )
            out.append((prompt.strip(), label.strip()))
    return out
