"""``pixelroute scenarios run|list``: scenario validation with an HTML report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _types
from .._errors import ValidationError
from ._args import integer_in, seconds, usd
from ._common import add_config_arg, make_client
from ._progress import add_quiet_arg, bar

if TYPE_CHECKING:
    from PIL.Image import Image

    from ..scenarios import Progress, Review, Sample, Suite


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scenarios", help="scenario validation (typography, occlusion, reflections, counting)")
    group = p.add_subparsers(dest="scenarios_command", metavar="SUBCOMMAND")

    run = group.add_parser("run", help="run a suite on chosen backends and write report.html + report.json")
    add_config_arg(run)
    run.add_argument(
        "--backends", metavar="A,B", help="comma-separated backend names (default: all configured)"
    )
    run.add_argument(
        "--suite",
        default="builtin",
        help="`builtin`, or a TSV (Prompt, Challenge columns) or JSONL (prompt, scenario) file",
    )
    run.add_argument("--scenarios", metavar="A,B", help="only these scenarios of the suite")
    run.add_argument(
        "--max-per-scenario",
        type=integer_in("--max-per-scenario", 1),
        metavar="N",
        help="at most N prompts per scenario",
    )
    run.add_argument("--out", required=True, metavar="DIR", help="folder for report.html and report.json")
    run.add_argument(
        "--seeds", type=integer_in("--seeds", 1), default=1, metavar="N", help="seeds per prompt (default 1)"
    )
    run.add_argument(
        "--base-seed", type=integer_in("--base-seed", 0, _types.MAX_SEED), default=0, metavar="S",
        help="first seed (default 0)",
    )
    run.add_argument("--deadline", type=seconds("--deadline"), metavar="S", help="SLA deadline per request in seconds")
    run.add_argument("--max-cost", type=usd("--max-cost"), metavar="USD", help="SLA cost cap per request")
    side = (_types.MIN_SIDE, _types.MAX_SIDE)
    run.add_argument("--width", type=integer_in("--width", *side), help="image width (default: each backend's default)")
    run.add_argument(
        "--height", type=integer_in("--height", *side), help="image height (default: each backend's default)"
    )
    run.add_argument(
        "--clip-model", metavar="PATH", help="local CLIP model folder or cached hub id for CLIP scores"
    )
    run.add_argument("--tesseract", metavar="CMD", help="tesseract executable for the OCR scorer")
    run.add_argument(
        "--review",
        action="store_true",
        help="ask for a verdict on each image (sent through report_correction)",
    )
    add_quiet_arg(run)
    run.set_defaults(func=run_command)

    lst = group.add_parser("list", help="show a suite's scenarios and prompt counts")
    lst.add_argument("--suite", default="builtin", help="`builtin` or a TSV/JSONL file")
    lst.set_defaults(func=list_command)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _suite(spec: str) -> Suite:
    from ..scenarios import builtin_suite, load_suite

    return builtin_suite() if spec == "builtin" else load_suite(spec)


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def list_command(args: argparse.Namespace) -> int:
    suite = _suite(args.suite)
    print(f"suite {suite.name}: {len(suite.scenarios)} scenarios")
    for s in suite.scenarios:
        print(f"  {s.name:<24} {len(s.prompts):>5} prompts  scorers: {', '.join(s.scorers)}")
    return 0


def _console_reviewer(out_dir: Path) -> Any:
    """Save each image and ask for a verdict on stdin (a person at a terminal)."""
    from ..scenarios import parse_review

    folder = out_dir / "review"
    folder.mkdir(parents=True, exist_ok=True)

    def ask(sample: Sample, image: Image) -> Review | None:
        path = folder / f"{sample.request_id}.png"
        image.save(path)
        print(
            f"\n{sample.scenario} / {sample.backend} / seed {sample.seed}: {sample.prompt}\n  image: {path}",
            file=sys.stderr,
        )
        while True:
            print(
                "  verdict? [a]ccepted, [e]dited SECONDS, [r]ejected SECONDS, [s]kip: ",
                end="",
                file=sys.stderr,
                flush=True,
            )
            line = sys.stdin.readline()
            if not line:  # end of input: stop asking, keep the run going
                return None
            try:
                return parse_review(line)
            except ValidationError as exc:
                print(f"  {exc}", file=sys.stderr)

    return ask


@contextmanager
def _bar(args: argparse.Namespace) -> Iterator[Progress]:
    """The run's bar, as the ``progress`` callback of :func:`run_scenarios`."""
    # a person reviewing gets the terminal to themselves: a bar redrawn under the questions garbles them
    progress = bar("scenarios", unit="image", quiet=args.quiet or args.review)

    def step(sample: Sample, done: int, total: int) -> None:
        progress.total = total
        failed = "" if sample.ok else f" FAILED {sample.error}"
        progress.set_postfix_str(f"{sample.scenario} / {sample.backend}{failed}", refresh=False)
        progress.update(1)

    try:
        yield step
    finally:
        progress.close()


def run_command(args: argparse.Namespace) -> int:
    from ..scenarios import default_scorers, run_scenarios, write_report

    suite = _suite(args.suite).select(_names(args.scenarios)).limited(args.max_per_scenario)
    sla = {k: v for k, v in (("deadline_s", args.deadline), ("max_cost_usd", args.max_cost)) if v is not None}
    out = Path(args.out)
    with make_client(args) as client, _bar(args) as step:
        result = run_scenarios(
            client,
            suite,
            backends=_names(args.backends),
            seeds=args.seeds,
            base_seed=args.base_seed,
            sla=sla or None,
            width=args.width,
            height=args.height,
            scorers=default_scorers(tesseract=args.tesseract, clip_model=args.clip_model),
            reviewer=_console_reviewer(out) if args.review else None,
            progress=step,
        )
    html, data = write_report(result, out)
    failed = sum(not s.ok for s in result.samples)
    for name, reason in sorted(result.scorers_skipped.items()):
        print(f"scorer {name} skipped: {reason}")
    print(
        f"{len(result.samples)} requests on {len(result.backends)} backends, {failed} failed, "
        f"{result.wall_s:.1f} s"
    )
    print(f"report: {html}")
    print(f"data:   {data}")
    return 0
