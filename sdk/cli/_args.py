"""Argument types that refuse bad values while parsing: exit 2, naming the option and the value.

argparse's own ``type=float`` lets ``nan``, ``inf``, ``0`` and ``-1`` through to the client,
where they used to end as a pydantic traceback; and a prompt whose bytes are not UTF-8 (argv
decoded with ``surrogateescape``) failed only when telemetry tried to encode it. These types
apply the request model's bounds (:mod:`pixelroute._types`) at the command line instead.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from .. import _types
from .._shown import looks_like_secret

_WHOLE = re.compile(r"[+-]?[0-9]{1,30}\Z")


def _number(option: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{option}` must be a number but is {_given(raw)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"`{option}` must be a finite number but is {_given(raw)}")
    return value


def seconds(option: str) -> Callable[[str], float]:
    """A deadline: positive, finite, at most a day."""

    def parse(raw: str) -> float:
        value = _number(option, raw)
        if not 0 < value <= _types.MAX_DEADLINE_S:
            raise argparse.ArgumentTypeError(
                f"`{option}` must be a positive number of seconds, at most {_types.MAX_DEADLINE_S:g}, "
                f"but is {_given(raw)}"
            )
        return value

    return parse


def usd(option: str) -> Callable[[str], float]:
    """A cost cap: non-negative, finite."""

    def parse(raw: str) -> float:
        value = _number(option, raw)
        if not 0 <= value <= _types.MAX_COST_USD:
            raise argparse.ArgumentTypeError(
                f"`{option}` must be a non-negative number of USD, at most {_types.MAX_COST_USD:g}, "
                f"but is {_given(raw)}"
            )
        return value

    return parse


def number_in(option: str, low: float, high: float) -> Callable[[str], float]:
    """A finite number in ``[low, high]``."""

    def parse(raw: str) -> float:
        value = _number(option, raw)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"`{option}` must be between {low:g} and {high:g} but is {_given(raw)}"
            )
        return value

    return parse


def integer_in(option: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """A whole number in ``[low, high]`` (no upper bound when ``high`` is ``None``)."""

    def parse(raw: str) -> int:
        # ASCII digits only (int() also takes "٣" and "1_000"); 30 digits is past every bound here,
        # and int() raises on strings past 4,300 digits
        if not _WHOLE.match(raw.strip()):
            raise argparse.ArgumentTypeError(f"`{option}` must be a whole number but is {_given(raw)}")
        value = int(raw)
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"`{option}` must be {bounds} but is {_given(raw)}")
        return value

    return parse


def text(option: str) -> Callable[[str], str]:
    """Text that can be stored and sent: valid UTF-8 (no undecodable bytes), no NUL characters."""

    def parse(raw: str) -> str:
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            # argv bytes that are not UTF-8 arrive as lone surrogates (PEP 383); show them as bytes
            bad = _as_bytes(raw[exc.start : exc.end]).hex(" ")
            printable = _as_bytes(raw).decode("utf-8", "backslashreplace")
            raise argparse.ArgumentTypeError(
                f"`{option}` must be UTF-8 text but byte(s) {bad} at position {exc.start} are not "
                f"(got `{printable[:60]}`); is the terminal's encoding UTF-8?"
            ) from None
        if "\x00" in raw:
            raise argparse.ArgumentTypeError(
                f"`{option}` must not contain NUL characters but has one at position {raw.index(chr(0))}"
            )
        return raw

    return parse


def _given(raw: str) -> str:
    """The argument as typed, in backticks: short, one line, control characters escaped."""
    if looks_like_secret(raw):
        return "<hidden: may be a secret>"
    text = raw if len(raw) <= 60 else raw[:60]
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return f"`{text}`" + (f"... ({len(raw)} characters)" if len(raw) > 60 else "")


def _as_bytes(raw: str) -> bytes:
    try:
        return raw.encode("utf-8", "surrogateescape")  # the bytes the terminal sent
    except UnicodeEncodeError:  # a surrogate that did not come from undecodable bytes
        return raw.encode("utf-8", "backslashreplace")


__all__ = ["integer_in", "number_in", "seconds", "text", "usd"]
