"""Run the shell commands that examples' docstrings and the docs show, as a person would type them.

A :class:`Session` is one terminal: ``cd`` and ``export`` change it for the commands after them,
a command ending in ``&`` keeps running in the background (stopped, with its children, at the
end), everything else must exit 0. Commands run under ``bash`` with the test environment's
interpreter first on ``PATH``, as in an activated virtual environment, so ``python``,
``pixelroute``, ``flask``, ``gunicorn`` and ``rq`` are the installed ones.

The only changes made to a command are the ``substitutions`` a test names (a free port for
``5000``, a private Redis database): shared machines run several test sessions at once.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests._import_root import SUBPROCESS_PYTHONPATH

VENV_BIN = str(Path(sys.executable).parent)


def python_docstring_commands(path: Path) -> list[str]:
    """The indented command lines of a module docstring, continuation lines joined."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return _indented_commands(doc.splitlines())


def shell_comment_commands(path: Path, label: str) -> list[str]:
    """Commands in a script's leading comments written as ``#   LABEL:  <command>``."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(rf"#\s+{re.escape(label)}:\s+(.*)", line)
        if match:
            found.append(match.group(1))
    return found


def _indented_commands(lines: list[str]) -> list[str]:
    commands: list[str] = []
    pending = ""
    for line in lines:
        if not line.startswith("    ") and not pending:
            continue
        text = line.strip()
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        if pending or text:
            commands.append(pending + text)
        pending = ""
    return [c for c in commands if c]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_tool(name: str) -> None:
    """A command-line tool the docs use; missing: fail under CI, else skip with the reason."""
    if shutil.which(name) is None:
        message = f"`{name}` is not installed; the documented commands use it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Session:
    """One terminal: a working folder, an environment and the background jobs started from it."""

    cwd: Path
    env: dict[str, str]
    substitutions: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 240
    background: list[tuple[str, subprocess.Popen[str], Path]] = field(default_factory=list)
    stopped: set[int] = field(default_factory=set)
    #: bash's job numbers (``%1``) of the running background jobs -> their index in ``background``
    jobs: dict[int, int] = field(default_factory=dict)

    @classmethod
    def start(cls, cwd: Path, cache_dir: Path, substitutions: Mapping[str, str] | None = None,
              **env: str) -> Session:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PIXELROUTE_")}
        clean.update(
            PATH=os.pathsep.join([VENV_BIN, clean.get("PATH", "")]),
            VIRTUAL_ENV=str(Path(sys.executable).parent.parent),
            PIXELROUTE_CACHE_DIR=str(cache_dir),
            HF_HUB_OFFLINE="1",
            PYTHONPATH=SUBPROCESS_PYTHONPATH,
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        clean.update(env)
        return cls(cwd=cwd, env=clean, substitutions=dict(substitutions or {}))

    def command(self, text: str) -> str:
        for old, new in self.substitutions.items():
            text = text.replace(old, new)
        return text

    def run(self, text: str, values: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str] | None:
        """Run one documented command; ``values`` fill ``<placeholders>`` a person would copy in."""
        text = self.command(text)
        for name, value in (values or {}).items():
            text = text.replace(f"<{name}>", value)
        assert not re.search(r"<[a-z_]+>", text), f"unfilled placeholder in {text!r}"
        words = shlex.split(text, comments=True)
        if not words:
            return None
        parts = re.split(r"\s&&\s", text)
        if len(parts) == words.count("&&") + 1 > 1:  # `mkdir x && cd x`: the cd must stay
            done = None
            for part in parts:
                done = self.run(part)
            return done
        if words[0] == "cd" and len(words) == 2:
            folder = re.sub(r"^~(?=/|$)", self.env.get("HOME", "~"), words[1])
            self.cwd = (self.cwd / os.path.expandvars(folder)).resolve()
            return None
        if words[0] == "export":
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                self.env[name] = value
            return None
        if words[0] == "kill" and len(words) == 2 and words[1].startswith("%"):  # bash job control
            self.stop_job(int(words[1][1:]))
            return None
        if words[-1] == "&":
            self._spawn(re.sub(r"&\s*(#.*)?$", "", text.rstrip()))
            return None
        if len(self.stopped) < len(self.background):  # a person waits for the server to say it is up
            for port in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", text):
                self.wait_for_http(f"http://127.0.0.1:{port}/")
        done = subprocess.run(["bash", "-c", text], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=self.timeout_s, check=False)
        assert done.returncode == 0, f"`{text}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done

    def spawn(self, text: str) -> None:
        """Start a long-running command (a server) in the background, as ``text &`` would."""
        self._spawn(self.command(text))

    def _spawn(self, text: str) -> None:
        log = self.cwd / f".background-{len(self.background)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(["bash", "-c", text], cwd=self.cwd, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.jobs[max(self.jobs, default=0) + 1] = len(self.background)  # as bash numbers jobs
        self.background.append((text, proc, log))

    def wait_for_http(self, url: str, timeout_s: float = 120) -> None:
        """Wait until a server started in the background answers at ``url`` (any status)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                httpx.get(url, timeout=2)
                return
            except httpx.TransportError:
                for i, (text, proc, log) in enumerate(self.background):
                    if i not in self.stopped and proc.poll() is not None:
                        raise AssertionError(f"`{text}` exited with {proc.returncode}:\n{log.read_text()}") from None
                if time.monotonic() > deadline:
                    raise AssertionError(f"nothing answered at {url} within {timeout_s} s:\n{self.logs()}") from None
                time.sleep(0.2)

    def logs(self) -> str:
        return "\n".join(f"--- {text}\n{log.read_text()}" for text, _, log in self.background if log.exists())

    def stop_job(self, number: int) -> None:
        """``kill %N``: stop background job N (bash's numbering: one above the highest running)."""
        assert number in self.jobs, f"no job %{number}; running: {sorted(self.jobs)}"
        index = self.jobs.pop(number)
        _stop([self.background[index][1]])
        self.stopped.add(index)

    def stop(self) -> None:
        """Stop every background job and its children."""
        _stop([proc for _, proc, _ in self.background])
        self.background.clear()
        self.stopped.clear()
        self.jobs.clear()


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    """SIGTERM to each process group, then SIGKILL to those still there after 20 s."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def session(cwd: Path, cache_dir: Path, substitutions: Mapping[str, str] | None = None,
            **env: str) -> Iterator[Session]:
    shell = Session.start(cwd, cache_dir, substitutions, **env)
    try:
        yield shell
    finally:
        shell.stop()


def copy_examples(repo: Path, into: Path) -> Path:
    """A copy of ``examples/`` under ``into`` (the commands write files where they run)."""
    shutil.copytree(repo / "examples", into / "examples", ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    return into
