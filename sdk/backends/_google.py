"""What the two Google kinds (``imagen``, ``gemini``) share: the Gemini API or Vertex AI endpoint.

Gemini API: ``{base_url}/v1beta/models/{model}:{method}`` with ``x-goog-api-key``. Vertex AI:
``https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/
google/models/{model}:{method}`` (``aiplatform.googleapis.com`` for ``global``) with ``Authorization:
Bearer <token>``, the token read from ``api_key_env``. Source: googleapis/python-genai
``google/genai/_api_client.py`` and ``_transformers.py`` ``t_model`` (cited in provider_apis.md §4).

Errors are the Google RPC status ``{"error": {"code", "message", "status", "details"}}`` on both
hosts and both kinds; a 429 ``RESOURCE_EXHAUSTED`` is RateLimited, waiting ``Retry-After`` or else
the ``google.rpc.RetryInfo`` ``retryDelay`` in ``details`` (``"38s"``, letterstory/lettertrace#34).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from .._errors import BackendError, ConfigError, RateLimited
from ._http import RemoteBackend, RemoteSettings, Reply, retry_after

_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


class GoogleSettings(RemoteSettings):
    """Settings both Google kinds take; set ``vertex_project`` (and ``vertex_location``) for Vertex AI."""

    api_key_env: str | None = "GEMINI_API_KEY"
    vertex_project: str | None = None
    vertex_location: str = "us-central1"


class GoogleBackend(RemoteBackend):
    """A Google model endpoint; a kind gives its RPC ``method`` (``predict``, ``generateContent``)."""

    default_base_url = "https://generativelanguage.googleapis.com"
    method: ClassVar[str]
    settings: GoogleSettings

    def __init__(self, settings: RemoteSettings, **kw: Any) -> None:
        assert isinstance(settings, GoogleSettings)
        #: a base_url set by hand (a proxy, a compatible server) is not Google's own host
        self.google_hosts = settings.base_url is None
        if settings.vertex_project and settings.base_url is None:
            loc = settings.vertex_location
            host = "aiplatform.googleapis.com" if loc == "global" else f"{loc}-aiplatform.googleapis.com"
            settings = settings.model_copy(update={"base_url": f"https://{host}"})
        super().__init__(settings, **kw)

    def auth_headers(self, key: str) -> dict[str, str]:
        if self.settings.vertex_project:
            return {"Authorization": f"Bearer {key}"}
        return {"x-goog-api-key": key}

    def path(self) -> str:
        s = self.settings
        if not s.model:
            raise ConfigError(f"backend `{self.name}` ({self.kind}) needs a `model`")
        if s.vertex_project:
            return (f"/v1/projects/{s.vertex_project}/locations/{s.vertex_location}"
                    f"/publishers/google/models/{s.model}:{self.method}")
        return f"/v1beta/models/{s.model}:{self.method}"

    def error_for(self, reply: Reply) -> BackendError:
        message = self.provider_message(reply)
        if reply.status == 429:
            wait = retry_after(reply)
            return self.error(RateLimited, message or "rate limited", reply,
                              retry_after=wait if wait is not None else retry_delay(reply))
        return self.generic_error(reply, message)


def retry_delay(reply: Reply) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "38s"``) in the error body."""
    data = reply.json_or_none()
    err = data.get("error") if isinstance(data, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    for item in details if isinstance(details, list) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DELAY.match(str(item.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None
