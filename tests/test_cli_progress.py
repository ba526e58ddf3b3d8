"""Progress bars of the long commands: drawn with an ETA on a terminal, absent in pipes and with --quiet.

The commands run in a subprocess whose stderr is a pseudo-terminal (what a person's shell gives
them), so tqdm decides as it would for a user; the other runs capture stderr as a pipe.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from pixelroute.cli import _progress
from pixelroute.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
#: tqdm's "[elapsed<remaining, rate]": the time left is what a person waiting wants to see
ETA = re.compile(r"\[\d\d:\d\d<\d\d:\d\d, ")


def on_a_terminal(*args: str, timeout: float = 240) -> tuple[int, str]:
    """Run ``pixelroute ARGS`` with stderr on a pseudo-terminal 200 columns wide; (exit code, stderr)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelroute", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        cwd=REPO,
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    return proc.wait(timeout=timeout), b"".join(chunks).decode("utf-8", "replace")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_drawn_only_on_a_terminal_and_never_with_quiet() -> None:
    screen = FakeTerminal()
    with _progress.bar("copying", 4, unit="file", stream=screen) as bar:
        for _ in range(4):
            bar.update(1)
    assert "copying" in screen.getvalue() and "4/4" in screen.getvalue()
    for stream, quiet in ((io.StringIO(), False), (FakeTerminal(), True)):
        off = _progress.bar("copying", 4, stream=stream, quiet=quiet)
        off.update(4)
        off.close()
        assert stream.getvalue() == ""
    asked: list[int] = []
    _progress.bar("counting", lambda: asked.append(1) or 3, stream=io.StringIO()).close()
    assert asked == []  # the total is only looked up (a COUNT(*)) when a bar is drawn


def test_a_capped_bar_ends_full() -> None:
    screen = FakeTerminal()
    bar = _progress.bar("training", 500, unit="round", stream=screen)
    bar.update(180)
    _progress.finish(bar, "stopped early")
    assert "180/180" in screen.getvalue() and "stopped early" in screen.getvalue()


def test_simulate_shows_a_bar_with_the_time_left_and_quiet_hides_it(tmp_path: Path) -> None:
    code, err = on_a_terminal("simulate", "--n", "3000", "--seed", "1", "--out", str(tmp_path / "a.jsonl"))
    assert code == 0, err
    assert "simulating" in err and "3000/3000" in err and ETA.search(err), err
    assert "wrote 3000 simulated records" in err
    code, err = on_a_terminal("simulate", "--n", "300", "--out", str(tmp_path / "b.jsonl"), "--quiet")
    assert code == 0 and err == ""
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 300


def test_simulate_into_a_pipe_prints_no_bar(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pixelroute", "simulate", "--n", "500", "--out", str(tmp_path / "s.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0
    assert out.stderr == f"wrote 500 simulated records to {tmp_path / 's.jsonl'}\n"


def test_telemetry_import_and_export_show_bars(tmp_path: Path) -> None:
    sim = tmp_path / "sim.jsonl"
    assert cli_main(["simulate", "--n", "400", "--seed", "2", "--out", str(sim), "--quiet"]) == 0
    store = f"sqlite:///{tmp_path / 't.db'}"
    code, err = on_a_terminal("telemetry", "import", str(sim), "--store", store)
    assert code == 0, err
    assert "importing" in err and "100%" in err and ETA.search(err), err
    assert "imported 400" in err
    code, err = on_a_terminal("telemetry", "export", "--store", store, "--out", str(tmp_path / "back.jsonl"))
    assert code == 0, err
    assert "exporting" in err and "400/400" in err and "exported 400 records" in err
    code, err = on_a_terminal("telemetry", "export", "--store", store, "--out", str(tmp_path / "q.jsonl"), "--quiet")
    assert code == 0 and err == ""


def test_quiet_import_still_reports_malformed_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"not": "a record"}\n')
    assert cli_main(["telemetry", "import", str(bad), "--store", f"sqlite:///{tmp_path / 'q.db'}", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "line 1" in err and "malformed" in err


def test_the_store_counts_a_window_for_the_bars_total(tmp_path: Path) -> None:
    from pixelroute.telemetry import import_jsonl, open_store

    sim = tmp_path / "sim.jsonl"
    assert cli_main(["simulate", "--n", "300", "--seed", "4", "--out", str(sim), "--quiet"]) == 0
    with open_store(f"sqlite:///{tmp_path / 'c.db'}") as store:
        import_jsonl(sim, store)
        stamps = sorted(r["ts"] for r in store.iter_records())
        middle = stamps[150]
        assert store.count() == 300
        assert store.count(since=middle) == sum(ts >= middle for ts in stamps)
        assert store.count(until=middle) == sum(ts < middle for ts in stamps)
        assert store.count(since=middle, until=middle) == 0


@pytest.mark.parametrize(("source", "quiet"), [("jsonl", False), ("store", False), ("jsonl", True)])
def test_train_shows_parsing_and_a_bar_per_model(tmp_path: Path, source: str, quiet: bool) -> None:
    sim, profiles = tmp_path / "sim.jsonl", tmp_path / "profiles.json"
    args = ["simulate", "--n", "1500", "--seed", "3", "--out", str(sim), "--write-profiles", str(profiles)]
    assert cli_main([*args, "--quiet"]) == 0
    records = ["--jsonl", str(sim)]
    if source == "store":
        records = ["--store", f"sqlite:///{tmp_path / 'train.db'}"]
        assert cli_main(["telemetry", "import", str(sim), *records, "--quiet"]) == 0
    code, err = on_a_terminal(
        "train", *records, "--profiles", str(profiles), "--out", str(tmp_path / "model"),
        *(["--quiet"] if quiet else []),
    )
    assert code == 0, err
    assert (tmp_path / "model" / "manifest.json").is_file()
    if quiet:
        assert err == ""
        return
    assert "parsing" in err and ETA.search(err), err
    if source == "store":  # counted first, so the bar knows its total
        assert re.search(r"parsing: 100%\|.*\| 1500/1500 ", err), err
    for model in ("latency_p50", "latency_pq", "p_fail", "correction"):
        assert re.search(rf"training {model}: +100%\|.*\| (\d+)/\1 ", err), (model, err)
    assert "reading for evaluation" in err
    assert "[train] wrote" in err
    assert "featurized" not in err  # the bars stand for the step messages on a terminal


def test_scenarios_run_shows_a_bar_with_the_time_left(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        f'[telemetry]\nstore = "sqlite:///{tmp_path / "t.db"}"\n'
        '[[backends]]\nname = "ok-mock"\nkind = "mock"\n'
        '[[backends]]\nname = "down-mock"\nkind = "mock"\nfailure = "server_error"\n'
    )
    run = ["scenarios", "run", "--config", str(cfg), "--max-per-scenario", "1", "--seeds", "2",
           "--out", str(tmp_path / "r")]
    code, err = on_a_terminal(*run)
    assert code == 0, err
    assert re.search(r"scenarios: 100%\|.*\| 20/20 \[", err) and ETA.search(err), err
    assert "down-mock FAILED" in err  # the latest sample's scenario / backend, and whether it failed
    code, err = on_a_terminal(*run, "--quiet")
    assert code == 0 and "20/20" not in err
