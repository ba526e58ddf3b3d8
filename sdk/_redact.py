"""Keep secrets out of messages, logs and telemetry.

Secrets come only from the environment (``api_key_env``). Every backend registers the secret
values it reads here, and every message that may carry provider text passes through
:func:`redact` before it reaches an exception, a log line or a telemetry record.

Structured data (a telemetry record) is redacted value by value with :func:`redact_values`,
never as serialized text: a short key such as ``1234`` must not turn the number ``0.1234``
into ``0.[REDACTED]`` and leave invalid JSON behind.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

_lock = threading.Lock()
_secrets: set[str] = set()
# each secret, plus its spelling inside a JSON string when escaping changes it
_needles: tuple[str, ...] = ()

# Credentials in the shapes providers issue, masked even when nobody registered them: a key
# pasted into a setting (``api_key_env = "sk-…"``) reaches messages before any backend reads it.
_TOKEN_PATTERNS = [
    re.compile(r"\b(?:sk|pk|rk)[-_][A-Za-z0-9_\-]{16,}"),  # OpenAI, Stability, Stripe-style
    re.compile(r"\br8_[A-Za-z0-9]{16,}"),  # Replicate
    re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"),  # Google API keys
    re.compile(r"\bya29\.[0-9A-Za-z_\-]{20,}"),  # Google OAuth access tokens
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),  # Hugging Face
    re.compile(r"\b(?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{20,}"),  # GitHub
]

#: substrings every _TOKEN_PATTERNS match contains: the cheap test before the regexes
_TOKEN_HINTS = ("sk-", "sk_", "pk-", "pk_", "rk-", "rk_", "r8_", "AIza", "ya29.", "hf_",
                "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")

MASK = "[REDACTED]"

# A header value that is a placeholder in a hint ("send `Authorization: Bearer <key>`") or an
# already masked value is not a secret; masking it would only mangle the hint.
_PLACEHOLDER = re.compile(r"(?i)^(?:[<${%].*|\*+|\.+|x+|bearer|token|key|basic|\[redacted\])$")


def _mask_header(match: re.Match[str]) -> str:
    if _PLACEHOLDER.match(match.group(3)):
        return match.group(0)
    return match.group(1) + (match.group(2) or "") + MASK


# Header-shaped secrets that may be echoed back by a server or a proxy. The value stops at
# whitespace, quotes, separators and backticks (a key never holds them; a hint's markup does).
_HEADER_PATTERNS = [
    re.compile(r"(?i)(authorization\s*[:=]\s*)((?:bearer|token|key|basic)\s+)?([^\s,;\"'`]+)"),
    re.compile(r"(?i)((?:x-)?api[-_]?key\s*[:=]\s*)()([^\s,;\"'`]+)"),
    re.compile(r"(?i)(bearer\s+)()([A-Za-z0-9._\-~+/=]{8,})"),
    re.compile(r"(?i)(basic\s+)()([A-Za-z0-9+/=]{8,})"),
]
_CREDENTIAL_WORD = re.compile(r"(?i)authoriz|bearer|api[-_ ]?key")


def register_secret(value: str | None) -> None:
    """Remember a secret value so that :func:`redact` removes it wherever it appears."""
    global _needles
    if value and len(value) >= 4:
        with _lock:
            if value in _secrets:
                return
            _secrets.add(value)
            escaped = json.dumps(value, ensure_ascii=False)[1:-1]
            _needles = (*_needles, value) if escaped == value else (*_needles, value, escaped)


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and credential-looking headers masked."""
    if not text:
        return text
    for secret in tuple(_secrets):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _HEADER_PATTERNS:
        text = pattern.sub(_mask_header, text)
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(MASK, text)
    return text


def mentions_secret(text: str) -> bool:
    """Cheap test: could :func:`redact` change anything in ``text`` (or in the values it serializes)?

    True when a credential word or a registered secret (raw or JSON-escaped) appears. Lower-casing
    plus a few substring tests cost ~2 us on a telemetry record; the regexes run only after a hit.
    """
    low = text.lower()
    if ("authoriz" in low or "bearer" in low or "api" in low) and _CREDENTIAL_WORD.search(low):
        return True
    if any(hint in text for hint in _TOKEN_HINTS) and any(p.search(text) for p in _TOKEN_PATTERNS):
        return True
    return any(needle in text for needle in _needles)


def redact_values(value: Any) -> Any:
    """``value`` with every string inside it (dict keys too) passed through :func:`redact`.

    Numbers, booleans and ``None`` are never touched, so the result serializes to valid JSON
    exactly as the input did. Containers are copied; the input is not modified.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v) for v in value]
    return value
