"""``pixelroute train``: offline retraining from a telemetry store or a JSONL file (docs/retraining.md)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .._errors import ConfigError, ValidationError


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
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def _records(args: argparse.Namespace, stack: ExitStack) -> Iterator[dict[str, Any]]:
    from .telemetry import parse_time

    since = parse_time(args.since, "--since")
    if args.store:
        from ..telemetry import open_store

        store = stack.enter_context(open_store(args.store, create=False))  # a reader: never creates it
        return iter(store.iter_records(since=since))
    from ..telemetry.jsonl import ImportReport, read_jsonl

    try:
        fh = stack.enter_context(Path(args.jsonl).open())  # noqa: SIM115 - closed by the ExitStack
    except OSError as exc:
        raise ValidationError(f"`--jsonl` {args.jsonl!r} cannot be read: {exc.strerror}", field="jsonl",
                              value=args.jsonl) from None
    report = ImportReport()
    records = read_jsonl(fh, report=report)
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

    say = (lambda _m: None) if args.quiet else (lambda m: print(f"[train] {m}", file=sys.stderr))
    out = Path(args.out)
    profiles = _profiles(args)
    with ExitStack() as stack:
        records = _records(args, stack)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.candidate.", dir=out.parent if out.parent.exists()
                                        else None))
        shutil.rmtree(staging)  # train() creates it atomically
        try:
            manifest = train(records, staging, profiles=profiles, dask_scheduler=args.dask_scheduler, progress=say)
        except ValueError as exc:
            raise ValidationError(f"cannot train: {exc}") from exc
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
        records = list(_records(args, stack))
    records.sort(key=lambda rec: str(rec.get("ts")))
    tail = records[-max(1, manifest["rows"]["report"]):]
    profiles = _profiles(args) or [BackendProfile.from_dict(d) for d in manifest["backend_profiles"]]
    if not profiles:
        raise ConfigError("no backend profiles to evaluate against")
    return off_policy_report(r, tail, profiles)
