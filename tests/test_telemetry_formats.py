"""JSONL round trips and the CLI, stats and Prometheus text, traces, ids and correction validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pixelroute._errors import ValidationError
from pixelroute.cli import main as cli_main
from pixelroute.telemetry import (
    build_trace,
    compute_stats,
    example_record,
    format_stats,
    import_jsonl,
    make_request_id,
    open_store,
    prometheus_text,
    validate_correction,
)


def _records() -> list[dict]:
    out = []
    for i in range(30):
        rid = make_request_id()
        ts = f"2026-11-25T19:{i:02d}:00.000Z"
        if i % 5 == 0:  # a failed attempt on "remote", then a fallback to "local"
            out.append(
                example_record(rid, 0, "remote", ts=ts, ok=False, error="rate_limited", gpu_s=None, cost_usd=0.0)
            )
            out.append(example_record(rid, 1, "local", ts=f"2026-11-25T19:{i:02d}:01.000Z", latency_s=2.0))
        else:
            rec = example_record(rid, 0, "remote", ts=ts, latency_s=1.0 + i / 10, gpu_s=None, cost_usd=0.04)
            rec["correction"] = {"seconds": float(i), "verdict": "rejected" if i == 1 else "edited", "ts": ts}
            out.append(rec | {"vendor_extra": {"i": i}})
    out.append(example_record(None, 0, None, ok=False, error="no_feasible_backend", refused_reason="too slow"))
    return out


def test_export_import_round_trip_is_lossless(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    assert cli_main(["telemetry", "import", str(src), "--store", a]) == 0
    assert "imported 37 records (0 already present), skipped 0 malformed" in capsys.readouterr().err
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    assert cli_main(["telemetry", "export", "--store", a, "--out", str(first)]) == 0
    assert cli_main(["telemetry", "import", str(first), "--store", b]) == 0
    assert cli_main(["telemetry", "export", "--store", b, "--out", str(second)]) == 0
    assert first.read_text() == second.read_text()
    assert _records_by_id(first) == _records_by_id(src)
    assert list(_records_by_id(first).values())[0].keys() == list(_records_by_id(src).values())[0].keys()
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def _records_by_id(path: Path) -> dict[str, dict]:
    return {f"{r['request_id']}/{r['attempt']}": r for r in map(json.loads, path.read_text().splitlines())}


def test_export_to_stdout_with_since(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with open_store(url) as store:
        store.write_batch(_records()[:10])
    assert cli_main(["telemetry", "export", "--store", url, "--since", "2026-11-25T19:05:00Z"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(json.loads(line)["ts"] >= "2026-11-25T19:05:00.000Z" for line in lines)
    assert cli_main(["telemetry", "export", "--store", url, "--since", "last tuesday"]) == 1
    assert "`--since` must be an ISO-8601 time" in capsys.readouterr().err


def test_malformed_lines_are_reported_by_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [json.dumps(r) for r in _records()[:3]]
    missing_ok = example_record()
    del missing_ok["outcome"]["ok"]
    lines = [good[0], "{not json", good[1], "", json.dumps(missing_ok), "[1, 2]", good[2]]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert cli_main(["telemetry", "import", str(src), "--store", url, "--strict"]) == 1
    assert "line 2: not valid JSON" in capsys.readouterr().err
    with open_store(url) as store:
        assert store.count() == 0  # strict refused the whole file
        report = import_jsonl(src, store)
        assert (report.imported, report.malformed) == (3, 3)
        assert [n for n, _ in report.errors] == [2, 5, 6]
        assert "`outcome.ok`: Field required" in report.errors[1][1]
        again = import_jsonl(src, store)
        assert (again.imported, again.duplicates) == (0, 3)


def test_import_stdin_and_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import io

    url = f"sqlite:///{tmp_path / 'a.db'}"
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(example_record()) + "\n"))
    assert cli_main(["telemetry", "import", "-", "--store", url, "--strict"]) == 0
    assert cli_main(["telemetry", "import", str(tmp_path / "missing.jsonl"), "--store", url]) == 1
    assert "`FILE`" in capsys.readouterr().err


def test_stats_per_backend() -> None:
    stats = compute_stats(_records())
    remote, local, refused = stats["backends"]["remote"], stats["backends"]["local"], stats["backends"]["(none)"]
    assert (remote["requests"], remote["ok"], remote["failures"]) == (30, 24, {"rate_limited": 6})
    assert local["requests"] == 6 and local["success_rate"] == 1.0 and local["latency_s"]["p50"] == 2.0
    assert refused["failures"] == {"no_feasible_backend": 1}
    assert remote["cost_usd_per_request"] == pytest.approx(24 * 0.04 / 30)
    assert remote["accepted_images"] == 23  # one rejected by its reviewer
    assert remote["cost_usd_per_accepted_image"] == pytest.approx(24 * 0.04 / 23)
    corrections = [float(i) for i in range(30) if i % 5]
    assert remote["correction_s"]["mean"] == pytest.approx(sum(corrections) / len(corrections))
    assert local["gpu_s_per_request"] == pytest.approx(1.1)
    assert stats["totals"]["requests"] == 31 and stats["totals"]["attempts"] == 37
    since = compute_stats(_records()[:-1], since="2026-11-25T19:20:00Z")
    assert since["backends"]["remote"]["requests"] == 10
    assert since["backends"]["remote"]["requests_per_minute"] == pytest.approx(10 / 9)
    text = format_stats(stats)
    assert re.search(r"remote\s+30\s+80\.0%", text) and "failures: rate_limited 6" in text


def test_prometheus_text_is_well_formed() -> None:
    stats = compute_stats(_records())
    stats["losses"] = {"queue_full": 2}
    text = prometheus_text(
        stats, recorder_stats={"enqueued": 5, "written": 5, "dropped": 0, "queue_depth": 0, "write_errors": 0}
    )
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\\n]|\\.)*",?)+\})? -?[0-9.e+-]+$')
    families: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            families.add(line.split()[2])
        elif not line.startswith("# HELP"):
            assert sample.match(line), line
    assert 'pixelroute_failures{backend="remote",error="rate_limited"} 6.0' in text
    assert 'pixelroute_latency_seconds{backend="local",quantile="0.5"} 2.0' in text
    assert 'pixelroute_telemetry_lost_records{reason="queue_full"} 2.0' in text
    assert {"pixelroute_requests", "pixelroute_telemetry_dropped_total"} <= families
    assert prometheus_text({"backends": {'we"ird\\': stats["backends"]["local"]}})[:200].count('we\\"ird\\\\') == 1


def test_build_trace() -> None:
    rid = make_request_id()
    first = example_record(
        rid, 0, "remote", ts="2026-11-25T19:00:00.000Z", ok=False, error="server_error", latency_s=0.5
    )
    first["decision"]["candidates"] = [{"backend": "remote", "feasible": True, "why_not": None}]
    second = example_record(rid, 1, "local", ts="2026-11-25T19:00:00.600Z", latency_s=1.0, cost_usd=0.002)
    history = [{"seconds": 9.0, "verdict": "edited", "ts": "x"}, {"seconds": 3.0, "verdict": "accepted", "ts": "y"}]
    trace = build_trace([second, first], history)
    assert trace["request_id"] == rid and trace["backend"] == "local" and trace["ok"] is True
    assert [a["backend"] for a in trace["attempts"]] == ["remote", "local"]
    assert trace["attempts"][0]["error"] == "server_error"
    assert trace["decision"]["candidates"][0]["backend"] == "remote"
    assert trace["cost_usd"] == pytest.approx(0.0037)
    assert trace["latency_s"] == pytest.approx(1.6)
    assert trace["correction"] == history[-1] and trace["correction_history"] == history
    with pytest.raises(ValidationError, match="`records`"):
        build_trace([])
    with pytest.raises(ValidationError, match="one request"):
        build_trace([first, example_record()])


def test_request_ids_are_time_ordered_uuid7() -> None:
    ids = [make_request_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == 5000
    assert all(i[14] == "7" and i[19] in "89ab" for i in ids)


@pytest.mark.parametrize(
    ("seconds", "verdict", "match"),
    [
        (-0.1, "edited", "`seconds`.*-0.1"),
        (86_401, "edited", "`seconds`.*86401"),
        (float("nan"), "edited", "`seconds`.*nan"),
        ("12", "edited", "`seconds` must be a number"),
        (True, "edited", "`seconds` must be a number"),
        (10, "approved", "`verdict`.*'approved'"),
    ],
)
def test_validate_correction_refuses(seconds: object, verdict: object, match: str) -> None:
    with pytest.raises(ValidationError, match=match) as info:
        validate_correction(seconds, verdict)
    assert info.value.field in ("seconds", "verdict")


def test_validate_correction_accepts_bounds() -> None:
    validate_correction(0, "accepted")
    validate_correction(86_400.0, "rejected")


def test_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The Python blocks of docs/telemetry.md run as written, and the converted file imports strictly."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "telemetry.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/telemetry.md", "exec"), {})
    assert "mock" in capsys.readouterr().out
    url = f"sqlite:///{tmp_path / 'converted.db'}"
    assert cli_main(["telemetry", "import", "converted.jsonl", "--store", url, "--strict"]) == 0
    with open_store(url) as store:
        (record,) = store.records_for("abc-1")
    assert record["gateway_row"] == 0 and record["outcome"]["latency_s"] == 2.31
