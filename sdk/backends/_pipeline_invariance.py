"""Make a pipeline's results independent of the batch size, at (almost) no cost.

Why: micro-batched images must be pixel-identical to the same requests run one by one. The
per-sample layers (group/layer norm, activations, attention: each (sample, head) is its own
problem) already are. What is not are the layers whose kernel choice depends on the batch:

- A linear layer is one GEMM over ``batch x tokens`` rows. MKL picks its kernel by the whole
  shape: measured on this CPU (MKL 2024.2, AVX-512), 1-3 rows (the timestep and pooled-text
  embeddings of a lone request) sum in a different order than 4+ rows, and with 4 input
  features 1,024 vs 16,384 rows differ (~2e-6, enough to flip a pixel's rounding).
- A 1x1 convolution is the same GEMM in oneDNN: batches of 1-12 differed from 16+.
- Memory layout: an attention block's output is a channels-last view; group norm and oneDNN
  pick their kernel by layout, and a batch of one of that view has an ambiguous layout.
- A kxk convolution: oneDNN picks another algorithm for a batch of one than for two or more
  on some shapes (first layers, small feature maps; ~7e-7 apart); batches 2..32 agreed on
  every shape of the tiny and real architectures measured.

The fix computes each sample's problem with the same shape whatever the batch:

- Linear and 1x1 convolution run as a batched matrix product (``bmm``) with one matrix per
  sample: the per-sample GEMM has the same shape alone and in a batch, so the same kernel
  runs. Measured: as fast as the fused GEMM (``T1024 320->320``: 37.5 vs 38.0 ms for 16).
- A kxk convolution on a batch of one is *probed* the first time a shape is seen: it runs
  alone and as a pair of copies; if the two agree (most heavy layers: full-resolution VAE
  convolutions) the layer runs alone from then on, else it always runs as a pair and keeps
  one copy. Pairing only where needed is what keeps a lone request as fast as before: the
  previous blanket pairing doubled every VAE convolution of a lone image (~20% of a call).

Switched on only for backends that micro-batch (``max_batch_size > 1``). Measured on CPU
float32 with one and two torch threads (tiny sd15/sdxl/sd3: batched floats equal single-call
floats exactly); on CUDA, cuBLAS/cuDNN choose kernels by their own heuristics and this was not
verified here (no GPU): the tests that guard exactness run on CPU.
"""

from __future__ import annotations

from typing import Any

#: marker set on a wrapped module so wrapping twice is a no-op
_MARKER = "_pixelroute_invariant"


def make_batch_invariant(pipe: Any) -> int:
    """Wrap every linear, 2-D convolution and group norm of ``pipe``; returns how many.

    Idempotent. Only the modules of this pipeline change; the classes are left alone.
    """
    import torch

    wrapped = 0
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            if getattr(module, _MARKER, False):
                continue
            if isinstance(module, torch.nn.Linear):
                module.forward = _per_sample_linear(module)  # type: ignore[method-assign]
            elif isinstance(module, torch.nn.GroupNorm):
                module.forward = _contiguous_group_norm(module)  # type: ignore[method-assign]
            elif isinstance(module, torch.nn.Conv2d):
                if _is_pointwise(module):
                    module.forward = _per_sample_pointwise_conv(module)  # type: ignore[method-assign]
                else:
                    module.forward = _probed_conv(module)  # type: ignore[method-assign]
            else:
                continue
            setattr(module, _MARKER, True)
            wrapped += 1
    return wrapped


def _is_pointwise(conv: Any) -> bool:
    """A 1x1 convolution that is exactly a per-pixel matrix product."""
    return (
        tuple(conv.kernel_size) == (1, 1)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.padding in ((0, 0), 0, "valid")
        and conv.groups == 1
    )


def _contiguous_group_norm(module: Any) -> Any:
    """Group norm on a contiguous (NCHW) input whatever layout arrives.

    An attention block hands back a channels-last view (``transpose(...).reshape(...)``).
    In a batch that view is channels-last and torch runs the channels-last group-norm
    kernel, which sums in another order; for a batch of one the same view has an odd
    batch stride, counts as neither layout and gets the NCHW kernel. Measured: this alone
    moved a lone VAE decode ~2e-6 off the batched one. Making the input contiguous sends
    both through the NCHW kernel (a copy only where the layout was channels-last).
    """
    import torch

    original = module.forward

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out: torch.Tensor = original(x.contiguous(), *args, **kwargs)
        return out

    return forward


def _per_sample_linear(module: Any) -> Any:
    import torch
    import torch.nn.functional as F

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs or x.dim() < 2:
            return F.linear(x, module.weight, module.bias)
        samples = x.shape[0]
        # (samples, rows per sample, features): one GEMM of the same shape per sample
        rows = x.reshape(samples, -1, x.shape[-1])
        weight = module.weight.t().unsqueeze(0).expand(samples, -1, -1)
        out = torch.bmm(rows, weight) if module.bias is None else torch.baddbmm(module.bias, rows, weight)
        return out.view(*x.shape[:-1], out.shape[-1])

    return forward


def _per_sample_pointwise_conv(module: Any) -> Any:
    import torch

    original = module.forward

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs or x.dim() != 4:
            result: torch.Tensor = original(x, *args, **kwargs)
            return result
        samples, channels, height, width = x.shape
        weight = module.weight.view(1, module.out_channels, channels).expand(samples, -1, -1)
        pixels = x.reshape(samples, channels, height * width)
        if module.bias is None:
            out = torch.bmm(weight, pixels)
        else:
            out = torch.baddbmm(module.bias.view(1, -1, 1), weight, pixels)
        return out.view(samples, module.out_channels, height, width)

    return forward


def _probed_conv(module: Any) -> Any:
    import torch

    original = module.forward
    #: per input shape: True = a batch of one gives what it gives inside a batch; False = pair it
    alone_agrees: dict[tuple[Any, ...], bool] = {}

    def paired(x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = original(torch.cat([x, x]))
        return out[:1]

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs or x.dim() != 4:
            result: torch.Tensor = original(x, *args, **kwargs)
            return result
        x = x.contiguous()  # one layout, one kernel family (see _contiguous_group_norm)
        if x.shape[0] != 1:
            batched: torch.Tensor = original(x)
            return batched
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        agrees = alone_agrees.get(key)
        if agrees is None:
            # kernel choice depends on shapes only, so one comparison settles this shape
            alone: torch.Tensor = original(x)
            pair = paired(x)
            agrees = alone_agrees[key] = torch.equal(alone, pair)
            return alone if agrees else pair
        if agrees:
            single: torch.Tensor = original(x)
            return single
        return paired(x)

    return forward
