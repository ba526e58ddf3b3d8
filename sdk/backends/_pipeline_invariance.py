"""Make a pipeline's small matrix products independent of the batch size.

Why: micro-batched images must be pixel-identical to the same requests run one by one. Almost
every layer already is (convolutions and attention work per sample; token-wise linears have
hundreds of rows either way), but a linear layer fed one row per sample (the timestep and
pooled-text embeddings) has 2 rows for one request and 8 for four, and BLAS picks a different
kernel for very few rows (a matrix-vector path) that sums in a different order. Measured on
this machine's MKL: rows 1-3 differ from the same rows inside a 4+ row product by ~2e-6,
enough to flip a pixel's rounding. Computing such products one row at a time makes the
result the same whatever the batch; it costs nothing measurable (a handful of tiny layers).

Convolutions have the same problem at the other end: oneDNN picks a different algorithm for a
batch of one than for two or more (measured: ~7e-7 apart), while batches of 2, 4 and 8 agree.
A single-sample convolution therefore runs on the sample twice and keeps one copy. That
doubles the convolution work only for an unbatched call without classifier-free guidance
(guidance 0, e.g. turbo models); with guidance the batch is already two. Invariance is
switched on only for backends that micro-batch (``max_batch_size > 1``).
"""

from __future__ import annotations

from typing import Any

#: inputs with fewer rows than this are multiplied one row at a time
SMALL_ROWS = 64


def make_batch_invariant(pipe: Any) -> int:
    """Wrap every linear and 2-D convolution layer of ``pipe``; returns how many were wrapped.

    Idempotent. Only instances of this pipeline change; the classes are left alone.
    """
    import torch

    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_slicing"):
        # the decoder's attention sums differently across batch sizes; one image at a time agrees
        vae.enable_slicing()
    wrapped = 0
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            if getattr(module, "_pixelroute_invariant", False):
                continue
            if isinstance(module, torch.nn.Linear):
                module.forward = _rowwise_forward(module)  # type: ignore[method-assign]
            elif isinstance(module, torch.nn.Conv2d):
                module.forward = _paired_conv_forward(module)  # type: ignore[method-assign]
            else:
                continue
            setattr(module, "_pixelroute_invariant", True)  # noqa: B010 - a marker on a torch Module
            wrapped += 1
    return wrapped


def _paired_conv_forward(module: Any) -> Any:
    import torch

    original = module.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[0] == 1:
            out: torch.Tensor = original(x.expand(2, *x.shape[1:]).contiguous())
            return out[:1]
        result: torch.Tensor = original(x)
        return result

    return forward


def _rowwise_forward(module: Any) -> Any:
    import torch
    import torch.nn.functional as F

    def forward(x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1] if x.dim() else 0
        if x.dim() < 2 or rows >= SMALL_ROWS:
            return F.linear(x, module.weight, module.bias)
        flat = x.reshape(rows, x.shape[-1])
        weight, bias = module.weight, module.bias
        out = torch.cat([F.linear(flat[i : i + 1].contiguous(), weight, bias) for i in range(rows)])
        return out.reshape(*x.shape[:-1], out.shape[-1])

    return forward
