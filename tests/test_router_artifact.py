"""Damaged, tampered and hostile router artifacts: a clear error naming the file, never a crashed process.

LightGBM's text parser aborts or segfaults on a truncated model (that would kill pytest itself),
so every in-process case here relies on the loader refusing the bytes BEFORE LightGBM sees them:
the manifest's SHA-256 per model file, paths confined to the directory, and a structural check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pixelroute import Client, ConfigError, MockBackend, Price
from pixelroute._config import load_settings
from pixelroute.backends.base import BackendSettings
from pixelroute.router import ArtifactError, Router, RouteRequest, SLASpec, simulate, train
from pixelroute.router.models import FORMAT_VERSION, MANIFEST, MODEL_NAMES, TrainedModels
from pixelroute.router.simulate import DEFAULT_BACKENDS
from pixelroute.router.training import TrainParams, write_artifact
from tests._import_root import SUBPROCESS_PYTHONPATH

PROFILES = [b.profile() for b in DEFAULT_BACKENDS]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("artifact") / "router-model"
    train(simulate(1500, seed=2), out, profiles=PROFILES, params=TrainParams(seed=0))
    yield out


def copy(artifact: Path, dst: Path) -> Path:
    shutil.copytree(artifact, dst, symlinks=True)
    return dst


def manifest_of(model_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((model_dir / MANIFEST).read_text())
    return doc


def write_manifest(model_dir: Path, doc: Any) -> None:
    """Replace the manifest the way a writer does (a new inode), so a watcher sees the change."""
    tmp = model_dir / ".manifest.tmp"
    tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(tmp, model_dir / MANIFEST)


def model_file(model_dir: Path, name: str = "latency_p50") -> Path:
    return model_dir / manifest_of(model_dir)["model_files"][name]


def rehash(model_dir: Path) -> None:
    """What a careless hand-edit does: recompute every hash over whatever is on disk now."""
    doc = manifest_of(model_dir)
    doc["model_sha256"] = {n: hashlib.sha256((model_dir / f).read_bytes()).hexdigest()
                           for n, f in doc["model_files"].items()}
    write_manifest(model_dir, doc)


def mock_backend() -> MockBackend:
    return MockBackend("m", settings=BackendSettings(name="m", kind="mock", price=Price(per_image=0.01),
                                                     typical_latency_s=0.1))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- what training writes -----------------------------------------------------------------------------------------


def test_manifest_lists_a_sha256_per_model_file(artifact: Path) -> None:
    doc = manifest_of(artifact)
    assert doc["format_version"] == FORMAT_VERSION == 3
    assert set(doc["model_sha256"]) == set(MODEL_NAMES) == set(doc["model_files"])
    for name, file_name in doc["model_files"].items():
        assert doc["model_sha256"][name] == hashlib.sha256((artifact / file_name).read_bytes()).hexdigest()
    assert Router.load(artifact).version == doc["version"]


def test_write_artifact_refuses_file_names_outside_the_directory(tmp_path: Path) -> None:
    manifest = {"model_files": {"latency_p50": "../escape.txt"}}
    with pytest.raises(ValueError, match=r"`model_files.latency_p50`.*plain file name.*'\.\./escape\.txt'"):
        write_artifact(tmp_path / "out", manifest, {"latency_p50": "tree\n"})
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()


def test_retraining_over_a_garbled_manifest_still_writes(artifact: Path, tmp_path: Path) -> None:
    out = copy(artifact, tmp_path / "m")
    write_manifest(out, "[1, 2]")  # valid JSON, not an object
    doc = manifest_of(artifact)
    texts = {n: (artifact / f).read_text() for n, f in doc["model_files"].items()}
    write_artifact(out, dict(doc), texts)
    assert Router.load(out).version == doc["version"]


# -- damaged model files --------------------------------------------------------------------------------------------


def _truncate_half(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _same_length_edit(p: Path) -> None:
    text = p.read_text()
    i = text.index("leaf_value=") + len("leaf_value=")
    while not text[i].isdigit():
        i += 1
    p.write_text(text[:i] + ("7" if text[i] != "7" else "3") + text[i + 1:])


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate_half,
    "empty": lambda p: p.write_bytes(b""),
    "200 bytes": lambda p: p.write_bytes(p.read_bytes()[:200]),
    "same-length edit": _same_length_edit,
    "garbage": lambda p: p.write_bytes(os.urandom(4096)),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_model_file_is_refused_by_its_hash(artifact: Path, tmp_path: Path, damage: str) -> None:
    bad = copy(artifact, tmp_path / "bad")
    target = model_file(bad)
    DAMAGE[damage](target)
    with pytest.raises(ArtifactError, match="does not match its SHA-256") as info:
        Router.load(bad)
    assert isinstance(info.value, ValueError)
    assert info.value.path == str(target) and target.name in str(info.value) and "'latency_p50'" in str(info.value)


@pytest.mark.parametrize("cut", ["1000", "5000", "18000", "trees_end", "params", "params_end", "pandas"])
def test_damage_with_a_recomputed_hash_is_refused_before_lightgbm(artifact: Path, tmp_path: Path, cut: str) -> None:
    """Truncations that abort or segfault lightgbm 4.7 when it parses them (each found by hand)."""
    bad = copy(artifact, tmp_path / "bad")
    target = model_file(bad)
    text = target.read_text()
    at = {"trees_end": text.index("end of trees") + 5, "params": text.index("[num_leaves"),
          "params_end": text.index("end of parameters") + 4, "pandas": len(text) - 3}.get(cut)
    target.write_text(text[: int(cut) if at is None else at])
    rehash(bad)
    with pytest.raises(ArtifactError, match="not a usable LightGBM text model") as info:
        Router.load(bad)
    assert target.name in str(info.value)


FUZZ = """
import json, random, sys
import lightgbm as lgb
from pixelroute.router._lgbm_text import check_model_text
src = open(sys.argv[1]).read()
verdicts = {"refused": 0, "loaded": 0, "lightgbm_error": 0}
for seed in range(int(sys.argv[2])):
    rng = random.Random(seed)
    t = src
    for _ in range(rng.randrange(1, 3)):
        k, i, j = rng.randrange(5), rng.randrange(len(t)), rng.randrange(len(t))
        if k == 0: t = t[:i]
        elif k == 1: t = t[:i] + rng.choice("09 =-.\\nT") + t[i + 1:]
        elif k == 2: t = t[:min(i, j)] + t[max(i, j):]
        elif k == 3: t = t[:i] + rng.choice(["1", " 3", "=", "\\n\\n", "-9"]) + t[i:]
        else: lines = t.split("\\n"); del lines[i % len(lines)]; t = "\\n".join(lines)
    try:
        check_model_text(t)
    except ValueError:
        verdicts["refused"] += 1
        continue
    try:
        lgb.Booster(model_str=t).dump_model()
        verdicts["loaded"] += 1
    except Exception:
        verdicts["lightgbm_error"] += 1
print(json.dumps(verdicts))
"""


def test_fuzzed_model_text_that_passes_the_check_never_crashes_lightgbm(artifact: Path) -> None:
    """Seeded random cuts, splices and edits: what the check lets through, LightGBM parses without dying.

    In a subprocess, so that a gap in the check fails this test instead of killing the test run.
    """
    proc = subprocess.run([sys.executable, "-c", FUZZ, str(model_file(artifact, "latency_pq")), "300"],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH})
    assert proc.returncode == 0, f"LightGBM died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    verdicts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert verdicts["refused"] > 200 and sum(verdicts.values()) == 300, verdicts


# -- malformed manifests --------------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def edit(doc: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
        return doc
    return edit


def _drop(path: str) -> Callable[[dict[str, Any]], Any]:
    def edit(doc: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]
        return doc
    return edit


MANIFESTS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "empty file": (lambda d: "", "not valid JSON"),
    "cut short": (lambda d: json.dumps(d)[:300], "not valid JSON"),
    "not UTF-8": (lambda d: b"\xff\xfe{}", "not UTF-8"),
    "a list": (lambda d: [d], "must hold a JSON object"),
    "deep nesting": (lambda d: "[" * 200_000 + "]" * 200_000, "nests JSON deeper"),
    "huge integer": (lambda d: '{"format_version": ' + "9" * 5000 + "}", "not valid JSON"),
    "format_version 2": (_set("format_version", 2), "format_version 2, written by an older pixelroute.*retrain"),
    "format_version as text": (_set("format_version", "3"), "format_version `'3'`"),
    "format_version true": (_set("format_version", True), "format_version `True`"),
    "no version": (_drop("version"), "`version` is missing"),
    "version with NUL": (_set("version", "v\x00"), "`version`"),
    "no model_files": (_drop("model_files"), "`model_files` is missing"),
    "model_files a list": (_set("model_files", ["a.txt"]), "`model_files` .* must be an object"),
    "model file not text": (_set("model_files.p_fail", 7), "`model_files.p_fail`.*must be a file name"),
    "no model_sha256": (_drop("model_sha256"), "`model_sha256` is missing"),
    "short digest": (_set("model_sha256.p_fail", "abc"), "`model_sha256.p_fail`.*SHA-256"),
    "no hash for a model": (_drop("model_sha256.correction"), "`model_sha256.correction` is missing"),
    "backends not names": (_set("backends", [1, 2]), "`backends`"),
    "duplicate backends": (_set("backends", ["a", "a"]), "`backends`.*distinct"),
    "profile price text": (_set("backend_profiles.0.price", "free"), r"`backend_profiles\[0\]\.price`"),
    "profile step not int": (_set("backend_profiles.0.step_options", [1.5]), r"`backend_profiles\[0\]\.step_options`"),
    "profile without name": (_drop("backend_profiles.0.name"), r"`backend_profiles\[0\]\.name`"),
    "latency_quantile text": (_set("latency_quantile", "0.95"), "`latency_quantile`"),
    "latency_quantile out of range": (_set("latency_quantile", 1.5), "`latency_quantile`"),
    "latency_quantile infinite": (lambda d: json.dumps(d).replace('"latency_quantile": 0.95',
                                                                  '"latency_quantile": 1e999'), "`latency_quantile`"),
    "conformal without star": (_drop("conformal.p50.*"), "`conformal.p50`"),
    "conformal huge int": (_set("conformal.pq.*", 10**400), "`conformal.pq`"),
    "schema hash": (_set("feature_schema_hash", "0000"), "feature schema"),
}


@pytest.mark.parametrize("case", list(MANIFESTS), ids=list(MANIFESTS))
def test_malformed_manifest_is_an_artifact_error_naming_the_file(artifact: Path, tmp_path: Path, case: str) -> None:
    bad = copy(artifact, tmp_path / "bad")
    edit, message = MANIFESTS[case]
    body = edit(manifest_of(bad))
    if isinstance(body, bytes):
        (bad / MANIFEST).write_bytes(body)
    else:
        write_manifest(bad, body)
    with pytest.raises(ArtifactError, match=message) as info:
        Router.load(bad)
    assert str(bad / MANIFEST) in str(info.value)


def test_oversized_manifest_fifo_and_directory_are_refused(artifact: Path, tmp_path: Path) -> None:
    bad = copy(artifact, tmp_path / "bad")
    with open(bad / MANIFEST, "r+b") as fh:
        fh.truncate(9 << 20)  # sparse: 9 MiB of nothing
    with pytest.raises(ArtifactError, match="more than the"):
        Router.load(bad)
    (bad / MANIFEST).unlink()
    (bad / MANIFEST).mkdir()
    with pytest.raises(ArtifactError, match="not a regular file"):
        Router.load(bad)
    if hasattr(os, "mkfifo"):
        (bad / MANIFEST).rmdir()
        os.mkfifo(bad / MANIFEST)  # opening it must not wait for a writer
        with pytest.raises(ArtifactError, match="not a regular file"):
            Router.load(bad)


# -- paths outside the artifact ---------------------------------------------------------------------------------------


def _point_p_fail_at(bad: Path, name: str) -> None:
    doc = manifest_of(bad)
    doc["model_files"]["p_fail"] = name
    write_manifest(bad, doc)


def test_model_files_outside_the_directory_are_refused(artifact: Path, tmp_path: Path) -> None:
    """Each outside file is a byte-exact copy of the real model, so only the path rule refuses it."""
    bad = copy(artifact, tmp_path / "bad")
    outside = tmp_path / "outside.txt"
    shutil.copyfile(model_file(bad, "p_fail"), outside)
    for name in (str(outside), "../outside.txt", "sub/p_fail.txt", "..", "C:outside.txt"):
        _point_p_fail_at(bad, name)
        with pytest.raises(ArtifactError, match="`model_files.p_fail`.*plain file name"):
            Router.load(bad)
    (bad / "link.txt").symlink_to(outside)
    _point_p_fail_at(bad, "link.txt")
    with pytest.raises(ArtifactError, match="resolves to .*outside the artifact directory"):
        Router.load(bad)
    # a symlink that stays inside is fine
    (bad / "inside.txt").symlink_to(model_file(artifact, "p_fail").name)
    _point_p_fail_at(bad, "inside.txt")
    assert Router.load(bad).policy_name == "lgbm"


def test_missing_model_file_and_symlink_loop(artifact: Path, tmp_path: Path) -> None:
    bad = copy(artifact, tmp_path / "bad")
    model_file(bad, "p_fail").unlink()
    with pytest.raises(ArtifactError, match="lacks the 'p_fail' model file"):
        Router.load(bad)
    (bad / "loop.txt").symlink_to("loop.txt")
    _point_p_fail_at(bad, "loop.txt")
    with pytest.raises(ArtifactError, match="'p_fail' model file .* cannot be resolved"):
        TrainedModels.load(bad)


# -- the SDK --------------------------------------------------------------------------------------------------------


def test_client_start_with_a_damaged_artifact_is_a_config_error_naming_the_file(artifact: Path,
                                                                                  tmp_path: Path) -> None:
    bad = copy(artifact, tmp_path / "bad")
    target = model_file(bad, "correction")
    _truncate_half(target)
    settings = load_settings({"router": {"model": str(bad)}})
    with pytest.raises(ConfigError, match=f"`router.model`.*{target.name}.*SHA-256"):
        Client(settings, backends=[mock_backend()], store=f"sqlite:///{tmp_path / 't.db'}")


def _warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


def test_running_client_keeps_its_model_through_a_damaged_reload_and_warns_once(
        artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    live = copy(artifact, tmp_path / "live")
    good_manifest = (live / MANIFEST).read_text()
    version = manifest_of(live)["version"]
    clock = Clock()
    router = Router.load(live, exploration=0.0, clock=clock)
    caplog.set_level(logging.INFO, logger="pixelroute.router")
    with Client(load_settings({}), backends=[mock_backend()], router=router,
                store=f"sqlite:///{tmp_path / 't.db'}", clock=clock) as client:

        def generate_for(seconds: int) -> None:
            for _ in range(seconds):  # one request a second, each one past the reload check
                clock.now += 1.5
                r = client.generate("a red bicycle", width=64, height=64)
                assert r.trace["decision"]["policy"] == "lgbm" and r.trace["decision"]["router_version"] == version

        # 1. a model file damaged in place, then a manifest that no longer parses
        target = model_file(live)
        _truncate_half(target)
        write_manifest(live, good_manifest.replace('"format_version"', '"format_version" '))
        generate_for(5)
        assert len(_warnings(caplog, "pixelroute.router")) == 1, caplog.text
        assert target.name in _warnings(caplog, "pixelroute.router")[0].getMessage()
        write_manifest(live, good_manifest[:100])
        generate_for(5)
        assert len(_warnings(caplog, "pixelroute.router")) == 2, caplog.text
        assert "not valid JSON" in _warnings(caplog, "pixelroute.router")[1].getMessage()
        # 2. the good artifact comes back: a manifest naming files that are still being copied in
        shutil.copyfile(model_file(artifact), target.with_suffix(".partial"))
        write_manifest(live, good_manifest)
        generate_for(3)
        assert len(_warnings(caplog, "pixelroute.router")) == 3 and router.predictor.version == version
        os.replace(target.with_suffix(".partial"), target)
        generate_for(2)
    assert len(_warnings(caplog, "pixelroute.router")) == 3, caplog.text
    assert any("router reloaded model" in r.getMessage() for r in caplog.records)


def test_cold_start_client_watching_for_a_broken_artifact_stays_cold_and_warns_once(
        artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_dir = tmp_path / "router-model"
    clock = Clock()
    caplog.set_level(logging.INFO, logger="pixelroute")
    settings = load_settings({"router": {"model": str(model_dir), "exploration": 0.0}})
    with Client(settings, backends=[mock_backend()], store=f"sqlite:///{tmp_path / 't.db'}", clock=clock) as client:

        def policies(n: int) -> set[str]:
            out = set()
            for _ in range(n):
                clock.now += 1.5
                out.add(client.generate("a red bicycle", width=64, height=64).trace["decision"]["policy"])
            return out

        assert policies(1) == {"cold_start"}
        copy(artifact, model_dir)
        target = model_file(model_dir, "p_fail")
        target.write_bytes(target.read_bytes()[:200])
        assert policies(5) == {"cold_start"}
        warned = _warnings(caplog, "pixelroute")
        assert len(warned) == 1 and target.name in warned[0].getMessage(), caplog.text
        shutil.copyfile(model_file(artifact, "p_fail"), target)
        assert policies(2) == {"lgbm"}
    assert len(_warnings(caplog, "pixelroute")) == 1


def test_decisions_from_a_reloaded_artifact_match_a_fresh_load(artifact: Path, tmp_path: Path) -> None:
    live = copy(artifact, tmp_path / "live")
    clock = Clock()
    router = Router.load(live, exploration=0.0, clock=clock)
    write_manifest(live, (live / MANIFEST).read_text())  # same content, new inode: a reload
    clock.now += 2
    assert router.maybe_reload()
    sla = SLASpec(deadline_s=30)
    assert (router.decide(RouteRequest("a cat"), sla, PROFILES).backend
            == Router.load(artifact, exploration=0.0).decide(RouteRequest("a cat"), sla, PROFILES).backend)


# -- permissions ----------------------------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize(("umask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_artifact_is_written_with_the_umask(artifact: Path, tmp_path: Path, umask: int, dir_mode: int,
                                            file_mode: int) -> None:
    """A gateway running as another user must be able to read what root's cron trained (not 0700/0600)."""
    doc = manifest_of(artifact)
    texts = {n: (artifact / f).read_text() for n, f in doc["model_files"].items()}
    out = tmp_path / "router-model"
    old = os.umask(umask)
    try:
        write_artifact(out, dict(doc), texts)  # a new directory, renamed into place
        new_files = {**doc["model_files"], "latency_p50": "latency_p50.next.txt"}
        write_artifact(out, {**doc, "model_files": new_files}, texts)  # an existing one, updated in place
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == dir_mode
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert MANIFEST in modes and "latency_p50.next.txt" in modes and len(modes) == 6, modes
    assert set(modes.values()) == {file_mode}, modes
    assert Router.load(out).policy_name == "lgbm"
