"""Quiet loading: no progress bars or notices from the SDK's loads; the user's settings survive."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pytest

_SCRIPT = r"""
import sys, tempfile
import diffusers.utils.logging as dl, transformers.utils.logging as tl
from pixelroute._deadline import Deadline
from pixelroute._types import GenerateRequest
from pixelroute.backends._pipeline_cache import PipelineCache
from pixelroute.backends.diffusers import DiffusersBackend, DiffusersSettings

with tempfile.TemporaryDirectory() as tmp:
    settings = DiffusersSettings(name="t", model=f"{tmp}/sd3", device="cpu", make_tiny="sd3")
    backend = DiffusersBackend(settings, pipeline_cache=PipelineCache())
    backend.generate(GenerateRequest(prompt="a cat", seed=1), Deadline(None))  # builds, loads, runs
    backend.close()
print("MARK", dl.is_progress_bar_enabled(), tl.is_progress_bar_enabled(), file=sys.stderr)
# the user's own library logging still prints afterwards
dl.get_logger("diffusers.user").warning("user diffusers warning")
tl.get_logger("transformers.user").warning("user transformers warning")
"""


@pytest.mark.parametrize("noise", ["it/s]", "Loading pipeline components", "Loading weights",
                                   "Writing model shards", "accelerate", "cannot be saved"])
def test_building_loading_and_generating_print_no_bars_or_notices(noise: str, tiny_output: str) -> None:
    before_mark = tiny_output.split("MARK")[0]
    assert noise not in before_mark, before_mark[-2000:]


@pytest.fixture(scope="module")
def tiny_output() -> str:
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr
    assert "MARK True True" in err  # progress bars are back on for the user's code
    assert "user diffusers warning" in err and "user transformers warning" in err
    return done.stdout + err


def test_notices_inside_the_quiet_scope_go_to_debug_and_the_scope_nests_across_threads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import diffusers.utils.logging as dl

    from pixelroute._hf_quiet import quiet_hf

    entered, leave_first = threading.Event(), threading.Event()

    def first() -> None:
        with quiet_hf():
            entered.set()
            leave_first.wait(5.0)

    thread = threading.Thread(target=first)
    thread.start()
    entered.wait(5.0)
    with caplog.at_level(logging.DEBUG, logger="pixelroute.hf"), quiet_hf():
        leave_first.set()
        thread.join()
        # the first scope has left, this one is still inside: still quiet
        assert not dl.is_progress_bar_enabled()
        dl.get_logger("diffusers.models.modeling_utils").warning("accelerate was not found")
    assert dl.is_progress_bar_enabled()
    assert any("accelerate was not found" in r.getMessage() and r.levelno == logging.DEBUG
               for r in caplog.records)
    handler_filters = [f for h in dl.get_logger().handlers for f in h.filters]
    assert not handler_filters  # every redirect was removed again


def test_a_handler_shared_with_the_application_still_gets_the_applications_records() -> None:
    import diffusers.utils.logging as dl

    from pixelroute._hf_quiet import quiet_hf

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.name}: {record.getMessage()}")

    shared = Collect()
    app, library = logging.getLogger("myapp"), dl.get_logger()
    app.addHandler(shared)
    library.addHandler(shared)  # as pytest's capture handler or an application's file handler does
    try:
        with quiet_hf():
            app.warning("the application's own warning")
            dl.get_logger("diffusers.pipelines").warning("a loading notice")
            dl.get_logger("diffusers.pipelines").error("a loading error")
    finally:
        app.removeHandler(shared)
        library.removeHandler(shared)
    assert seen == ["myapp: the application's own warning", "diffusers.pipelines: a loading error"]
