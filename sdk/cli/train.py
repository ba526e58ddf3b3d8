"""``pixelroute train``: offline retraining from a telemetry store or a JSONL file (docs/retraining.md)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .._errors import ConfigError, ValidationError
from . import _progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="retrain the router from telemetry; writes the artifact and a report")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", metavar="URL",
                     help="sqlite:///file.db or postgresql://user@host/db (must exist: it is only read)")
    src.add_argument("--jsonl", metavar="FILE", help="telemetry as JSON Lines (docs/telemetry.md)")
    p.add_argument("--out", metavar="DIR", required=True, help="artifact directory (written atomically)")
    p.add_argument("--since", metavar="T", help="only records at or after T (ISO time or age like 7d)")
    p.add_argument("--config", metavar="F", help="config whose [[backends]] describe the logged backends")
    p.add_argument("--profiles", metavar="FILE", help="simulator profiles file describing the backends")
    p.add_argument("--promote-if-better", action="store_true",
                   help="replace --out only if the new model's estimated cost is lower at >= SLA attainment")
    p.add_argument("--dask-scheduler", metavar="ADDR",
                   help="train with lightgbm.dask on this Dask scheduler (the dask extra)")
    _progress.add_quiet_arg(p)
    p.set_defaults(func=run)


def _records(args: argparse.Namespace, stack: ExitStack, desc: str = "reading") -> Iterator[dict[str, Any]]:
    from .telemetry import parse_time

    since = parse_time(args.since, "--since")
    if args.store:
        from ..telemetry import open_store

        store = stack.enter_context(open_store(args.store, create=False))  # a reader: never creates it
        total = store.count(since=since) if _progress.shown(args.quiet) else None
        return _progress.counted(store.iter_records(since=since), _progress.bar(desc, total, unit="record",
                                                                                 quiet=args.quiet))
    from ..telemetry.jsonl import ImportReport, read_jsonl

    try:
        # bytes, so the bar counts the file's bytes and shows the time left without a first pass to count lines
        fh = stack.enter_context(Path(args.jsonl).open("rb"))  # noqa: SIM115 - closed by the ExitStack
    except OSError as exc:
        raise ValidationError(f"`--jsonl` {args.jsonl!r} cannot be read: {exc.strerror}", field="jsonl",
                              value=args.jsonl) from None
    size = os.fstat(fh.fileno()).st_size
    lines = _progress.counted(fh, _progress.bar(desc, size, bytes_=True, quiet=args.quiet), size=len)
    report = ImportReport()
    records = read_jsonl(lines, report=report)
    if since is None:
        return records
    cutoff = since.timestamp()
    from pixelroute.router.training import _parse_ts

    return (r for r in records if _parse_ts(r["ts"]) >= cutoff)


def _profiles(args: argparse.Namespace) -> list[Any]:
    if args.profiles:
        from pixelroute.router.simulate import load_backends

        return [b.profile() for b in load_backends(args.profiles)]
    if args.config:
        from .._config import load_settings
        from .route import backend_profiles

        return backend_profiles(load_settings(args.config))
    return []


def run(args: argparse.Namespace) -> int:
    if args.dask_scheduler:
        from .._extras import require

        require("dask", "`pixelroute train --dask-scheduler`")
    from pixelroute.router.training import train

    def say(message: str) -> None:
        _progress.say(f"[train] {message}", args.quiet)

    # on a terminal the bars stand for the step messages (featurized N, training M); a log gets the messages
    drawn = _progress.shown(args.quiet)
    model_bars = _ModelBars(args.quiet) if drawn else None
    out = Path(args.out)
    profiles = _profiles(args)
    with ExitStack() as stack:
        records = _records(args, stack, "parsing")
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.candidate.", dir=out.parent if out.parent.exists()
                                        else None))
        shutil.rmtree(staging)  # train() creates it atomically
        try:
            manifest = train(records, staging, profiles=profiles, dask_scheduler=args.dask_scheduler,
                             progress=None if drawn else say, round_progress=model_bars)
        except ValueError as exc:
            raise ValidationError(f"cannot train: {exc}") from exc
        finally:
            if model_bars is not None:
                model_bars.close()
        try:
            return _finish(args, out, staging, manifest, say)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _finish(args: argparse.Namespace, out: Path, staging: Path, manifest: dict[str, Any], say: Any) -> int:
    from pixelroute.router import Router
    from pixelroute.router.ope import is_better
    from pixelroute.router.report import write_report
    from pixelroute.router.training import write_artifact

    ope = None
    if args.jsonl or args.store:
        ope = _evaluate(args, staging, manifest)
    if args.promote_if_better and out.exists() and ope is not None:
        try:
            live = Router.load(out)
        except ValueError as exc:
            say(f"live model unusable ({exc}); promoting the new one")
        else:
            live_ope = _evaluate(args, out, manifest, router=live)
            if not is_better(ope["lgbm"], live_ope["lgbm"]):
                say(f"not promoted: estimated cost {ope['lgbm']['snips_cost']:.4f} at SLA "
                    f"{ope['lgbm']['snips_sla_attainment']:.3f} vs live {live_ope['lgbm']['snips_cost']:.4f} at "
                    f"{live_ope['lgbm']['snips_sla_attainment']:.3f}")
                write_report(out.parent / f"{out.name}-rejected-report", manifest, ope)
                return 0
    files = {name: (staging / fname).read_text() for name, fname in manifest["model_files"].items()}
    write_artifact(out, manifest, files)
    report = write_report(out / "report", manifest, ope)
    say(f"wrote {out} ({manifest['version']}); report {report} (open it in a browser; report.md beside it)")
    return 0


def _evaluate(args: argparse.Namespace, model_dir: Path, manifest: dict[str, Any], router: Any = None) -> Any:
    """Off-policy estimates on the newest records (the held-out report slice's size), streamed again."""
    from pixelroute.router import BackendProfile, Router
    from pixelroute.router.ope import off_policy_report

    r = router or Router.load(model_dir)
    with ExitStack() as stack:
        records = list(_records(args, stack, "reading for evaluation"))
    records.sort(key=lambda rec: str(rec.get("ts")))
    tail = records[-max(1, manifest["rows"]["report"]):]
    profiles = _profiles(args) or [BackendProfile.from_dict(d) for d in manifest["backend_profiles"]]
    if not profiles:
        raise ConfigError("no backend profiles to evaluate against")
    return off_policy_report(r, tail, profiles)


class _ModelBars:
    """One bar per model over its boosting rounds, fed by ``train(round_progress=...)``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.model: str | None = None
        self.done = 0
        self.bar: _progress.Bar | None = None

    def __call__(self, model: str, done: int, cap: int) -> None:
        if model != self.model:
            self.close()
            self.model, self.done = model, 0
            self.bar = _progress.bar(f"training {model}", cap, unit="round", quiet=self.quiet)
        assert self.bar is not None
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            stopped = self.bar.total is not None and self.done < self.bar.total
            _progress.finish(self.bar, "stopped early: no better on validation" if stopped else None)
            self.bar = None
