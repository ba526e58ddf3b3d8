"""Progress bars for the long commands (``simulate``, ``train``, ``scenarios run``, ``telemetry``).

tqdm draws them on stderr, with the rate and the time left. A bar appears only when stderr is a
terminal and ``--quiet`` was not given: a log file or a pipe gets no carriage returns, and tqdm
is not even imported then. Everything a command prints besides the bar goes through
:func:`say`, which writes above a live bar instead of through it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TextIO, TypeVar

_T = TypeVar("_T")


class Bar(Protocol):
    """What the commands use of a bar: tqdm's own methods, so a tqdm bar is one as it is."""

    total: float | None

    def update(self, n: float = 1) -> bool | None: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> Any: ...


class _NoBar:
    """The bar when none is drawn: every call does nothing."""

    total: float | None = None

    def update(self, n: float = 1) -> None:
        return None

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def add_quiet_arg(parser: argparse.ArgumentParser) -> None:
    """The one ``--quiet`` every long command takes, with the same meaning everywhere."""
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar and no progress messages on stderr (errors and warnings still print)",
    )


def shown(quiet: bool, stream: TextIO | None = None) -> bool:
    """Whether a bar is drawn: not ``--quiet`` and the stream (stderr) is a terminal."""
    out = stream if stream is not None else sys.stderr
    return not quiet and bool(getattr(out, "isatty", lambda: False)())


def bar(
    desc: str,
    total: float | Callable[[], float | None] | None = None,
    *,
    unit: str = "it",
    bytes_: bool = False,
    quiet: bool = False,
    stream: TextIO | None = None,
) -> Bar:
    """A bar on stderr (``stream``), or one that does nothing when :func:`shown` says no.

    ``total`` may be ``None`` (a count and a rate, no ETA) and set later as ``bar.total``, or a
    function that finds it (a ``COUNT(*)``), called only when the bar is drawn; ``bytes_`` counts
    bytes and shows them as KiB/MiB.
    """
    out = stream if stream is not None else sys.stderr
    if not shown(quiet, out):
        return _NoBar()
    from tqdm import tqdm

    drawn: Bar = tqdm(
        total=total() if callable(total) else total,
        desc=desc,
        unit="B" if bytes_ else unit,
        unit_scale=bytes_,
        unit_divisor=1024 if bytes_ else 1000,
        file=out,
        dynamic_ncols=True,
        mininterval=0.2,
        leave=True,
    )
    return drawn


def counted(items: Iterable[_T], progress: Bar, size: Callable[[_T], int] | None = None) -> Iterator[_T]:
    """Yield ``items``, advancing ``progress`` by one (or by ``size(item)``) each; closes it at the end."""
    try:
        if size is None:
            for item in items:
                yield item
                progress.update(1)
        else:
            for item in items:
                yield item
                progress.update(size(item))
    finally:
        progress.close()


def say(message: str, quiet: bool = False) -> None:
    """A progress message on stderr, written above any live bar (tqdm's ``write``) when one may be drawn."""
    if quiet:
        return
    if shown(False):
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def finish(progress: Bar, note: str | None = None) -> None:
    """Close a bar whose total was a cap (boosting rounds under early stopping): it ends full."""
    n: Any = getattr(progress, "n", None)
    if n is not None and progress.total is not None and n < progress.total:
        progress.total = n
    if note:
        progress.set_postfix_str(note, refresh=False)
    progress.close()


__all__ = ["Bar", "add_quiet_arg", "bar", "counted", "finish", "say", "shown"]
