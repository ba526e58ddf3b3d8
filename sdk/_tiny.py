"""Tiny random-weight pipelines of the real diffusers classes, for offline tests and demos.

``build_tiny("sd15", out)`` writes a complete pipeline folder (``model_index.json`` plus one
folder per component, saved with ``save_pretrained``) that loads back through the ordinary
``DiffusionPipeline.from_pretrained(out)`` path. The weights are RANDOM (seeded, so two builds
are identical): the images are structured noise, but every class, config and code path is
the real one, which is what the SDK, the router and their tests need.

Families:

- ``sd15``: ``StableDiffusionPipeline`` (UNet2DConditionModel, AutoencoderKL, CLIPTextModel).
- ``sdxl``: ``StableDiffusionXLPipeline`` (two CLIP encoders, ``text_time`` conditioning);
  deliberately larger and slower than ``sd15`` (the embedded default's "quality" backend).
- ``sd3``: ``StableDiffusion3Pipeline`` (SD3Transformer2DModel, two CLIP encoders with
  projection, flow-matching Euler; no T5: saved as null and loaded with ``text_encoder_3=None``).

The folder is built in a temporary sibling and renamed into place, so a reader never sees a
half-written model and two concurrent builders cannot clash: the first rename wins, the
loser discards its copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

from ._errors import ValidationError

log = logging.getLogger("pixelroute.tiny")

Family = Literal["sd15", "sdxl", "sd3"]
FAMILIES: tuple[str, ...] = ("sd15", "sdxl", "sd3")

#: written next to model_index.json so tools (and people) can tell a tiny model from a real one
MARKER = "pixelroute_tiny.json"
#: bumped when a family's tiny architecture changes (2: sd3 has 16 latent channels, as SD3's VAE does,
#: which its inpainting pipeline needs); a folder an older builder made is rebuilt, not loaded
BUILDER_VERSION = 2
RANDOM_WEIGHTS_NOTE = "tiny pipeline with RANDOM weights: images are noise, for tests and demos only"

# Every byte-level symbol alone and with the end-of-word suffix, plus the two specials, no
# merges: a complete CLIP BPE vocabulary that needs no download.
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"

# Weight init draws from torch's process-global RNG: two threads building at once would
# interleave their draws and lose determinism, so builds in one process take turns.
_BUILD_LOCK = threading.Lock()


def build_tiny(family: str, out: str | os.PathLike[str], *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build the tiny ``family`` pipeline at ``out`` unless it is already there; return the path.

    ``overwrite=True`` replaces an existing folder (atomically: the old one is moved aside
    first). Deterministic: the same ``family`` and ``seed`` give identical weights.
    """
    if family not in FAMILIES:
        raise ValidationError(
            f"`family` must be one of {', '.join(FAMILIES)} but is {family!r}", field="family", value=family
        )
    target = Path(out).expanduser()
    if is_built(target) and not overwrite:
        if not _built_by_an_older_builder(target):
            return target
        overwrite = True
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    from ._hf_quiet import quiet_hf

    try:
        with _BUILD_LOCK, quiet_hf():  # no "Writing model shards" bars in the caller's output
            _build_into(family, tmp, seed)
        (tmp / MARKER).write_text(json.dumps({"family": family, "seed": seed, "builder": BUILDER_VERSION,
                                                 "note": RANDOM_WEIGHTS_NOTE}))
        _publish(tmp, target, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.warning("built %s at %s (%s)", family, target, RANDOM_WEIGHTS_NOTE)
    return target


def is_built(path: Path) -> bool:
    """True when ``path`` holds a complete pipeline folder (``model_index.json`` is written last)."""
    return (path / "model_index.json").is_file()


def _marker(path: Path) -> dict[str, Any] | None:
    """The marker :func:`build_tiny` writes beside the pipeline, ``None`` when it is missing or damaged."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _built_by_an_older_builder(path: Path) -> bool:
    """A folder :func:`build_tiny` made before its architecture last changed (never one it did not make)."""
    marker = _marker(path)
    return marker is not None and marker.get("builder", 1) != BUILDER_VERSION


def tiny_family(path: str | os.PathLike[str]) -> str | None:
    """The family of a tiny folder built by :func:`build_tiny`, ``None`` for any other folder."""
    family = (_marker(Path(path)) or {}).get("family")
    return family if family in FAMILIES else None


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    if overwrite and target.exists():
        aside = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(tmp, target)  # atomic; fails if another builder got there first
    except OSError:
        if not is_built(target):
            raise
        log.info("another process built %s first; keeping theirs", target)


def _build_into(family: str, folder: Path, seed: int) -> None:
    import torch

    builders = {"sd15": _sd15, "sdxl": _sdxl, "sd3": _sd3}
    tokenizer_dir = folder / "_tokenizer_src"
    _write_clip_tokenizer(tokenizer_dir)
    # fork_rng keeps the caller's global RNG untouched; the seed makes weights reproducible
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = builders[family](tokenizer_dir)
    shutil.rmtree(tokenizer_dir)
    # model_index.json is written by save_pretrained; is_built() checks it, so write it last
    pipe.save_pretrained(str(folder), safe_serialization=True)


def offline_clip_tokenizer(folder: str | os.PathLike[str]) -> Any:
    """A ``CLIPTokenizer`` over the byte-level vocabulary, written to ``folder`` (no download).

    For random-weight pipelines of real architectures (``benchmarks/sdk_overhead.py
    --full-size``): ids stay below 514, so any CLIP text encoder's embedding table covers them.
    """
    path = Path(folder)
    _write_clip_tokenizer(path)
    return _tokenizer(path)


def _write_clip_tokenizer(folder: Path) -> None:
    folder.mkdir(parents=True)
    symbols = _byte_symbols()
    vocab = {tok: i for i, tok in enumerate(symbols + [s + "</w>" for s in symbols] + [_BOS, _EOS])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,  # without it tokenizing fails: "OverflowError: int too big to convert"
        "bos_token": _BOS,
        "eos_token": _EOS,
        "unk_token": _EOS,
        "pad_token": _EOS,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2/CLIP convention).

    Printable Latin-1 bytes stand for themselves; the others are shifted past U+0100 in order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + shifted)
            shifted += 1
    return [symbols[b] for b in range(256)]


def _tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    # not CLIPTokenizer(vocab_file=...): transformers 5 silently ignores the files (a 2-token vocab, later IndexError)
    return CLIPTokenizer.from_pretrained(str(folder))


def _clip_config(hidden: int, layers: int, projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig

    kwargs: dict[str, Any] = {}
    if projection is not None:
        kwargs["projection_dim"] = projection
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=layers,
        pad_token_id=1,
        vocab_size=2 * 256 + 2,
        max_position_embeddings=77,
        **kwargs,
    )


def _vae(channels: tuple[int, ...], latent_channels: int = 4, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=list(channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
        latent_channels=latent_channels,
        norm_num_groups=min(channels[0], 32),
        sample_size=64,
        **extra,
    )


def _sd15(tokenizer_dir: Path) -> Any:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,  # steps_offset=1 avoids a FutureWarning
    )
    return StableDiffusionPipeline(
        vae=_vae((32, 64)),
        text_encoder=CLIPTextModel(_clip_config(32, 2)),
        tokenizer=_tokenizer(tokenizer_dir),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl(tokenizer_dir: Path) -> Any:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    time_dim, projection = 8, 32
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        transformer_layers_per_block=(1, 2),
        # six micro-conditioning numbers (sizes and crop) plus the pooled text embedding
        projection_class_embeddings_input_dim=6 * time_dim + projection,
        cross_attention_dim=64,  # the two encoders' hidden states, concatenated
        norm_num_groups=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=_vae((32, 64)),
        text_encoder=CLIPTextModel(_clip_config(32, 2)),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(32, 2, projection)),
        tokenizer=_tokenizer(tokenizer_dir),
        tokenizer_2=_tokenizer(tokenizer_dir),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )


def _sd3(tokenizer_dir: Path) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        # 16 latent channels, as SD3's VAE has: SD3's inpainting pipeline accepts no other count
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,  # the two CLIP encoders' hidden states side by side (no T5)
        pooled_projection_dim=64,  # the two 32-wide pooled projections, concatenated
        out_channels=16,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae((32, 64), latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                 scaling_factor=1.5035),
        text_encoder=CLIPTextModelWithProjection(_clip_config(32, 2, 32)),
        tokenizer=_tokenizer(tokenizer_dir),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(32, 2, 32)),
        tokenizer_2=_tokenizer(tokenizer_dir),
        text_encoder_3=None,
        tokenizer_3=None,
    )
