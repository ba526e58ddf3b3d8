"""Keep secrets out of messages, logs and telemetry.

Secrets come only from the environment (``api_key_env``). Every backend registers the secret
values it reads here, and every message that may carry provider text passes through
:func:`redact` before it reaches an exception, a log line or a telemetry record.
"""

from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()

# Header-shaped secrets that may be echoed back by a server or a proxy.
_HEADER_PATTERNS = [
    re.compile(r"(?i)(authorization\s*[:=]\s*)(bearer\s+|token\s+|key\s+)?[^\s,;\"']+"),
    re.compile(r"(?i)((?:x-)?api[-_]?key\s*[:=]\s*)[^\s,;\"']+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-~+/=]{8,}"),
    re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]{8,}"),
]

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

MASK = "[REDACTED]"


def register_secret(value: str | None) -> None:
    """Remember a secret value so that :func:`redact` removes it wherever it appears."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and credential-looking headers masked."""
    if not text:
        return text
    for secret in tuple(_secrets):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _HEADER_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(MASK, text)
    return text
