"""Micro-batching throughput: images/s for 1..16 concurrent requests, batching off vs on.

Each round starts ``c`` threads at once, each asking the same tiny pipeline for one image
(different prompts and seeds, same shape); images/s = c / wall time. Off = ``max_batch_size=1``
(one pipeline call per request, serialised on the worker); on = ``max_batch_size=16`` with a
``--window-ms`` gathering window. Median over ``--rounds``; the two modes alternate per round.

    .venv/bin/python benchmarks/local_batching.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--family", default="sd15", choices=["sd15", "sdxl", "sd3"])
    parser.add_argument("--window-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from sdk import Deadline, GenerateRequest
    from sdk._tiny import build_tiny
    from sdk.backends._pipeline_cache import PipelineCache
    from sdk.backends.diffusers import DiffusersBackend, DiffusersSettings

    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_tiny(args.family, Path(tmp) / args.family))
        backends = {
            "off": DiffusersBackend(DiffusersSettings(name="off", model=model, device="cpu"),
                                    pipeline_cache=PipelineCache()),
            "on": DiffusersBackend(DiffusersSettings(name="on", model=model, device="cpu", max_batch_size=16,
                                                     batch_window_ms=args.window_ms),
                                   pipeline_cache=PipelineCache()),
        }
        for b in backends.values():  # load and warm both
            b.generate(GenerateRequest(prompt="warm", seed=0), Deadline(None))

        def round_trip(backend: DiffusersBackend, c: int) -> float:
            threads = [
                threading.Thread(target=backend.generate,
                                 args=(GenerateRequest(prompt=f"prompt {i}", seed=i), Deadline(None)))
                for i in range(c)
            ]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return c / (time.perf_counter() - t0)

        print(f"family {args.family}, 64x64, default steps, window {args.window_ms} ms, {args.rounds} rounds")
        print("| concurrent | off img/s | on img/s | on/off |")
        print("|---|---|---|---|")
        for c in levels:
            rates: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(args.rounds):
                for mode in ("off", "on"):
                    rates[mode].append(round_trip(backends[mode], c))
            off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
            print(f"| {c} | {off:.1f} | {on:.1f} | {on / off:.2f}x |")
        for b in backends.values():
            b.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
