"""Edit overhead on a local pipeline: ``Client.edit`` vs a direct diffusers image-to-image call.

The raw path is what an application would write without the SDK: the loaded pipeline's
``AutoPipelineForImage2Image.from_pipe`` twin (``AutoPipelineForInpainting`` with ``--mask``),
called with the same image, prompt, strength, steps, guidance and seed. The SDK path is
``Client.edit(..., backend=...)`` on a ``DiffusersBackend`` over the *same* loaded pipeline: it adds
input validation (decode checks, the pixel digest), routing, the worker hand-off, the deadline
callback at every step and the telemetry enqueue. The paths are interleaved so drift hits both;
medians over ``--runs`` are reported with their difference and ratio.

    .venv/bin/python benchmarks/edit_overhead.py --runs 30                 # tiny sd15, 64x64, CPU
    .venv/bin/python benchmarks/edit_overhead.py --runs 30 --mask          # inpainting
    .venv/bin/python benchmarks/edit_overhead.py --runs 30 --input png     # the input as PNG bytes
    .venv/bin/python benchmarks/edit_overhead.py --validation              # input checks alone, by size

``--input pil`` (the default) hands both paths the same PIL image; ``--input png`` gives the SDK
the PNG file's bytes (what a web handler receives), so its time includes decoding and verifying
them, and the raw path the already decoded image (what it would decode once itself). The tiny
pipelines have RANDOM weights (``pixelroute._tiny``): their images are noise, every class and code
path is the real one.

``--validation`` times what an edit adds before any routing, as a function of the input's size:
building the ``EditRequest`` from PNG bytes (decode-and-verify, pixel limit, RGB conversion, the
SHA-256 of the pixels) and from a PIL image already in memory (the digest alone), with a mask.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--family", default="sd15", choices=["sd15", "sdxl", "sd3"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--mask", action="store_true", help="inpainting (a centred square mask) instead of img2img")
    parser.add_argument("--input", default="pil", choices=["pil", "png"], help="what the SDK path is given")
    parser.add_argument("--validation", action="store_true", help="time the input checks alone, by input size")
    args = parser.parse_args()
    if args.validation:
        return validation(args.runs)
    return run(args.family, args.size, args.steps, args.strength, args.mask, args.input, args.runs)


def run(family: str, size: int, steps: int, strength: float, masked: bool, given: str, runs: int) -> int:
    import torch

    torch.set_num_threads(1)
    from PIL import Image

    from pixelroute import Client
    from pixelroute._tiny import build_tiny
    from pixelroute.backends._pipeline_cache import PipelineCache
    from pixelroute.backends.diffusers import DiffusersBackend, DiffusersSettings

    photo = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    mask = None
    if masked:
        mask = Image.new("L", (size, size), 0)
        mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    sdk_input: Any = buf.getvalue() if given == "png" else photo

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny(family, Path(tmp) / family)
        backend = DiffusersBackend(DiffusersSettings(name="tiny", model=str(model), device="cpu"),
                                   pipeline_cache=PipelineCache())
        client = Client(backends=[backend], store=f"sqlite:///{tmp}/telemetry.db")
        knobs: dict[str, Any] = {"mask": mask, "strength": strength, "steps": steps, "seed": 7, "backend": "tiny"}
        first = client.edit(sdk_input, "a red bicycle", **knobs)  # load, build the edit pipeline, warm
        guidance = first.trace["attempts"][-1]["params"]["guidance"]
        slot = backend._cache.acquire(backend._load_spec(), id(backend))
        raw_pipe = _raw_pipeline(slot.pipe, masked)

        def direct() -> None:
            call: dict[str, Any] = {"image": photo, "strength": strength, "num_inference_steps": steps,
                                    "guidance_scale": guidance, "generator": [torch.Generator("cpu").manual_seed(7)]}
            if mask is not None:
                call.update(mask_image=mask, width=size, height=size)
            with torch.inference_mode():
                raw_pipe("a red bicycle", **call)

        def via_sdk() -> None:
            client.edit(sdk_input, "a red bicycle", **knobs)

        direct()
        direct_s: list[float] = []
        sdk_s: list[float] = []
        for _ in range(runs):
            for fn, out in ((direct, direct_s), (via_sdk, sdk_s)):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        backend._cache.release(slot)
        client.close()

    d, s = statistics.median(direct_s), statistics.median(sdk_s)
    kind = "inpainting" if masked else "image-to-image"
    print(f"family {family}, {kind}, {size}x{size}, {steps} steps x strength {strength}, input {given}, "
          f"{runs} interleaved runs")
    print(f"direct diffusers {kind}: median {d * 1000:.2f} ms (min {min(direct_s) * 1000:.2f})")
    print(f"Client.edit: median {s * 1000:.2f} ms (min {min(sdk_s) * 1000:.2f})")
    print(f"overhead: {(s - d) * 1000:+.2f} ms, ratio {s / d:.3f}")
    return 0


def validation(runs: int) -> int:
    from PIL import Image

    from pixelroute._edit import build_edit_request

    print(f"building an EditRequest (image + mask), median of {runs} runs")
    print("| input | from PNG bytes ms | from PIL ms |")
    print("|---|---|---|")
    for side in (64, 512, 1024, 2048):
        photo = Image.effect_noise((side, side), 64).convert("RGB")  # noise: PNG cannot shrink it
        mask = Image.new("L", (side, side), 0)
        mask.paste(255, (0, 0, side // 2, side))
        png, mask_png = io.BytesIO(), io.BytesIO()
        photo.save(png, format="PNG")
        mask.save(mask_png, format="PNG")
        times: dict[str, list[float]] = {"png": [], "pil": []}
        for _ in range(runs):
            for key, image, m in (("png", png.getvalue(), mask_png.getvalue()), ("pil", photo, mask)):
                t0 = time.perf_counter()
                build_edit_request(image, m, prompt="p")
                times[key].append(time.perf_counter() - t0)
        print(f"| {side}x{side} ({len(png.getvalue()) / 1e6:.2f} MB PNG) | "
              f"{statistics.median(times['png']) * 1000:.2f} | {statistics.median(times['pil']) * 1000:.2f} |")
    return 0


def _raw_pipeline(pipe: Any, masked: bool) -> Any:
    """The application's own twin of the loaded pipeline (its own object, the same modules)."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    raw = (AutoPipelineForInpainting if masked else AutoPipelineForImage2Image).from_pipe(pipe)
    raw.set_progress_bar_config(disable=True)
    return raw


if __name__ == "__main__":
    raise SystemExit(main())
