"""Pluggable scorers: automatic checks that run only where their engine is installed.

A scorer has a ``name``, says why it cannot run (:meth:`Scorer.unavailable`, ``None`` when it
can) and scores one image in ``[0, 1]`` or returns ``None`` when the prompt gives it nothing to
check. A scenario lists the scorers that apply to it; unavailable ones are skipped and the
report says why, so a machine without tesseract or a CLIP model still produces a report.

Shipped: :class:`OcrScorer` (tesseract reads back the text a typography prompt asks for) and
:class:`ClipScorer` (prompt-image agreement from a local CLIP model). A person's verdict is
not a scorer: it goes through the feedback API (see :class:`Review` and the runner).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .._errors import ConfigError, ValidationError
from .suite import ScenarioPrompt

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class Score:
    """One scorer's judgement of one image."""

    scorer: str
    value: float
    #: what the scorer saw, for the report (e.g. the text OCR read)
    detail: str = ""
    #: the measurements behind ``value`` (OCR: see :class:`TextMetrics`), summed or averaged in the report
    metrics: dict[str, float] = field(default_factory=dict)


class Scorer(Protocol):
    """What the runner needs from a scorer."""

    name: str

    def unavailable(self) -> str | None:
        """Why this scorer cannot run on this machine, or ``None`` when it can."""

    def score(self, image: Image, item: ScenarioPrompt) -> Score | None:
        """Score ``image`` for ``item``; ``None`` when there is nothing to check."""


def clean_text(text: str) -> str:
    """Text as OneIG-Bench compares it: symbols removed, runs of spaces collapsed, case kept."""
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())


def levenshtein(a: str, b: str) -> int:
    """Edits (insertions, deletions, substitutions of one character) that turn ``a`` into ``b``."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class TextMetrics:
    """How well an image's text matches the text asked for, as OneIG-Bench's text-rendering dimension measures it.

    Both strings are cleaned (:func:`clean_text`) and compared case-sensitively: ``edit_distance`` is
    their Levenshtein distance (ED), ``complete`` says it is 0 (the completion rate CR averages it), and
    ``words_correct`` of ``words`` target words appear among the words read (word accuracy WAC = the
    sum of one over the sum of the other, over a set of images).
    """

    edit_distance: int
    complete: bool
    words: int
    words_correct: int
    #: longer of the two cleaned strings: ``edit_distance / length`` is the normalised edit distance
    length: int

    @property
    def word_accuracy(self) -> float:
        return self.words_correct / self.words if self.words else 1.0

    @property
    def similarity(self) -> float:
        """1 - the normalised edit distance, in [0, 1] (1: the text reads exactly as asked)."""
        return 1.0 - self.edit_distance / self.length if self.length else 1.0

    def as_dict(self) -> dict[str, float]:
        return {"edit_distance": float(self.edit_distance), "complete": float(self.complete),
                "words": float(self.words), "words_correct": float(self.words_correct), "length": float(self.length)}


def text_metrics(expected: str, read: str) -> TextMetrics:
    """Compare the text an image shows (``read``, e.g. by OCR) with the text its prompt asked for."""
    want, got = clean_text(expected), clean_text(read)
    distance = levenshtein(want, got)
    remaining = Counter(got.split())
    correct = 0
    for word in want.split():  # each word read counts for one target word at most
        if remaining[word] > 0:
            remaining[word] -= 1
            correct += 1
    return TextMetrics(distance, distance == 0, len(want.split()), correct, max(len(want), len(got)))


class OcrScorer:
    """Reads the image with the tesseract command line and compares it with the expected text.

    The score is 1 - the normalised edit distance between the text read and the text asked for;
    the edit distance, completion and word counts behind it (:func:`text_metrics`, after
    OneIG-Bench's text-rendering metrics) go into the report per scenario and backend.

    ``tesseract`` is the executable (default: ``$TESSERACT_CMD`` or ``tesseract`` on ``PATH``;
    Debian's ``tesseract-ocr`` package). pytesseract is not needed: it wraps the same command.
    """

    name = "ocr"

    def __init__(self, tesseract: str | None = None, *, timeout_s: float = 30.0) -> None:
        self.command = tesseract or os.environ.get("TESSERACT_CMD") or "tesseract"
        self.timeout_s = timeout_s

    def _executable(self) -> str | None:
        return shutil.which(self.command)

    def unavailable(self) -> str | None:
        if self._executable() is None:
            return f"no OCR engine: `{self.command}` is not on PATH (install tesseract-ocr)"
        return None

    def score(self, image: Image, item: ScenarioPrompt) -> Score | None:
        if not item.expect_text:
            return None
        exe = self._executable()
        if exe is None:
            raise ConfigError(self.unavailable() or "tesseract is missing")
        with tempfile.TemporaryDirectory(prefix="pixelroute-ocr-") as tmp:
            path = Path(tmp) / "image.png"
            # OCR reads small images badly; upscale tiny thumbnails to a readable size first
            img = image.convert("RGB")
            if max(img.size) < 512:
                factor = 512 / max(img.size)
                img = img.resize((round(img.width * factor), round(img.height * factor)))
            img.save(path)
            try:
                done = subprocess.run(
                    [exe, str(path), "stdout", "--psm", "6"],
                    capture_output=True,
                    text=True,
                    timeout=self.timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise ConfigError(f"tesseract took longer than {self.timeout_s} s on one image") from exc
        if done.returncode != 0:
            raise ConfigError(
                f"tesseract failed with exit code {done.returncode}: {done.stderr.strip()[:200]}"
            )
        read = " ".join(done.stdout.split())
        m = text_metrics(item.expect_text, read)
        detail = (f"read {read!r}" if read else "read nothing") + (
            f"; edit distance {m.edit_distance}, {m.words_correct}/{m.words} words"
        )
        return Score(self.name, m.similarity, detail, m.as_dict())


class ClipScorer:
    """CLIP prompt-image agreement in ``[0, 1]`` (:class:`pixelroute.gates.ClipScoreGate`), offline only.

    ``model`` is a local folder or a hub id already in the local cache; nothing is downloaded.
    """

    name = "clip"

    def __init__(self, model: str | os.PathLike[str] | None = None) -> None:
        self.model = str(model or os.environ.get("PIXELROUTE_CLIP_MODEL") or "openai/clip-vit-base-patch32")
        self._gate: Any = None

    def unavailable(self) -> str | None:
        if Path(self.model).is_dir():
            return (
                None
                if (Path(self.model) / "config.json").is_file()
                else f"no CLIP model: folder `{self.model}` has no config.json"
            )
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return "no CLIP model: huggingface_hub is not installed"
        cached = try_to_load_from_cache(self.model, "config.json")
        if not isinstance(cached, str):
            return f"no CLIP model: `{self.model}` is neither a local folder nor in the hub cache (offline)"
        return None

    def score(self, image: Image, item: ScenarioPrompt) -> Score | None:
        from .._types import GenerateRequest

        if self._gate is None:
            from ..gates import ClipScoreGate

            self._gate = ClipScoreGate(self.model)
        value = float(self._gate(image, GenerateRequest(prompt=item.prompt)))
        return Score(self.name, value, f"model {self.model}")


def default_scorers(*, tesseract: str | None = None, clip_model: str | None = None) -> dict[str, Scorer]:
    """The shipped scorers by name, for scenarios to pick from."""
    return {"ocr": OcrScorer(tesseract), "clip": ClipScorer(clip_model)}


Verdict = Literal["accepted", "edited", "rejected"]
#: how a person's verdict reads as a score beside the automatic ones
VERDICT_SCORE: dict[str, float] = {"accepted": 1.0, "edited": 0.5, "rejected": 0.0}


@dataclass(frozen=True)
class Review:
    """A person's verdict on one image and the seconds they spent correcting it."""

    verdict: Verdict
    seconds: float

    def __post_init__(self) -> None:
        if self.verdict not in VERDICT_SCORE:
            raise ValidationError(
                f"`verdict` must be accepted, edited or rejected but is {self.verdict!r}",
                field="verdict",
                value=self.verdict,
            )
        if not self.seconds >= 0:
            raise ValidationError(
                f"`seconds` must be >= 0 but is {self.seconds!r}", field="seconds", value=self.seconds
            )


def parse_review(answer: str) -> Review | None:
    """Read a reviewer's line: ``a``/``accepted``, ``e 40``/``edited 40``, ``r 120``; empty or ``s`` skips."""
    parts = answer.strip().lower().split()
    if not parts or parts[0] in ("s", "skip"):
        return None
    verdicts = {"a": "accepted", "e": "edited", "r": "rejected"}
    verdict = verdicts.get(parts[0][:1]) if parts[0] in (*verdicts, *verdicts.values()) else None
    if verdict is None:
        raise ValidationError(
            f"`verdict` must be a, e, r or s but is {parts[0]!r}", field="verdict", value=parts[0]
        )
    try:
        seconds = float(parts[1]) if len(parts) > 1 else 0.0
    except ValueError:
        raise ValidationError(
            f"`seconds` must be a number but is {parts[1]!r}", field="seconds", value=parts[1]
        ) from None
    return Review(verdict, seconds)  # type: ignore[arg-type]


__all__ = [
    "VERDICT_SCORE",
    "ClipScorer",
    "OcrScorer",
    "Review",
    "Score",
    "Scorer",
    "TextMetrics",
    "clean_text",
    "default_scorers",
    "levenshtein",
    "parse_review",
    "text_metrics",
]
