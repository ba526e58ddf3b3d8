"""Argument types that refuse bad values while parsing: exit 2, naming the option and the value.

argparse's own ``type=float`` lets ``nan``, ``inf``, ``0`` and ``-1`` through to the client,
where they used to end as a pydantic traceback; and a prompt whose bytes are not UTF-8 (argv
decoded with ``surrogateescape``) failed only when telemetry tried to encode it. These types
apply the request model's bounds (:mod:`sdk._types`) at the command line instead.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from .. import _types
from .._shown import shown


def _number(option: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{option}` must be a number but is {shown(raw)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"`{option}` must be a finite number but is {shown(raw)}")
    return value


def seconds(option: str) -> Callable[[str], float]:
    """A deadline: positive, finite, at most a day."""

    def parse(raw: str) -> float:
        value = _number(option, raw)
        if not 0 < value <= _types.MAX_DEADLINE_S:
            raise argparse.ArgumentTypeError(
                f"`{option}` must be a positive number of seconds, at most {_types.MAX_DEADLINE_S:g}, "
                f"but is {shown(raw)}"
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
                f"but is {shown(raw)}"
            )
        return value

    return parse


def number_in(option: str, low: float, high: float) -> Callable[[str], float]:
    """A finite number in ``[low, high]``."""

    def parse(raw: str) -> float:
        value = _number(option, raw)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"`{option}` must be between {low:g} and {high:g} but is {shown(raw)}"
            )
        return value

    return parse


def integer_in(option: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """A whole number in ``[low, high]`` (no upper bound when ``high`` is ``None``)."""

    def parse(raw: str) -> int:
        text = raw.strip()
        # 30 digits is past every bound here; int() raises on strings past 4,300 digits
        if len(text.lstrip("+-")) > 30 or not text.lstrip("+-").isascii() or not text.lstrip("+-").isdigit():
            raise argparse.ArgumentTypeError(f"`{option}` must be a whole number but is {shown(raw)}")
        value = int(text)
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"`{option}` must be {bounds} but is {shown(raw)}")
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
                f"(got {shown(printable)}); is the terminal's encoding UTF-8?"
            ) from None
        if "\x00" in raw:
            raise argparse.ArgumentTypeError(
                f"`{option}` must not contain NUL characters but has one at position {raw.index(chr(0))}"
            )
        return raw

    return parse


def _as_bytes(raw: str) -> bytes:
    try:
        return raw.encode("utf-8", "surrogateescape")  # the bytes the terminal sent
    except UnicodeEncodeError:  # a surrogate that did not come from undecodable bytes
        return raw.encode("utf-8", "backslashreplace")


__all__ = ["integer_in", "number_in", "seconds", "text", "usd"]
