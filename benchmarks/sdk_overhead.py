"""SDK overhead on a local pipeline: ``Client.generate`` vs a direct ``pipe(...)`` call.

Same pipeline object, same seed, same knobs; the paths are interleaved so drift (thermal,
other processes) hits both, and medians over ``--runs`` are reported with their difference
and ratio. The SDK path includes validation, routing, the worker hand-off, the deadline
callback at every step and the telemetry enqueue.

    .venv/bin/python benchmarks/sdk_overhead.py --runs 40                # tiny sd15, CPU
    .venv/bin/python benchmarks/sdk_overhead.py --mock --runs 20         # the SDK alone, microseconds
    .venv/bin/python benchmarks/sdk_overhead.py --observability --runs 20  # metrics and tracing per call
    .venv/bin/python benchmarks/sdk_overhead.py --full-size              # SDXL + SD3.5-Medium, CUDA
    .venv/bin/python benchmarks/sdk_overhead.py --full-size --device cpu --scale 0.05 --size 64 \\
        --steps 2 --runs 1                                               # same code path, narrow

``--full-size`` builds RANDOM-weight pipelines of the real SDXL and SD3.5-Medium
architectures from the explicit configs below (published ``config.json`` values, no
download; SD3.5 without T5, dropped the documented way), saves them, loads them through the
SDK (``DiffusionPipeline.from_pretrained``) and reports GPU-seconds per image (CUDA events)
via the SDK and via raw diffusers at 1024x1024 in fp16 (SDXL) / bf16 (SD3.5). ``--scale``
narrows every width (channels, hidden sizes, heads) and keeps every depth, so a CPU run
exercises the same classes, block layout and code path in seconds.

``--mock`` measures what a pipeline's milliseconds hide: the plain (non-hedged) path of
``Client.generate`` and ``AsyncClient.generate`` on two instant ``MockBackend`` handlers
(validate, decide, the execution state machine and its driver, the telemetry enqueue to
SQLite), minus the bare handler call, as per-call microseconds over batches of ``--calls``.

``--observability`` runs that plain ``Client.generate`` path with the client's live metrics and
tracing switched between: none (what a client without prometheus_client and opentelemetry-api
builds), the Prometheus histograms, histograms plus OpenTelemetry with no tracer provider set (no
span is made), and histograms plus spans recorded by the OpenTelemetry SDK (a batch processor into
an exporter that drops them). Batches of the four are interleaved, shuffled each round; medians and ratios to "none".
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: published per-architecture knobs: SDXL base 30 steps / guidance 5; SD3.5 Medium 40 / 4.5
FULL_SIZE_KNOBS = {"sdxl": (30, 5.0), "sd35-medium": (40, 4.5)}
#: GPU dtype per architecture (SDXL's VAE upcasts itself to fp32 for decoding: force_upcast)
FULL_SIZE_DTYPE = {"sdxl": "float16", "sd35-medium": "bfloat16"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="default 40 (tiny) / 5 (full size)")
    parser.add_argument("--family", default="sd15", choices=["sd15", "sdxl", "sd3"])
    parser.add_argument("--steps", type=int, default=None,
                        help="default 2 (tiny) / the architecture's published default (full size)")
    parser.add_argument("--size", type=int, default=None, help="default 64 (tiny) / 1024 (full size)")
    parser.add_argument("--full-size", action="store_true",
                        help="random-weight SDXL and SD3.5-Medium architectures (CUDA unless --device cpu)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="for --full-size")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="--full-size width multiplier (1.0 = the real architectures)")
    parser.add_argument("--archs", default="sdxl,sd35-medium", help="--full-size architectures")
    parser.add_argument("--mock", action="store_true", help="the SDK alone on instant mock backends (us per call)")
    parser.add_argument("--calls", type=int, default=500, help="--mock calls per timed batch")
    parser.add_argument("--observability", action="store_true",
                        help="per-call cost of the live metrics and of tracing, on instant mock backends")
    args = parser.parse_args()
    if args.mock:
        return mock_only(args.runs or 20, args.calls)
    if args.observability:
        return observability(args.runs or 20, args.calls)

    import torch

    if args.full_size:
        if args.device == "cuda" and not torch.cuda.is_available():
            print("--full-size builds random-weight SDXL and SD3.5-Medium pipelines on CUDA, but torch "
                  "sees no CUDA device here. Run it on a GPU machine, or exercise the same code path "
                  "on CPU with narrow widths: --full-size --device cpu --scale 0.05 --size 64 "
                  "--steps 2 --runs 1", file=sys.stderr)
            return 2
        if not 0 < args.scale <= 1:
            print(f"`--scale` must be in (0, 1] but is {args.scale}", file=sys.stderr)
            return 2
        archs = [a for a in args.archs.split(",") if a]
        unknown = sorted(set(archs) - set(FULL_SIZE_KNOBS))
        if unknown:
            print(f"`--archs` must name {', '.join(FULL_SIZE_KNOBS)} but has {', '.join(unknown)}",
                  file=sys.stderr)
            return 2
        return full_size(archs, args.device, args.scale, args.size or 1024, args.steps, args.runs or 5)
    return tiny(args.family, args.size or 64, args.steps or 2, args.runs or 40)


# -- the SDK alone (mock backends) ---------------------------------------------------------------

def mock_only(runs: int, calls: int) -> int:
    import asyncio

    from PIL import Image

    from pixelroute import SLA, AsyncClient, BackendOutput, Client, MockBackend, load_settings

    output = BackendOutput(images=[Image.new("RGB", (8, 8))])

    def handler(request: Any, deadline: Any) -> BackendOutput:
        return output

    settings = load_settings({"router": {"exploration": 0.0}})
    sla = SLA(deadline_s=30)
    timings: dict[str, list[float]] = {"bare handler": [], "Client.generate": [], "AsyncClient.generate": []}
    with tempfile.TemporaryDirectory() as tmp:
        backends = [MockBackend("a", handler), MockBackend("b", handler)]
        client = Client(settings, backends=backends, store=f"sqlite:///{tmp}/sync.db")
        aclient = AsyncClient(settings, backends=backends, store=f"sqlite:///{tmp}/async.db")

        def batch(fn: Callable[[], Any]) -> float:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            return (time.perf_counter() - t0) / calls

        async def abatch() -> float:
            t0 = time.perf_counter()
            for _ in range(calls):
                await aclient.generate("a red bicycle", sla=sla)
            return (time.perf_counter() - t0) / calls

        loop = asyncio.new_event_loop()
        batch(lambda: client.generate("a red bicycle", sla=sla))  # warm: router, caches, store
        loop.run_until_complete(abatch())
        for _ in range(runs):  # interleaved, so drift hits every path alike
            timings["bare handler"].append(batch(lambda: handler(None, None)))
            timings["Client.generate"].append(batch(lambda: client.generate("a red bicycle", sla=sla)))
            timings["AsyncClient.generate"].append(loop.run_until_complete(abatch()))
        loop.run_until_complete(aclient.aclose())
        loop.close()
        client.close()
    bare = statistics.median(timings["bare handler"])
    print(f"plain path on instant mock backends, {runs} interleaved batches of {calls} calls, telemetry to SQLite")
    for name, values in timings.items():
        median = statistics.median(values)
        extra = "" if name == "bare handler" else f"  (SDK {1e6 * (median - bare):.1f} us per call)"
        print(f"{name}: median {1e6 * median:.1f} us, min {1e6 * min(values):.1f} us{extra}")
    return 0


def observability(runs: int, calls: int) -> int:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from PIL import Image

    from pixelroute import SLA, BackendOutput, Client, MockBackend, load_settings
    from pixelroute._observe import Observer
    from pixelroute._tracing import Tracing
    from pixelroute.telemetry.metrics import LiveMetrics

    class Dropped(SpanExporter):
        """Where the recorded spans go: nowhere, so that only what the request path pays is timed."""

        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    output = BackendOutput(images=[Image.new("RGB", (8, 8))])
    settings = load_settings({"router": {"exploration": 0.0}})
    sla = SLA(deadline_s=30)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    with tempfile.TemporaryDirectory() as tmp:
        backends = [MockBackend("a", lambda r, d: output), MockBackend("b", lambda r, d: output)]
        client = Client(settings, backends=backends, store=f"sqlite:///{tmp}/sync.db")
        metrics = LiveMetrics(client.stats, client.recorder.stats)
        observers: dict[str, Observer | None] = {
            "none": None,
            "metrics": Observer(metrics, None),
            "metrics + tracing, no provider": Observer(metrics, Tracing()),  # nothing set: no span is made
            "metrics + recorded spans": Observer(metrics, Tracing(provider)),
        }
        timings: dict[str, list[float]] = {name: [] for name in observers}

        def batch(observer: Observer | None) -> float:
            client._observer = client._engine.observer = observer
            t0 = time.perf_counter()
            for _ in range(calls):
                client.generate("a red bicycle", sla=sla)
            return (time.perf_counter() - t0) / calls

        for observer in observers.values():  # warm: router, caches, store, each observer's first labels
            batch(observer)
        order = list(observers)
        shuffle = random.Random(0).shuffle
        for _ in range(runs):  # interleaved, in a new order each round: drift and GC debt hit all alike
            shuffle(order)
            for name in order:
                timings[name].append(batch(observers[name]))
        client.close()
    provider.shutdown()
    base = statistics.median(timings["none"])
    print(f"Client.generate on instant mock backends, {runs} interleaved batches of {calls} calls, telemetry to SQLite")
    print(f"{'observability':<32}{'median us':>10}{'min us':>9}{'extra us':>10}{'ratio':>8}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:<32}{1e6 * median:>10.1f}{1e6 * min(values):>9.1f}{1e6 * (median - base):>+10.1f}"
              f"{median / base:>8.3f}")
    return 0


# -- the tiny pipelines (CPU) -----------------------------------------------------------------

def tiny(family: str, size: int, steps: int, runs: int) -> int:
    import torch

    torch.set_num_threads(1)
    from pixelroute import Client, Deadline, GenerateRequest
    from pixelroute._tiny import build_tiny
    from pixelroute.backends._pipeline_cache import PipelineCache
    from pixelroute.backends.diffusers import DiffusersBackend, DiffusersSettings

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny(family, Path(tmp) / family)
        backend = DiffusersBackend(DiffusersSettings(name="tiny", model=str(model), device="cpu"),
                                   pipeline_cache=PipelineCache())
        client = Client(backends=[backend], store=f"sqlite:///{tmp}/telemetry.db")
        knobs: dict[str, Any] = {"width": size, "height": size, "steps": steps, "seed": 7}
        first = client.generate("a red bicycle", backend="tiny", **knobs)  # load + warm
        slot = backend._cache.acquire(backend._load_spec(), id(backend))
        pipe = slot.pipe
        guidance = first.trace["attempts"][-1]["params"]["guidance"] if first.trace.get("attempts") else 7.5

        def direct() -> None:
            generator = [torch.Generator("cpu").manual_seed(7)]
            with torch.inference_mode():
                pipe("a red bicycle", num_inference_steps=steps, guidance_scale=guidance,
                     width=size, height=size, generator=generator)

        def via_sdk() -> None:
            client.generate("a red bicycle", backend="tiny", **knobs)

        request = GenerateRequest(prompt="a red bicycle", **knobs)

        def via_backend() -> None:
            backend.generate(request, Deadline(None))

        direct()
        sdk_s: list[float] = []
        direct_s: list[float] = []
        backend_s: list[float] = []
        for _ in range(runs):
            for fn, out in ((direct, direct_s), (via_sdk, sdk_s), (via_backend, backend_s)):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        backend._cache.release(slot)
        client.close()

    d, s, b = statistics.median(direct_s), statistics.median(sdk_s), statistics.median(backend_s)
    print(f"family {family}, {size}x{size}, {steps} steps, {runs} interleaved runs")
    print(f"direct pipe(): median {d * 1000:.2f} ms")
    print(f"Client.generate: median {s * 1000:.2f} ms")
    print(f"DiffusersBackend.generate: median {b * 1000:.2f} ms "
          f"({(b - d) * 1000:+.2f} ms, ratio {b / d:.3f})")
    print(f"overhead: {(s - d) * 1000:+.2f} ms, ratio {s / d:.3f}")
    return 0


# -- the full-size architectures --------------------------------------------------------------

def _width(channels: int, scale: float, multiple: int) -> int:
    """``channels * scale`` rounded to ``multiple`` (group norm uses 32 groups), at least one multiple.

    At ``scale=1`` every published width is already a multiple, so the real value comes back.
    """
    return max(multiple, round(channels * scale / multiple) * multiple)


def clip_text_config(kind: str, scale: float) -> dict[str, Any]:
    """CLIP ViT-L/14 (``"L"``) or OpenCLIP ViT-bigG/14 (``"bigG"``) text tower, as published."""
    hidden, layers, act = {"L": (768, 12, "quick_gelu"), "bigG": (1280, 32, "gelu")}[kind]
    width = _width(hidden, scale, 32)
    head_dim = _width(64, scale, 8)
    return {
        "vocab_size": 49408,
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "projection_dim": width,
        "num_hidden_layers": layers,
        "num_attention_heads": width // head_dim,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "bos_token_id": 0,
        "eos_token_id": 2,  # the legacy value real SD checkpoints ship: pooling takes argmax(ids)
        "pad_token_id": 1,
    }


def sdxl_unet_config(scale: float, text_l: int, text_g: int) -> dict[str, Any]:
    """stabilityai/stable-diffusion-xl-base-1.0 ``unet/config.json`` (2.57 B parameters at scale 1)."""
    channels = [_width(c, scale, 32) for c in (320, 640, 1280)]
    head_dim = _width(64, scale, 8)
    time_dim = _width(256, scale, 8)
    return {
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": channels,
        "layers_per_block": 2,
        # diffusers' SDXL config calls the number of heads per block `attention_head_dim` (5, 10, 20)
        "attention_head_dim": [c // head_dim for c in channels],
        "transformer_layers_per_block": [1, 2, 10],
        "cross_attention_dim": text_l + text_g,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": time_dim,
        # six size/crop numbers embedded at time_dim each, plus bigG's pooled projection
        "projection_class_embeddings_input_dim": 6 * time_dim + text_g,
        "norm_num_groups": 32,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }


def sd35_medium_transformer_config(scale: float, text_l: int, text_g: int) -> dict[str, Any]:
    """stabilityai/stable-diffusion-3.5-medium ``transformer/config.json`` (MMDiT-X, 24 blocks).

    2.24 B parameters plus a 0.23 B position-embedding buffer (384 x 384 x 1536) at scale 1:
    4.9 GB in bf16, as published.
    """
    head_dim = _width(64, scale, 8)
    heads = max(1, round(1536 * scale / head_dim))
    return {
        "sample_size": 128,
        "patch_size": 2,
        "in_channels": 16,
        "out_channels": 16,
        "num_layers": 24,
        "attention_head_dim": head_dim,
        "num_attention_heads": heads,
        "caption_projection_dim": heads * head_dim,
        # the T5-XXL width: without T5 the pipeline zero-pads the CLIP embeddings up to it
        "joint_attention_dim": max(_width(4096, scale, 8), text_l + text_g),
        "pooled_projection_dim": text_l + text_g,
        "pos_embed_max_size": 384,
        "dual_attention_layers": list(range(13)),
        "qk_norm": "rms_norm",
    }


def vae_config(scale: float, latent_channels: int, **extra: Any) -> dict[str, Any]:
    """The SDXL / SD3 ``AutoencoderKL`` layout (4 levels, 128-512 channels, 8x downsampling)."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [_width(c, scale, 32) for c in (128, 256, 512, 512)],
        "layers_per_block": 2,
        "latent_channels": latent_channels,
        "norm_num_groups": 32,
        "sample_size": 1024,
        "force_upcast": True,
        **extra,
    }


def build_full_size(arch: str, scale: float, device: str, folder: Path) -> Any:
    """Random-weight pipeline of ``arch`` built on ``device`` from the configs above (seeded)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from pixelroute._tiny import offline_clip_tokenizer

    tokenizer = offline_clip_tokenizer(folder.parent / f"_tokenizer-{folder.name}")
    config_l = CLIPTextConfig(**clip_text_config("L", scale))
    config_g = CLIPTextConfig(**clip_text_config("bigG", scale))
    text_l, text_g = config_l.hidden_size, config_g.hidden_size
    torch.manual_seed(0)
    # allocate and initialise on the device: 2.6 B parameters initialise in seconds on a GPU
    with torch.device(device):
        if arch == "sdxl":
            return StableDiffusionXLPipeline(
                vae=AutoencoderKL(**vae_config(scale, 4, scaling_factor=0.13025)),
                text_encoder=CLIPTextModel(config_l),
                text_encoder_2=CLIPTextModelWithProjection(config_g),
                tokenizer=tokenizer,
                tokenizer_2=tokenizer,
                unet=UNet2DConditionModel(**sdxl_unet_config(scale, text_l, text_g)),
                scheduler=EulerDiscreteScheduler(
                    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                    timestep_spacing="leading",
                ),
                force_zeros_for_empty_prompt=True,
            )
        return StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(**sd35_medium_transformer_config(scale, text_l, text_g)),
            scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
            vae=AutoencoderKL(**vae_config(scale, 16, scaling_factor=1.5305, shift_factor=0.0609,
                                           use_quant_conv=False, use_post_quant_conv=False)),
            text_encoder=CLIPTextModelWithProjection(config_l),
            tokenizer=tokenizer,
            text_encoder_2=CLIPTextModelWithProjection(config_g),
            tokenizer_2=tokenizer,
            text_encoder_3=None,  # T5-XXL dropped, as SD3.5 users do to save memory
            tokenizer_3=None,
        )


def denoiser_parameters(pipe: Any) -> int:
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    return sum(p.numel() for p in denoiser.parameters())


def full_size(archs: list[str], device: str, scale: float, size: int, steps: int | None, runs: int) -> int:
    import gc

    import torch

    from pixelroute import Client
    from pixelroute._hf_quiet import quiet_hf
    from pixelroute.backends._diffusers_run import _GpuTimer
    from pixelroute.backends._pipeline_cache import PipelineCache
    from pixelroute.backends.diffusers import DiffusersBackend, DiffusersSettings

    cuda = device == "cuda"
    if not cuda:
        torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            arch_steps, guidance = FULL_SIZE_KNOBS[arch]
            steps_used = steps or arch_steps
            dtype = FULL_SIZE_DTYPE[arch] if cuda else "float32"
            folder = Path(tmp) / arch
            started = time.perf_counter()
            with quiet_hf():
                built = build_full_size(arch, scale, device, folder)
                params = denoiser_parameters(built)
                if dtype != "float32":
                    built.to(getattr(torch, dtype))
                built.save_pretrained(str(folder), safe_serialization=True)
            del built
            gc.collect()
            build_s = time.perf_counter() - started
            # the SDK loads it the ordinary way: DiffusionPipeline.from_pretrained(folder)
            backend = DiffusersBackend(
                DiffusersSettings(name=arch, model=str(folder), device=device, dtype=dtype),  # type: ignore[arg-type]
                pipeline_cache=PipelineCache(),
            )
            client = Client(backends=[backend], store=f"sqlite:///{tmp}/telemetry-{arch}.db")
            knobs: dict[str, Any] = {"width": size, "height": size, "steps": steps_used,
                                     "guidance": guidance, "seed": 7}
            client.generate("a red bicycle against a glass wall", backend=arch, **knobs)  # load + warm
            slot = backend._cache.acquire(backend._load_spec(), id(backend))
            pipe = slot.pipe

            def raw(pipe: Any = pipe, steps_used: int = steps_used, guidance: float = guidance) -> float:
                timer = _GpuTimer(cuda)
                with torch.inference_mode():
                    pipe("a red bicycle against a glass wall", num_inference_steps=steps_used,
                         guidance_scale=guidance, width=size, height=size,
                         generator=[torch.Generator("cpu").manual_seed(7)])
                return timer.stop()

            def via_sdk(client: Any = client, arch: str = arch, knobs: dict[str, Any] = knobs) -> float:
                result = client.generate("a red bicycle against a glass wall", backend=arch, **knobs)
                return float(result.gpu_s)

            raw()
            timings = _interleave({"raw": raw, "sdk": via_sdk}, runs)
            backend._cache.release(slot)
            client.close()
            del pipe, slot
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            rows.append((arch, params, dtype, steps_used, timings, build_s))

    where = torch.cuda.get_device_name() if cuda else "CPU (1 thread)"
    print(f"full-size architectures, scale {scale}, {size}x{size}, {where}, {runs} interleaved runs, "
          "RANDOM weights")
    print("| architecture | denoiser params | dtype | steps | raw GPU-s/img | SDK GPU-s/img | SDK/raw "
          "| raw wall s | SDK wall s | build+save s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arch, params, dtype, steps_used, t, build_s in rows:
        raw_gpu, sdk_gpu = statistics.median(t["raw"][0]), statistics.median(t["sdk"][0])
        raw_wall, sdk_wall = statistics.median(t["raw"][1]), statistics.median(t["sdk"][1])
        print(f"| {arch} | {params / 1e9:.3f} B | {dtype} | {steps_used} | {raw_gpu:.3f} | {sdk_gpu:.3f} | "
              f"{sdk_gpu / raw_gpu:.3f} | {raw_wall:.3f} | {sdk_wall:.3f} | {build_s:.1f} |")
    return 0


Timings = dict[str, tuple[list[float], list[float]]]


def _interleave(paths: dict[str, Callable[[], float]], runs: int) -> Timings:
    """Run each path ``runs`` times, alternating; per path (GPU seconds, wall seconds)."""
    out: Timings = {name: ([], []) for name in paths}
    for _ in range(runs):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            gpu_s = fn()
            out[name][1].append(time.perf_counter() - t0)
            out[name][0].append(gpu_s)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
