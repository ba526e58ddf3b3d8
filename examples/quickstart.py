"""Quickstart: one routed generation, its trace, and a correction report.

    python examples/quickstart.py        # saves quickstart.png; `python examples/quickstart.py OUT.png` names the file

Runs offline on the embedded default: two tiny local diffusers pipelines with RANDOM weights
(the image is noise; point `model` at a hub id in a config for real images). The first run
builds them (~10 s); later runs reuse them from the cache dir.
"""

from __future__ import annotations

import sys

from pixelroute import SLA, Client


def main(out: str = "quickstart.png") -> None:
    with Client() as client:  # or Client.from_config("pixelroute.toml")
        result = client.generate(
            "a red bicycle leaning on a glass wall",
            sla=SLA(deadline_s=60, max_cost_usd=0.05),
            width=64,
            height=64,
            seed=7,
        )
        result.image.save(out)
        decision = result.trace["decision"]
        print(f"request {result.request_id}: {result.backend}")
        print(f"latency {result.latency_s:.2f} s, cost ${result.cost_usd:.5f}")
        print(f"why: {decision.get('reason')}")
        # later, when a person has fixed the image: this is what the router learns from
        client.report_correction(result.request_id, seconds=42.0, verdict="edited")
        print(f"correction stored: {client.trace(result.request_id)['correction']}")
        print(f"saved {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
