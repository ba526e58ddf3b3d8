"""What the two Google kinds (``imagen``, ``gemini``) share: the Gemini API or Vertex AI endpoint.

Gemini API: ``{base_url}/v1beta/models/{model}:{method}`` with ``x-goog-api-key``. Vertex AI:
``https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/
google/models/{model}:{method}`` (``aiplatform.googleapis.com`` for ``global``) with ``Authorization:
Bearer <token>``, the token read from ``api_key_env``. Source: googleapis/python-genai
``google/genai/_api_client.py`` and ``_transformers.py`` ``t_model`` (cited in provider_apis.md §4).
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._errors import ConfigError
from ._http import RemoteBackend, RemoteSettings


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
