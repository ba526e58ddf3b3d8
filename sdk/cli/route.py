"""``pixelroute route``: what-if decisions for a JSONL of requests, without generating (docs/router.md)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .._errors import ConfigError, ValidationError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("route", help="the decisions the router would make, without generating")
    p.add_argument("--config", metavar="F", required=True, help="pixelroute TOML config (backends, [router])")
    p.add_argument("--model", metavar="DIR", help="router artifact (default: the config's; none = cold start)")
    p.add_argument("--requests", metavar="FILE.jsonl", required=True,
                   help='lines {"request_id", "prompt", "params", "sla", "context"}')
    p.add_argument("--out", metavar="FILE.jsonl", required=True)
    p.set_defaults(func=run)


def backend_profiles(settings: Any) -> list[Any]:
    """Router profiles for the configured backends (nothing is loaded or connected)."""
    import importlib

    from_client = getattr(importlib.import_module("pixelroute._client"), "backend_profiles", None)
    if from_client is not None:  # the client's own conversion, when it provides one
        profiles: list[Any] = from_client(settings)
        return profiles
    from pixelroute.router import BackendProfile

    from ..backends import create_backend

    return [BackendProfile.from_dict(create_backend(b).describe()) for b in settings.backends]


def decision_line(request_id: Any, decision: Any) -> dict[str, Any]:
    """One §5 output line."""
    return {
        "request_id": request_id,
        "backend": decision.backend,
        "steps": decision.steps,
        "fallbacks": [c.backend for c in decision.fallbacks],
        "propensity": decision.propensity,
        "explored": decision.explored,
        "candidates": [{"backend": c.backend, "steps": c.steps, "feasible": c.feasible,
                        "latency_p50_s": c.latency_p50_s, "latency_p95_s": c.latency_p95_s,
                        "p_on_time": c.p_on_time, "p_fail": c.p_fail, "correction_s": c.correction_s,
                        "cost_usd": c.cost_usd, "expected_total_usd": c.expected_total_usd, "why_not": c.why_not,
                        "loaded": c.loaded}
                       for c in decision.candidates],
        "predicted_to_miss": decision.predicted_to_miss,
        "reason": decision.reason,
    }


def run(args: argparse.Namespace) -> int:
    from pixelroute.router import RouteContext, Router, RouteRequest, SLASpec

    from .._config import load_settings

    settings = load_settings(args.config)
    rs = settings.router
    model = args.model or rs.model
    policy: dict[str, Any] = {"correction_cost_per_hour": rs.correction_cost_per_hour, "exploration": rs.exploration,
              "sla_confidence": rs.sla_confidence, "best_effort": rs.on_infeasible == "best_effort", "seed": rs.seed}
    if model and Path(model).exists():
        try:
            router = Router.load(model, **policy)
        except ValueError as exc:
            raise ConfigError(f"`--model` {model!r}: {exc}") from exc
    elif args.model:
        raise ConfigError(f"`--model` directory {args.model!r} does not exist")
    else:
        router = Router.cold_start(**policy)
    profiles = backend_profiles(settings)
    if not profiles:
        raise ConfigError(f"{args.config} configures no [[backends]] to route between")
    try:
        src = open(args.requests)  # noqa: SIM115 - closed by the `with` below
    except OSError as exc:
        raise ValidationError(f"`--requests` {args.requests!r} cannot be read: {exc.strerror}", field="requests",
                              value=args.requests) from None
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with src, tmp.open("w") as dst:
            for number, line in enumerate(src, 1):
                if not line.strip():
                    continue
                try:
                    req = json.loads(line)
                    sla = req.get("sla") or {}
                    if not isinstance(req, dict) or "prompt" not in req:
                        raise ValueError("a request line must be an object with a `prompt`")
                    # the same parsers training uses: RouteRequest.from_record, RouteContext.from_dict
                    request = RouteRequest.from_record(req)
                    spec = SLASpec(_seconds(sla.get("deadline_s"), "sla.deadline_s"),
                                   _seconds(sla.get("max_cost_usd"), "sla.max_cost_usd"))
                    context = RouteContext.from_dict(req.get("context"))
                except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
                    raise ValidationError(f"`--requests` line {number}: {exc}", field=f"line {number}") from None
                decision = router.decide(request, spec, profiles, context)
                dst.write(json.dumps(decision_line(req.get("request_id"), decision)) + "\n")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return 0


def _seconds(v: Any, where: str) -> float | None:
    """A positive finite number or null (a deadline or a budget)."""
    import math

    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"`{where}` must be a positive number or null but is {v!r}")
    return float(v)
