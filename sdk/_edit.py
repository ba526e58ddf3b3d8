"""Edit requests: an input image (and optionally a mask) with a prompt, validated before anything runs.

``Client.edit(image, prompt, mask=..., strength=...)`` builds an :class:`EditRequest` with
:func:`build_edit_request`. Input images are untrusted, so they pass the same checks as provider
responses (:func:`pixelroute.backends._http_safety.open_untrusted_image`: a real image, not
truncated, not a decompression bomb, under the pixel limit) and then ours:

* ``image``: a PIL image, the bytes of a PNG, JPEG or WebP file, or a path to one; at most
  :data:`MAX_INPUT_BYTES` bytes and :data:`MAX_INPUT_PIXELS` pixels, each side between
  :data:`~pixelroute._types.MIN_SIDE` and :data:`~pixelroute._types.MAX_SIDE`.
* ``mask``: the same, and the same size as ``image``. It is read as grayscale: **white is
  repainted, black is kept** (diffusers' and Stability's convention; backends convert it for
  providers that read it otherwise). A mask with transparent pixels is refused rather than
  guessed at (OpenAI-style masks mark the edit area with transparency), and so is an all-black
  mask, which would edit nothing.
* ``strength``: in (0, 1]; how far the result may move from the input (1 = ignore it).
  ``None`` is the backend's default (diffusers: 0.8 without a mask, 1.0 with one).

``width``/``height`` left unset mean "the input image's size"; set, they are the output size
(local pipelines resize the input to it; providers that cannot are refused by their backend).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, field_validator, model_validator

from ._errors import ValidationError
from ._shown import shown
from ._types import MAX_SIDE, MIN_SIDE, GenerateRequest, _validated

#: the largest input file: OpenAI's limit for GPT image models (50 MB); other providers are stricter
MAX_INPUT_BYTES = 50_000_000
#: the most pixels an input may hold: the default cap on provider responses (``max_image_pixels``)
MAX_INPUT_PIXELS = 40_000_000
#: formats every edit-capable provider accepts (OpenAI, Stability and Ideogram list the same three)
INPUT_FORMATS = ("PNG", "JPEG", "WEBP")
#: diffusers' defaults, which the router's features assume too (``pixelroute.router.features``)
DEFAULT_STRENGTH = 0.8
DEFAULT_MASKED_STRENGTH = 1.0


class InputImage:
    """A validated, decoded input image: its pixels, size, format and a digest of its pixels.

    ``sha256`` is over the decoded pixels (mode, size, raw bytes), so the same picture has the
    same digest whether it came as a PIL image, PNG bytes or a file. ``data`` is what a provider
    is sent: the caller's own bytes when they are PNG, JPEG or WebP, else a lossless PNG encoding.
    """

    __slots__ = ("_data", "_lock", "_masks", "format", "image", "sha256")

    def __init__(self, image: Any, fmt: str, data: bytes | None) -> None:
        self.image = image
        self.format = fmt
        self._data = data
        self._lock = threading.Lock()
        self._masks: dict[str, bytes] = {}
        digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
        digest.update(image.tobytes())
        self.sha256 = digest.hexdigest()

    @property
    def width(self) -> int:
        return int(self.image.width)

    @property
    def height(self) -> int:
        return int(self.image.height)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def data(self) -> bytes:
        """The encoded file to upload (encoded once, on first use, when the caller gave pixels)."""
        if self._data is None:
            with self._lock:
                if self._data is None:
                    buf = io.BytesIO()
                    self.image.save(buf, format="PNG")
                    self._data, self.format = buf.getvalue(), "png"
        return self._data

    @property
    def mime(self) -> str:
        self.data  # noqa: B018 - the format is known once encoded
        return {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}[self.format]

    def mask_png(self, marks: str) -> bytes:
        """This mask as a PNG in a provider's convention for the area to repaint (encoded once each).

        ``"white"``: as given (Stability); ``"black"``: inverted (Ideogram); ``"transparent"``: black
        pixels whose alpha is 0 where the area is repainted (OpenAI), grey levels as partial alpha.
        """
        cached = self._masks.get(marks)
        if cached is None:
            cached = self._masks[marks] = _encode_mask(self.image, marks)
        return cached

    def describe(self) -> dict[str, Any]:
        """What telemetry and traces keep of it: never the pixels."""
        return {"sha256": self.sha256, "width": self.width, "height": self.height, "format": self.format}

    def __repr__(self) -> str:
        return f"<InputImage {self.width}x{self.height} {self.format} sha256={self.sha256[:12]}>"


class EditRequest(GenerateRequest):
    """One edit: ``prompt`` applied to ``image``, inside ``mask`` when given (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    operation: ClassVar[str] = "edit"

    image: InputImage
    mask: InputImage | None = None
    strength: float | None = None

    @field_validator("strength")
    @classmethod
    def _strength(cls, v: float | None) -> float | None:
        if v is not None and (isinstance(v, bool) or not math.isfinite(v) or not 0.0 < v <= 1.0):
            raise ValueError(f"`strength` must be greater than 0 and at most 1 but is {shown(v)}")
        return v

    @model_validator(mode="after")
    def _mask_matches(self) -> EditRequest:
        if self.mask is not None and self.mask.size != self.image.size:
            raise ValueError(
                f"`mask` must be the size of `image` ({self.image.width}x{self.image.height}) but is "
                f"{self.mask.width}x{self.mask.height}"
            )
        return self

    @property
    def effective_strength(self) -> float:
        if self.strength is not None:
            return self.strength
        return DEFAULT_MASKED_STRENGTH if self.mask is not None else DEFAULT_STRENGTH

    def size_or(self, default_width: int, default_height: int) -> tuple[int, int]:
        """The output size: the caller's ``width``/``height``, else the input image's own."""
        return (self.width or self.image.width, self.height or self.image.height)

    @property
    def size_from_image(self) -> bool:
        return self.width is None

    def params(self) -> dict[str, Any]:
        """The knobs as telemetry's ``params``: the generation ones plus ``strength`` and ``masked``."""
        return {**super().params(), "strength": self.strength, "masked": self.mask is not None}

    def inputs(self) -> dict[str, Any]:
        """The telemetry ``input`` object: the input image's digest, size and format, and the mask's."""
        return {**self.image.describe(), "mask_sha256": None if self.mask is None else self.mask.sha256}

    def identity(self) -> list[Any]:
        return [*super().identity(), self.image.sha256, None if self.mask is None else self.mask.sha256]


def _encode_mask(gray: Any, marks: str) -> bytes:
    from PIL import Image, ImageOps

    if marks == "black":
        out = ImageOps.invert(gray)
    elif marks == "transparent":
        out = Image.new("RGBA", gray.size, (0, 0, 0, 255))
        out.putalpha(ImageOps.invert(gray))
    else:
        out = gray
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def load_input_image(value: Any, field: str) -> InputImage:
    """Validate one input (``image`` or ``mask``): a PIL image, encoded bytes or a path to a file."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return _from_pil(value, field)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        where = f"`{field}`"
    elif isinstance(value, str | os.PathLike):
        data = _read_file(Path(value), field)
        where = f"`{field}` ({str(value)!r})"
    else:
        raise ValidationError(
            f"`{field}` must be a PIL image, the bytes of a PNG, JPEG or WebP file, or a path to one, "
            f"but is {type(value).__name__}",
            field=field, value=type(value).__name__,
        )
    return _from_bytes(data, field, where)


def _read_file(path: Path, field: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise _too_big(field, size)
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"`{field}` {str(path)!r} cannot be read: {exc.strerror or exc}",
                              field=field, value=str(path)) from exc


def _too_big(field: str, size: int) -> ValidationError:
    return ValidationError(f"`{field}` must be at most {MAX_INPUT_BYTES:,} bytes but is {size:,} bytes",
                           field=field, value=size)


def _from_bytes(data: bytes, field: str, where: str) -> InputImage:
    from .backends._http_safety import UnsafeImage, open_untrusted_image

    if len(data) > MAX_INPUT_BYTES:
        raise _too_big(field, len(data))
    try:
        image = open_untrusted_image(data, MAX_INPUT_PIXELS, what="it")
    except UnsafeImage as exc:
        raise ValidationError(f"{where} is not an acceptable PNG, JPEG or WebP image: {exc.why}",
                              field=field, value=f"{len(data)} bytes") from exc
    fmt = str(image.format or "")
    if fmt not in INPUT_FORMATS:
        raise ValidationError(f"{where} must be a PNG, JPEG or WebP image but is {fmt or 'of an unknown format'}",
                              field=field, value=fmt)
    _check_size(image, field)
    return InputImage(_pixels(image, field), fmt.lower(), data)


def _from_pil(image: Any, field: str) -> InputImage:
    _check_size(image, field)
    image.load()
    return InputImage(_pixels(image, field), "png", None)


def _check_size(image: Any, field: str) -> None:
    width, height = image.size
    if width * height > MAX_INPUT_PIXELS:
        raise ValidationError(f"`{field}` must hold at most {MAX_INPUT_PIXELS:,} pixels but is {width}x{height}",
                              field=field, value=(width, height))
    for side, value in (("width", width), ("height", height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ValidationError(
                f"`{field}` {side} must be between {MIN_SIDE} and {MAX_SIDE} pixels but is {value}",
                field=field, value=(width, height),
            )


def _pixels(image: Any, field: str) -> Any:
    """The pixels the pipelines read: RGB for an image; one luminance channel for a mask."""
    if field != "mask":
        return image if image.mode == "RGB" else image.convert("RGB")
    if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            raise ValidationError(
                "`mask` must be an opaque grayscale image (white = repaint, black = keep) but has transparent "
                "pixels; for an OpenAI-style mask, pass the transparency as white: "
                "ImageOps.invert(mask.getchannel('A'))",
                field="mask", value=image.mode,
            )
    gray = image.convert("L")
    if gray.getextrema()[1] == 0:
        raise ValidationError("`mask` must mark something to repaint (white) but is entirely black",
                              field="mask", value="all black")
    return gray


def build_edit_request(image: Any, mask: Any, **fields: Any) -> EditRequest:
    """Validate the inputs and knobs into an :class:`EditRequest`, raising our ``ValidationError``."""
    loaded = load_input_image(image, "image")
    loaded_mask = None if mask is None else load_input_image(mask, "mask")
    request: EditRequest = _validated(EditRequest, {"image": loaded, "mask": loaded_mask, **fields})
    return request
