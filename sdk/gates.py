"""Quality gates for the cascade: ``gate(image, request) -> score`` in ``[0, 1]``.

The cascade generates on the cheap, fast candidate first and escalates to the high-fidelity
one only when the gate's score is below ``execution.cascade_threshold``. Any callable with
that signature is a gate; two ship here:

- :class:`ContrastGate`: no model, instant; refuses flat, washed-out or blank images. Good
  for tests and as a floor under any other gate.
- :class:`ClipScoreGate`: prompt-image agreement from a CLIP model loaded through
  transformers from a local folder or the hub cache (it never downloads at request time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image

    from ._types import GenerateRequest

Gate = Callable[["Image", "GenerateRequest"], float]


class ContrastGate:
    """Score an image by its luminance spread: 0 for a flat image, 1 at ``full_std`` or more."""

    def __init__(self, full_std: float = 48.0) -> None:
        if full_std <= 0:
            raise ConfigError(f"`full_std` must be positive but is {full_std!r}")
        self.full_std = full_std

    def __call__(self, image: Image, request: GenerateRequest) -> float:
        from PIL import ImageStat

        std = ImageStat.Stat(image.convert("L")).stddev[0]
        return float(min(1.0, std / self.full_std))


class ClipScoreGate:
    """CLIP prompt-image similarity mapped to ``[0, 1]``.

    The cosine similarity of CLIP embeddings for a matching pair sits roughly between 0.15
    (unrelated) and 0.35 (a good match) for ViT-B/32-class models; ``low`` and ``high``
    map that range onto ``[0, 1]`` and are yours to tune.

    ``model`` is a local folder or a hub id already in the local cache: loading uses
    ``local_files_only=True`` so a request never waits on a download. The model loads on
    first use and is shared by threads (inference holds a lock: the model is not re-entrant).
    """

    def __init__(
        self, model: str | Path = "openai/clip-vit-base-patch32", *, low: float = 0.15, high: float = 0.35,
        device: str = "cpu",
    ) -> None:
        if not high > low:
            raise ConfigError(f"`high` must be greater than `low` but they are {high!r} and {low!r}")
        self.model_name = str(model)
        self.low, self.high, self.device = low, high, device
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            try:
                from transformers import CLIPModel, CLIPProcessor

                model = CLIPModel.from_pretrained(self.model_name, local_files_only=True)
                model = model.to(self.device).eval()  # type: ignore[arg-type]
                processor = CLIPProcessor.from_pretrained(self.model_name, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"no CLIP model available at `{self.model_name}` (it must be a local folder or already "
                    f"in the hub cache): {exc}"
                ) from exc
            self._loaded = (model, processor)
        return self._loaded

    def __call__(self, image: Image, request: GenerateRequest) -> float:
        import torch

        with self._lock:
            model, processor = self._load()
            inputs = processor(text=[request.prompt], images=[image.convert("RGB")], return_tensors="pt",
                               padding=True, truncation=True)
            with torch.no_grad():
                out = model(**{k: v.to(self.device) for k, v in inputs.items()})
            img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
            txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
            cosine = float((img * txt).sum())
        return float(min(1.0, max(0.0, (cosine - self.low) / (self.high - self.low))))


__all__ = ["ClipScoreGate", "ContrastGate", "Gate"]
