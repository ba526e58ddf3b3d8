"""Micro-batching throughput: images/s for 1..16 concurrent requests, batching off vs on.

Each round starts ``c`` threads at once, each asking the same tiny pipeline for one image
(different prompts and seeds, same shape); images/s = c / wall time. Off = ``max_batch_size=1``
(one pipeline call per request, serialised on the worker); on = ``max_batch_size=16`` with a
``--window-ms`` gathering window (and the batch-invariance wrappers, so its images equal the
unbatched ones). Median over ``--rounds``; the two modes alternate per round. Every request
carries ``--deadline`` seconds; requests that miss it are counted per mode and deliver nothing.

    .venv/bin/python benchmarks/local_batching.py --rounds 5 --size 32
    .venv/bin/python benchmarks/local_batching.py --rounds 5 --size 64
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--family", default="sd15", choices=["sd15", "sdxl", "sd3"])
    parser.add_argument("--window-ms", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=None, help="default: the tiny family's default")
    parser.add_argument("--guidance", type=float, default=None, help="default: the tiny family's default")
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--raw", action="store_true",
                        help="also time the pipeline alone: c single calls vs one batched call")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from pixelroute import Deadline, GenerateRequest
    from pixelroute._errors import DeadlineExceeded
    from pixelroute._tiny import build_tiny
    from pixelroute.backends._pipeline_cache import PipelineCache
    from pixelroute.backends.diffusers import DiffusersBackend, DiffusersSettings

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
        knobs: dict[str, Any] = {"width": args.size, "height": args.size, "steps": args.steps,
                                 "guidance": args.guidance}

        def request(i: int) -> GenerateRequest:
            return GenerateRequest(prompt=f"prompt {i}", seed=i, **knobs)

        for b in backends.values():  # load and warm both (and the batched shapes of the on mode)
            b.generate(request(0), Deadline(None))
        missed = {"off": 0, "on": 0}

        def call(mode: str, i: int) -> None:
            try:
                backends[mode].generate(request(i), Deadline(args.deadline))
            except DeadlineExceeded:
                missed[mode] += 1

        def round_trip(mode: str, c: int) -> float:
            """Images delivered per second (a request that missed its deadline delivered none)."""
            threads = [threading.Thread(target=call, args=(mode, i)) for i in range(c)]
            missed_before = missed[mode]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return (c - (missed[mode] - missed_before)) / (time.perf_counter() - t0)

        steps = args.steps or backends["on"].capabilities.default_steps
        caps = backends["on"].capabilities
        guidance = args.guidance if args.guidance is not None else caps.default_guidance
        print(f"family {args.family}, {args.size}x{args.size}, {steps} steps, guidance {guidance}, "
              f"window {args.window_ms} ms, deadline {args.deadline} s, {args.rounds} rounds")
        print("| concurrent | off img/s | on img/s | on/off | deadline misses off / on |")
        print("|---|---|---|---|---|")
        for c in levels:
            rates: dict[str, list[float]] = {"off": [], "on": []}
            missed.update(off=0, on=0)
            for _ in range(args.rounds):
                for mode in ("off", "on"):
                    rates[mode].append(round_trip(mode, c))
            off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
            print(f"| {c} | {off:.2f} | {on:.2f} | {on / off:.2f}x | {missed['off']} / {missed['on']} |")
        if args.raw:
            raw_pipeline(backends, levels, args.rounds, args.size, steps or 1, guidance or 0.0)
        for b in backends.values():
            b.close()
    return 0


def raw_pipeline(backends: dict[str, Any], levels: list[int], rounds: int, size: int, steps: int,
                 guidance: float) -> None:
    """The ceiling batching can reach: the pipeline alone, no worker, no window, no SDK.

    ``plain`` is the off backend's pipeline, ``invariant`` the on backend's (wrapped) one;
    "identical" compares every batched image with the same seed run alone, as floats.
    """
    import numpy as np
    import torch

    pipes = {}
    for mode, backend in backends.items():
        slot = backend._cache.acquire(backend._load_spec(), id(backend))
        backend._cache.release(slot)
        pipes[mode] = slot.pipe

    def call(pipe: Any, seeds: list[int]) -> tuple[float, Any]:
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = pipe([f"prompt {s}" for s in seeds], num_inference_steps=steps, guidance_scale=guidance,
                       width=size, height=size, generator=generators, output_type="np")
        return time.perf_counter() - t0, out.images

    print("\npipeline alone (ms per image; ratios vs c single calls of the plain pipeline):")
    print("| c | plain single | invariant single | invariant batched | batched/plain | single cost "
          "| identical |")
    print("|---|---|---|---|---|---|---|")
    for c in [c for c in levels if c > 1]:
        seeds = list(range(c))
        call(pipes["on"], seeds)  # the first call of a batch shape pays oneDNN set-up
        times: dict[str, list[float]] = {"plain": [], "single": [], "batched": []}
        identical = True
        for _ in range(rounds):
            times["plain"].append(sum(call(pipes["off"], [s])[0] for s in seeds))
            singles = [call(pipes["on"], [s]) for s in seeds]
            times["single"].append(sum(t for t, _ in singles))
            batched_s, batched = call(pipes["on"], seeds)
            times["batched"].append(batched_s)
            identical &= all(np.array_equal(img[0], batched[i]) for i, (_, img) in enumerate(singles))
        plain, single, batch = (statistics.median(times[k]) * 1000 / c
                                for k in ("plain", "single", "batched"))
        print(f"| {c} | {plain:.1f} | {single:.1f} | {batch:.1f} | {plain / batch:.2f}x | "
              f"{single / plain:.2f}x | {'yes' if identical else 'NO'} |")


if __name__ == "__main__":
    raise SystemExit(main())
