"""The starter ``pixelroute.toml`` that ``pixelroute init`` writes: commented, and valid as written.

The local backends are the embedded default's (``Client()`` with no config), rendered from
:func:`~pixelroute._config.embedded_default`, so the file and ``Client()`` cannot drift apart
and both use the same tiny pipelines in the cache dir. The remote backends are commented out:
a routed request to a backend whose key is not in the environment fails, so each one is
switched on by exporting its key and uncommenting its block. Their prices come from the
backend presets (a ``price`` written in the file wins).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ._errors import ConfigError

DEFAULT_NAME = "pixelroute.toml"

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")

#: a comment after a key of the local backends, where the value needs explaining
_LOCAL_NOTES = {
    "model": "a hub id or a local folder with model_index.json",
    "make_tiny": "build a tiny RANDOM-weight pipeline at `model` if it is missing; delete for real models",
    "price": "a shadow price: what the router weighs this backend's images at",
    "step_options": "step counts the router may choose between",
    "typical_latency_s": "cold-start prior, seconds per image, until a trained model knows better",
    "strengths": "declared strengths in [0, 1] per scenario (cold-start prior)",
}

#: the order a person reads a backend in: what it is, where the model is, then the router's priors
_KEY_ORDER = ("name", "kind", "model", "make_tiny", "default_steps", "step_options", "price",
              "typical_latency_s", "strengths")

_HEADER = """\
# pixelroute configuration, written by `pixelroute init`. Every setting and its environment
# override (PIXELROUTE_ROUTER__EXPLORATION=0.05, ...) is in the configuration reference of the
# docs. Load it with `Client.from_config("pixelroute.toml")` or `pixelroute ... --config pixelroute.toml`.
#
# Relative paths (the SQLite store, the router model) are relative to the directory a process
# runs in: start the web app, the workers and the retraining job from this folder, or make
# them absolute.

[telemetry]
store = "sqlite:///pixelroute.db"      # one file per machine; "postgresql://user@host/db" across machines
prompt_retention = "full"              # full | hash | none: what telemetry keeps of a prompt

[router]
model = "router-model"                 # written by `pixelroute train --out router-model`; until then: cold start
correction_cost_per_hour = 60.0        # USD value of an hour of a person's correction time
exploration = 0.02                     # share of requests that may try a non-best candidate (only with slack)
sla_confidence = 0.95                  # P(finishing before the deadline) a candidate must reach

[execution]
max_attempts = 3                       # attempts per call, fallbacks included
preload = false                        # true: servers load every pipeline at start-up, not on the first request

# -- local: diffusers pipelines on this machine ----------------------------------------------
# The embedded default: two TINY pipelines of the real diffusers classes with RANDOM weights,
# so their images are noise. They run offline and let you try everything before you choose
# models. For real images set `model` to a hub id (downloaded on first use) and delete
# `make_tiny`, for example:
#     model = "stabilityai/sdxl-turbo"   (SDXL-Turbo: 1-4 steps, guidance 0)
"""

_REMOTE = """
# -- remote APIs ------------------------------------------------------------------------------
# Keys come only from the environment variable named by `api_key_env`, never from this file.
# To add one: export its key, then uncomment its block. (A request routed to a backend whose
# key is not set fails with an error naming the variable.) Prices default to the provider's
# list price for the model; set `price = { per_image = ... }` to use your own.

# [[backends]]
# name = "gpt-image"
# kind = "openai"
# model = "gpt-image-1"
# quality = "low"
# api_key_env = "OPENAI_API_KEY"

# [[backends]]
# name = "ideogram-v2a"
# kind = "ideogram"
# model = "V_2A"
# api_key_env = "IDEOGRAM_API_KEY"

# [[backends]]
# name = "sd35-large-api"
# kind = "stability"
# model = "sd3.5-large"
# api_key_env = "STABILITY_API_KEY"

# [[backends]]
# name = "gemini-image"
# kind = "gemini"
# model = "gemini-2.5-flash-image"
# api_key_env = "GEMINI_API_KEY"

# [[backends]]
# name = "flux-schnell"
# kind = "replicate"
# model = "black-forest-labs/flux-schnell"
# api_key_env = "REPLICATE_API_TOKEN"
"""


def starter_config() -> str:
    """The text of the starter config, with the local backends in this machine's cache dir."""
    from ._config import embedded_default

    blocks = [_local_block(b.model_dump(exclude_unset=True)) for b in embedded_default().backends]
    return _HEADER + "".join(blocks) + _REMOTE


def write_starter(path: str | os.PathLike[str] = DEFAULT_NAME, *, force: bool = False) -> Path:
    """Write the starter config at ``path`` (a file, or a folder to hold ``pixelroute.toml``).

    Atomic: the text goes to a temporary file in the same folder, which is then linked into
    place (refusing an existing file unless ``force``) or, with ``force``, renamed over it. A
    reader never sees half a file, and an existing config is never clobbered by accident.
    """
    target = Path(path).expanduser()
    if target.is_dir() or str(path).endswith(("/", os.sep)):  # "conf/" names a folder, existing or not
        target = target / DEFAULT_NAME
    if target.exists() and not force:
        raise ConfigError(f"`{target}` already exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(starter_config())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a config is read by other processes (web, cron)
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails if the file appeared since the check: no clobbering race
            except FileExistsError:
                raise ConfigError(f"`{target}` already exists; pass --force to overwrite it") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _local_block(backend: dict[str, Any]) -> str:
    lines = ["", "[[backends]]"]
    order = {key: i for i, key in enumerate(_KEY_ORDER)}
    for key in sorted(backend, key=lambda k: order.get(k, len(order))):
        line = f"{key} = {_toml(backend[key])}"
        note = _LOCAL_NOTES.get(key)
        if note and len(line) < 38:
            line = f"{line:<38} # {note}"
        elif note:  # a long value: the note goes on its own line above it
            lines.append(f"# {note}")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """A TOML value for the plain types a backend's settings dump to."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"no TOML form for {type(value).__name__} {value!r}")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # a basic string: escape what TOML forbids raw (quote, backslash, control characters)
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


__all__ = ["DEFAULT_NAME", "starter_config", "write_starter"]
