"""``pixelroute generate PROMPT``: one routed generation; saves the PNG and prints the trace."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import _types
from ._args import integer_in, number_in, seconds, text, usd
from ._common import add_config_arg, format_trace, make_client


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("generate", help="one routed generation; saves the PNG and prints the trace")
    # bad values stop here with exit 2 naming the option, before a client or a store is opened
    p.add_argument("prompt", type=text("prompt"))
    p.add_argument("--deadline", type=seconds("--deadline"), metavar="S", help="seconds for the whole call")
    p.add_argument("--max-cost", type=usd("--max-cost"), metavar="USD", help="cost cap across attempts")
    p.add_argument("--seed", type=integer_in("--seed", 0, _types.MAX_SEED))
    p.add_argument("--steps", type=integer_in("--steps", 1, _types.MAX_STEPS))
    p.add_argument("--guidance", type=number_in("--guidance", 0, _types.MAX_GUIDANCE))
    p.add_argument("--negative-prompt", type=text("--negative-prompt"))
    p.add_argument("--width", type=integer_in("--width", _types.MIN_SIDE, _types.MAX_SIDE))
    p.add_argument("--height", type=integer_in("--height", _types.MIN_SIDE, _types.MAX_SIDE))
    p.add_argument("--backend", type=text("--backend"), help="pin a backend by name instead of routing")
    p.add_argument("--out", default="pixelroute.png", metavar="FILE", help="where to save the PNG")
    add_config_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._png import save_png
    from .._types import SLA

    with make_client(args) as client:
        result = client.generate(
            args.prompt,
            sla=SLA(deadline_s=args.deadline, max_cost_usd=args.max_cost),
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            negative_prompt=args.negative_prompt,
            width=args.width,
            height=args.height,
            backend=args.backend,
        )
        out = Path(args.out)
        paths = []
        for i, image in enumerate(result.images):
            path = out if len(result.images) == 1 else out.with_name(f"{out.stem}-{i}{out.suffix}")
            paths.append(save_png(image, path, png_metadata(result, args.prompt, i)))
        print(format_trace(result.trace))
        for path in paths:
            print(f"saved     {path}")
    return 0


def png_metadata(result: object, prompt: str, index: int) -> dict[str, object]:
    """What every saved PNG carries, in agreement with the stored trace."""
    from .._types import Result

    assert isinstance(result, Result)
    trace = result.trace
    attempts = trace.get("attempts") or []
    last = attempts[-1] if attempts else {}
    decision = trace.get("decision") or {}
    final = (trace.get("redecisions") or [decision])[-1] if decision else {}
    return {
        "request_id": result.request_id,
        "prompt": prompt,
        "backend": result.backend,
        "model": last.get("model"),
        "router_version": (final or {}).get("router_version"),
        "operation": trace.get("operation", "generate"),
        **({"input": trace["input"]} if trace.get("input") else {}),
        # a seed (an edit's strength) the backend chose itself is in the attempt's outcome, not in
        # the caller's params
        "params": {**(last.get("params") or {}),
                   **{k: last[k] for k in ("seed", "strength") if last.get(k) is not None}},
        "steps": last.get("steps"),
        "seed": trace.get("seed") if trace.get("seed") is not None else last.get("seed"),
        "image_index": index,
        "latency_s": result.latency_s,
        "cost_usd": result.cost_usd,
    }
