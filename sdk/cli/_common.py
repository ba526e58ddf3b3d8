"""Helpers shared by command modules: client construction and trace printing."""

from __future__ import annotations

import argparse
from typing import Any


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="pixelroute TOML config (default: the embedded tiny local backends)"
    )


def make_client(args: argparse.Namespace) -> Any:
    from .._client import Client

    if getattr(args, "config", None):
        return Client.from_config(args.config)
    print("pixelroute: no --config given: using the embedded default (tiny local pipelines with RANDOM weights,")
    print("            so the images are noise; set `model` to a hub id in a config for real images)")
    return Client()


def format_trace(trace: dict[str, Any]) -> str:
    """A human summary of a Result.trace or a stored trace."""
    lines = []
    decision = trace.get("decision") or {}
    lines.append(f"request   {trace.get('request_id')}")
    lines.append(f"backend   {trace.get('backend') or decision.get('backend')}")
    if decision:
        lines.append(
            f"policy    {decision.get('policy')} ({decision.get('router_version')}), "
            f"propensity {decision.get('propensity')}, explored {decision.get('explored')}"
        )
        lines.append(f"why       {decision.get('reason')}")
        cands = decision.get("candidates") or []
        if cands:
            lines.append("candidates:")
            lines.append(
                f"  {'backend':<18} {'steps':>5} {'feasible':>8} {'p50 s':>7} {'p95 s':>7} {'P(fail)':>7} "
                f"{'corr s':>7} {'price $':>8} {'total $':>8}  why not"
            )
            for c in cands:
                lines.append(
                    f"  {c.get('backend', ''):<18} {str(c.get('steps') or '-'):>5} {str(c.get('feasible')):>8} "
                    f"{_num(c.get('latency_p50_s')):>7} {_num(c.get('latency_p95_s')):>7} {_num(c.get('p_fail')):>7} "
                    f"{_num(c.get('correction_s')):>7} {_num(c.get('cost_usd'), 5):>8} "
                    f"{_num(c.get('expected_total_usd'), 5):>8}  {c.get('why_not') or ''}"
                )
    for a in trace.get("attempts") or []:
        status = "ok" if a.get("ok") else f"failed: {a.get('error')}"
        lines.append(
            f"attempt {a.get('attempt')}: {a.get('backend')} {status}, latency {_num(a.get('latency_s'))} s, "
            f"cost ${_num(a.get('cost_usd'), 6)}"
        )
    lines.append(f"total     latency {_num(trace.get('latency_s'))} s, cost ${_num(trace.get('cost_usd'), 6)}")
    if trace.get("correction"):
        c = trace["correction"]
        lines.append(f"correction {c.get('seconds')} s, verdict {c.get('verdict')}")
    return "\n".join(lines)


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)
