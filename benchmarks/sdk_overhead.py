"""SDK overhead on a local pipeline: ``Client.generate`` vs a direct ``pipe(...)`` call.

Same tiny pipeline object, same seed, same knobs; the two paths are interleaved so drift
(thermal, other processes) hits both, and medians over ``--runs`` are reported with their
difference in milliseconds and their ratio. The SDK path includes validation, routing,
the worker hand-off, the deadline callback at every step and the telemetry enqueue.

    .venv/bin/python benchmarks/sdk_overhead.py --runs 40
    .venv/bin/python benchmarks/sdk_overhead.py --full-size   # random-weight SD3.5-Medium/SDXL on CUDA
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--family", default="sd15", choices=["sd15", "sdxl", "sd3"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--full-size", action="store_true",
                        help="full-size random-weight architectures on CUDA (needs a GPU)")
    args = parser.parse_args()

    import torch

    if args.full_size and not torch.cuda.is_available():
        print("--full-size builds random-weight SD3.5-Medium and SDXL architectures on CUDA; "
              "torch sees no CUDA device here, so it is refused.", file=sys.stderr)
        return 2
    if args.full_size:
        print("--full-size is not implemented yet: it needs the full architectures' configs "
              "without a download.", file=sys.stderr)
        return 2
    torch.set_num_threads(1)

    from sdk import Client
    from sdk._tiny import build_tiny
    from sdk.backends._pipeline_cache import PipelineCache
    from sdk.backends.diffusers import DiffusersBackend, DiffusersSettings

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny(args.family, Path(tmp) / args.family)
        backend = DiffusersBackend(DiffusersSettings(name="tiny", model=str(model), device="cpu"),
                                   pipeline_cache=PipelineCache())
        client = Client(backends=[backend], store=f"sqlite:///{tmp}/telemetry.db")
        knobs = dict(width=args.size, height=args.size, steps=args.steps, seed=7)
        first = client.generate("a red bicycle", backend="tiny", **knobs)  # load + warm
        slot = backend._cache.acquire(backend._load_spec(), id(backend))
        pipe = slot.pipe
        guidance = first.trace["attempts"][-1]["params"]["guidance"] if first.trace.get("attempts") else 7.5

        def direct() -> None:
            generator = [torch.Generator("cpu").manual_seed(7)]
            with torch.inference_mode():
                pipe("a red bicycle", num_inference_steps=args.steps, guidance_scale=guidance,
                     width=args.size, height=args.size, generator=generator)

        def via_sdk() -> None:
            client.generate("a red bicycle", backend="tiny", **knobs)

        from sdk import Deadline, GenerateRequest

        request = GenerateRequest(prompt="a red bicycle", **knobs)

        def via_backend() -> None:
            backend.generate(request, Deadline(None))

        direct()
        sdk_s, direct_s, backend_s = [], [], []
        for _ in range(args.runs):
            for fn, out in ((direct, direct_s), (via_sdk, sdk_s), (via_backend, backend_s)):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        backend._cache.release(slot)
        client.close()

    d, s, b = statistics.median(direct_s), statistics.median(sdk_s), statistics.median(backend_s)
    print(f"family {args.family}, {args.size}x{args.size}, {args.steps} steps, {args.runs} interleaved runs")
    print(f"direct pipe(): median {d * 1000:.2f} ms")
    print(f"Client.generate: median {s * 1000:.2f} ms")
    print(f"DiffusersBackend.generate: median {b * 1000:.2f} ms "
          f"({(b - d) * 1000:+.2f} ms, ratio {b / d:.3f})")
    print(f"overhead: {(s - d) * 1000:+.2f} ms, ratio {s / d:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
