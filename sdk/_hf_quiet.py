"""Quiet Hugging Face loading: the SDK's own loads print no progress bars and no notices.

``DiffusionPipeline.from_pretrained`` and ``save_pretrained`` draw tqdm bars ("Loading pipeline
components", "Loading weights", "Writing model shards") and log notices such as "Cannot
initialize model with low cpu memory usage because `accelerate` was not found". Inside an
application that embeds the SDK, those land in the user's terminal or logs on every first
request. Inside :func:`quiet_hf`:

- diffusers' and transformers' progress bars are off (their documented switches);
- their warning/info records are re-logged on ``pixelroute.hf`` at DEBUG instead of printed
  (errors still print; nothing is lost for someone who turns DEBUG on);
- afterwards both libraries are exactly as the user left them, so their other code keeps its
  bars and warnings. The scope is process-wide (those switches are), so it is reference
  counted: two pipelines loading at once on two threads restore the state only when the
  last one leaves, never to the other's "quiet" state.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("pixelroute.hf")


class _Redirect(logging.Filter):
    """Drops a library's warning/info records from its handlers, re-logging them at DEBUG.

    Only that library's records: a handler can be shared (pytest's capture handler sits on
    the root logger and on the library's), and the user's other records, ours included, must
    pass through it untouched.
    """

    def __init__(self, library: str) -> None:
        super().__init__()
        self.library = library

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == self.library or record.name.startswith(self.library + ".")
        if not own or record.levelno >= logging.ERROR:
            return True
        log.debug("%s: %s", record.name, record.getMessage())
        return False


class _QuietState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.restore: list[Any] = []


_STATE = _QuietState()


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """Silence diffusers/transformers bars and notices for the duration; restore them after."""
    with _STATE.lock:
        if _STATE.depth == 0:
            _STATE.restore = _silence()
        _STATE.depth += 1
    try:
        yield
    finally:
        with _STATE.lock:
            _STATE.depth -= 1
            if _STATE.depth == 0:
                for undo in reversed(_STATE.restore):
                    undo()
                _STATE.restore = []


def _silence() -> list[Any]:
    """Turn both libraries quiet; returns the callables that put back what was there."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    undo: list[Any] = []
    for library in (diffusers_logging, transformers_logging):
        if library.is_progress_bar_enabled():
            library.disable_progress_bar()
            undo.append(library.enable_progress_bar)
        root = library.get_logger()  # the library's root logger, which owns its handlers
        redirect = _Redirect(root.name)
        for handler in root.handlers:
            handler.addFilter(redirect)
            undo.append(lambda handler=handler, redirect=redirect: handler.removeFilter(redirect))
    return undo
