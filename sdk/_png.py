"""PNG files that say how they were made: text chunks written atomically, read back as a dict.

Two chunks, so both people and programs can read them:

- ``parameters`` (tEXt/iTXt): AUTOMATIC1111's human-readable style, which image viewers and
  web UIs already show::

      a red bicycle against a glass wall
      Negative prompt: blurry
      Steps: 30, CFG scale: 5.0, Sampler: EulerDiscreteScheduler, Seed: 7, Size: 1024x1024, Model: ...

- ``pixelroute`` (iTXt, UTF-8): the same facts and more as JSON (request id, backend, model,
  router version, params) -- what :func:`read_png_metadata` returns.

The file is written to a temporary sibling and renamed, so a reader never sees half a PNG.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ._errors import ValidationError

CHUNK_JSON = "pixelroute"
CHUNK_PARAMETERS = "parameters"


def save_png(image: Any, path: str | os.PathLike[str], metadata: dict[str, Any]) -> Path:
    """Write ``image`` (a PIL image) to ``path`` with ``metadata`` in text chunks; return the path."""
    from PIL.PngImagePlugin import PngInfo

    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValidationError(f"`path` must end in .png but is {str(target)!r}", field="path",
                              value=str(target))
    info = PngInfo()
    info.add_itxt(CHUNK_PARAMETERS, a1111_parameters(metadata))
    info.add_itxt(CHUNK_JSON, json.dumps(metadata, default=str, sort_keys=True))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG", pnginfo=info)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def read_png_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``pixelroute`` JSON of a PNG; only ``{"parameters": text}`` for other tools' PNGs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            text: dict[str, str] = dict(getattr(img, "text", {}) or {})
    except (OSError, UnidentifiedImageError) as exc:
        raise ValidationError(f"`path` {str(path)!r} is not a readable PNG: {exc}", field="path",
                              value=str(path)) from exc
    if CHUNK_JSON in text:
        try:
            data = json.loads(text[CHUNK_JSON])
        except ValueError as exc:
            raise ValidationError(f"`path` {str(path)!r} has a corrupt pixelroute chunk", field="path",
                                  value=str(path)) from exc
        if isinstance(data, dict):
            return data
    return {CHUNK_PARAMETERS: text[CHUNK_PARAMETERS]} if CHUNK_PARAMETERS in text else {}


def a1111_parameters(meta: dict[str, Any]) -> str:
    """The ``parameters`` text in AUTOMATIC1111's layout from pixelroute metadata."""
    params = meta.get("params") or {}
    lines = [str(meta.get("prompt") or "")]
    negative = meta.get("negative_prompt") or params.get("negative_prompt")
    if negative:
        lines.append(f"Negative prompt: {negative}")
    fields = [
        ("Steps", params.get("steps", meta.get("steps"))),
        ("CFG scale", params.get("guidance")),
        ("Sampler", params.get("scheduler")),
        ("Seed", params.get("seed", meta.get("seed"))),
        ("Size", f"{params['width']}x{params['height']}" if params.get("width") and params.get("height")
         else None),
        ("Denoising strength", params.get("strength")),  # A1111's name for an img2img/inpaint strength
        ("Model", meta.get("model")),
        ("Backend", meta.get("backend")),
        ("Request id", meta.get("request_id")),
        ("Router", meta.get("router_version")),
    ]
    lines.append(", ".join(f"{k}: {_a1111_value(v)}" for k, v in fields if v is not None))
    return "\n".join(lines)


def _a1111_value(value: Any) -> str:
    # A1111 separates fields with ", "; quote values that contain it so parsers keep them whole
    text = str(value)
    return json.dumps(text) if "," in text or ":" in text else text
