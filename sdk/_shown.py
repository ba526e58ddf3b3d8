"""How a received value appears in an error message: short, never raising, never a secret.

Error messages show what was received (``"`n` must be between 1 and 16 but is `17`"``), but a
value can be hostile: an integer of 5,000 digits (``str()`` refuses it past 4,300), a list
nested 100,000 deep, a megabyte of text, or an API key pasted where a setting name belongs.
:func:`shown` renders any of them in a bounded amount of text and time, and hides values that
look like credentials or sit under a key named like one (``api_key``, ``client_secret``, ...).
"""

from __future__ import annotations

import math
import re
from typing import Any

#: a setting or field whose name contains one of these holds a credential: its value is never shown
SECRET_NAME_PARTS = ("key", "secret", "token", "password", "passwd", "credential")
#: what a hidden value is replaced with
HIDDEN = "<hidden: may be a secret>"
#: the shape POSIX shells give environment variable names
ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Prefixes of credentials that providers issue (OpenAI/Stability `sk-`, Replicate `r8_`, Google
# `AIza`/`ya29.`, Hugging Face `hf_`, GitHub `ghp_`, Slack `xox`, JWTs `eyJ`) and auth schemes.
_SECRET_PREFIXES = (
    "sk-", "sk_", "pk-", "pk_", "rk_", "r8_", "AIza", "ya29.", "hf_", "ghp_", "gho_", "ghs_",
    "github_pat_", "xoxb-", "xoxp-", "eyJ", "Bearer ", "bearer ", "Basic ", "basic ",
)  # fmt: skip
_WORDS = re.compile(r"[A-Za-z0-9]+")

_MAX_TEXT = 60
_MAX_ITEMS = 4
_MAX_DEPTH = 2
#: integers with more bits than this are described, not printed (10**60 has 200 bits)
_MAX_INT_BITS = 200


def is_secret_name(name: str | None) -> bool:
    """Whether a field or setting called ``name`` holds a credential (its value is never shown)."""
    if not name:
        return False
    last = str(name).rsplit(".", 1)[-1].lower()
    return any(part in last for part in SECRET_NAME_PARTS)


def looks_like_secret(text: str) -> bool:
    """Whether ``text`` has the shape of an API key or token rather than a name or a sentence.

    Known provider prefixes count, and so does any run of 16+ letters and digits that mixes both
    (at least 4 letters and 2 digits):
    names (``OPENAI_API_KEY``, ``local-fast``) are words, keys are long random runs.
    """
    stripped = text.strip()
    if not stripped:
        return False
    if stripped.startswith(_SECRET_PREFIXES):
        return True
    for word in _WORDS.findall(stripped):
        if len(word) >= 16 and sum(c.isdigit() for c in word) >= 2 and sum(c.isalpha() for c in word) >= 4:
            return True
    return False


def shown(value: Any, *, name: str | None = None) -> str:
    """``value`` as an error message shows it, in backticks; hidden when ``name`` or the value is secret."""
    if is_secret_name(name) and not (value is None or (isinstance(value, str) and not value)):
        return HIDDEN
    try:
        return f"`{_render(value, 0)}`"
    except Exception:  # a value whose own __repr__ fails still gets a message
        return f"<a {type(value).__name__}>"


def env_var_problem(field: str, value: Any, example: str) -> str | None:
    """Why ``value`` cannot be the *name* of an environment variable (``None`` when it can).

    The value itself is never part of the answer: a key pasted here must not reach a log.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str) and ENV_VAR_NAME.match(value) and not looks_like_secret(value):
        return None
    return (
        f"`{field}` must name an environment variable, not hold the key: set e.g. {example} in the "
        f'environment and write {field.rsplit(".", 1)[-1]} = "{example}" (the value given is not shown; '
        "a name is letters, digits and underscores, not starting with a digit)"
    )


def _render(value: Any, depth: int) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            digits = math.floor(value.bit_length() * math.log10(2)) + 1
            return f"{'-' if value < 0 else ''}<an integer of about {digits} digits>"
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if looks_like_secret(value):
            return HIDDEN
        if len(value) > _MAX_TEXT:
            return repr(value[:_MAX_TEXT]) + f"... ({len(value)} characters)"
        return repr(value)
    if isinstance(value, bytes | bytearray):
        return repr(bytes(value[:_MAX_TEXT])) + (f"... ({len(value)} bytes)" if len(value) > _MAX_TEXT else "")
    if isinstance(value, dict):
        if depth >= _MAX_DEPTH:
            return "{...}" if value else "{}"
        items = [
            f"{_render(k, depth + 1)}: {HIDDEN if is_secret_name(str(k)) else _render(v, depth + 1)}"
            for k, v in list(value.items())[:_MAX_ITEMS]
        ]
        more = ", ..." if len(value) > _MAX_ITEMS else ""
        return "{" + ", ".join(items) + more + "}"
    if isinstance(value, list | tuple):
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        if depth >= _MAX_DEPTH:
            return f"{open_}...{close}" if value else f"{open_}{close}"
        items = [_render(v, depth + 1) for v in value[:_MAX_ITEMS]]
        more = ", ..." if len(value) > _MAX_ITEMS else ""
        return open_ + ", ".join(items) + more + close
    text = repr(value)
    return text[:_MAX_TEXT] + ("..." if len(text) > _MAX_TEXT else "")


__all__ = ["ENV_VAR_NAME", "HIDDEN", "env_var_problem", "is_secret_name", "looks_like_secret", "shown"]
