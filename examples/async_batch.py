"""Many prompts at once with AsyncClient: bounded concurrency, one SLA each, failures kept apart.

    python examples/async_batch.py

Runs offline on the embedded default (tiny random-weight pipelines; noise images).
"""

from __future__ import annotations

import asyncio

from pixelroute import SLA, AsyncClient, PixelrouteError, Result

PROMPTS = [
    "a lighthouse at dusk",
    "three red apples on a table",
    "a street sign that says OPEN",
    "a cat reflected in a mirror",
]


async def generate_all(prompts: list[str], concurrency: int = 2) -> list[Result | PixelrouteError]:
    gate = asyncio.Semaphore(concurrency)  # local GPUs serialise anyway; cap what we hold in memory

    async with AsyncClient() as client:

        async def one(prompt: str, seed: int) -> Result | PixelrouteError:
            async with gate:
                try:
                    return await client.generate(
                        prompt, sla=SLA(deadline_s=60), width=64, height=64, seed=seed
                    )
                except PixelrouteError as exc:  # one failed prompt must not sink the batch
                    return exc

        return await asyncio.gather(*(one(p, i) for i, p in enumerate(prompts)))


def main() -> None:
    results = asyncio.run(generate_all(PROMPTS))
    for prompt, r in zip(PROMPTS, results, strict=True):
        if isinstance(r, Result):
            print(f"{r.backend:<14} {r.latency_s:6.2f} s  {r.request_id}  {prompt}")
        else:
            print(f"{'FAILED':<14} {type(r).__name__}: {r}  {prompt}")
    ok = sum(isinstance(r, Result) for r in results)
    print(f"{ok}/{len(results)} generated")


if __name__ == "__main__":
    main()
