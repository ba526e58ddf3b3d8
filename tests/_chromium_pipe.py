"""Headless Chromium driven over ``--remote-debugging-pipe``: the DevTools protocol with nothing but the stdlib.

``--screenshot`` and ``--dump-dom`` run a page under virtual time, where the docs site's search worker never
answers; over the pipe a test loads a page in real time, evaluates JavaScript in it (what overflows, what the
search box finds) and captures the whole page. Chromium reads commands from its fd 3 and writes replies and
events to its fd 4, one JSON message each, ended by a NUL byte.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

#: headless, as root in a container (no sandbox), without the browser's own background traffic (updates, sync)
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class ChromiumError(RuntimeError):
    """The browser exited, timed out or answered a command with an error."""


def pipe_ends_above_4() -> tuple[int, int, int, int]:
    """(write to browser, read from browser, the browser's read end, the browser's write end), all above 4.

    A pipe end that already were 3 or 4 would be lost or stay close-on-exec in the child's dup2 calls.
    """
    ends = []
    for fd in (*os.pipe(), *os.pipe()):
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    to_browser_r, to_browser_w, from_browser_r, from_browser_w = ends
    return to_browser_w, from_browser_r, to_browser_r, from_browser_w


class Chromium:
    """One headless browser with one page; ``with Chromium(exe, profile) as page: page.goto(url)``."""

    def __init__(self, exe: str, profile: Path, width: int = 1280, height: int = 1000, timeout_s: float = 30.0):
        self.timeout_s = timeout_s
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._to_browser, self._from_browser, to_browser_r, from_browser_w = pipe_ends_above_4()

        def wire_fds() -> None:  # in the child, before exec: the pipe ends on the numbers Chromium expects
            # dup2 onto another number clears close-on-exec; the ends are above 4, so neither is overwritten
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        cmd = [
            exe,
            *HEADLESS_FLAGS,
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        # close_fds=False: the two ends dup2'd onto 3 and 4 must survive into the browser; Python's own fds
        # are non-inheritable, so nothing else leaks
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=wire_fds, close_fds=False
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        try:
            self._open_page()
        except BaseException:
            self.close()
            raise

    def _open_page(self) -> None:
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")

    # -- protocol -----------------------------------------------------------------------------------------

    def _write(self, message: dict[str, Any]) -> None:
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChromiumError(f"no answer from Chromium within {self.timeout_s} s")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise ChromiumError(f"Chromium exited (code {self._proc.poll()})")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def _call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._write(message)
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ChromiumError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """A command to the page; its result."""
        return self._call(method, params, self._session)

    def wait_for_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method:
                    return self._events.pop(i)
            self._events.append(self._read_message(deadline))

    # -- what the tests use ---------------------------------------------------------------------------------

    def goto(self, url: str) -> None:
        """Load ``url`` and wait for its load event (scripts, styles and fonts are in)."""
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise ChromiumError(f"{url}: {result['errorText']}")
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise ChromiumError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_until(self, expression: str) -> Any:
        """Poll ``expression`` until it is truthy (a search worker answering, a script wrapping tables)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise ChromiumError(f"still false after {self.timeout_s} s: {expression[:120]}")
            time.sleep(0.1)

    def screenshot(self, path: Path, max_height: int = 6000) -> Path:
        """The whole page (up to ``max_height`` CSS pixels) as a PNG.

        The window is made as tall as the page first: a capture beyond a short window would cut the
        sticky sidebars off at the window's height.
        """
        metrics = self.send("Page.getLayoutMetrics")
        width = metrics["cssLayoutViewport"]["clientWidth"]
        height = min(int(metrics["cssContentSize"]["height"]), max_height)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        try:
            shot = self.send("Page.captureScreenshot", {"format": "png"})
        finally:
            self.send("Emulation.clearDeviceMetricsOverride")
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(ChromiumError, OSError):  # it may exit before it answers
            self._call("Browser.close")
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
