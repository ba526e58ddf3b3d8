"""Remote backends' shared settings, and the pooled httpx clients built from them."""

from __future__ import annotations

from typing import Literal

import httpx
from pydantic import Field, field_validator

from .._shown import env_var_problem
from . import _http_deadline as io_deadline
from .base import BackendSettings

#: Pillow's own default limit; ours must not exceed it or Pillow refuses first with a warning.
PILLOW_MAX_PIXELS = 89_478_485


class RemoteSettings(BackendSettings):
    """Settings shared by every remote kind; each kind subclasses this with its own fields."""

    #: the provider's endpoint; ``None`` = its public URL (tests and proxies point it elsewhere)
    base_url: str | None = None
    #: the environment variable holding the key; never the key itself
    api_key_env: str | None = None
    #: cap for one HTTP exchange; the call's deadline caps it further
    timeout_s: float = Field(default=120.0, gt=0)
    #: retries after the first try (5xx, resets, 429 without a long Retry-After), deadline permitting
    max_retries: int = Field(default=2, ge=0, le=10)
    #: first backoff in seconds; doubles each retry, with the same amount of jitter
    retry_base_s: float = Field(default=0.25, gt=0)
    max_connections: int = Field(default=100, ge=1)
    max_keepalive_connections: int = Field(default=20, ge=0)
    #: hosts result URLs may point at (``*.example.com`` matches subdomains); empty = the kind's defaults
    allowed_download_hosts: list[str] = Field(default_factory=list)
    #: allow result URLs on private, loopback and link-local addresses (and plain http): tests only
    allow_private_download_hosts: bool = False
    max_response_bytes: int = Field(default=64 * 2**20, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=1, le=PILLOW_MAX_PIXELS)
    #: size rule: the nearest allowed aspect ratio must be within this distance in |log(w/h)|
    aspect_tolerance: float = Field(default=0.05, ge=0, le=1)
    #: the async transport: httpx's own, or aiohttp under the httpx API (``pip install pixelroute[aiohttp]``),
    #: several times faster at high concurrency (docs/benchmarks.md); ``auto`` = aiohttp when installed
    async_transport: Literal["auto", "httpx", "aiohttp"] = "auto"

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        # a key pasted here would otherwise travel on in "`sk-…` is not set" messages
        problem = env_var_problem("api_key_env", value, key_env_example(cls))
        if problem:
            raise ValueError(problem)
        return value


def key_env_example(settings_cls: type[RemoteSettings]) -> str:
    """The kind's own variable (``OPENAI_API_KEY``), for messages that say what to write."""
    default = settings_cls.model_fields["api_key_env"].default
    if isinstance(default, str) and default:
        return default
    kind = settings_cls.model_fields["kind"].default
    return f"{str(kind).upper() if isinstance(kind, str) else 'PROVIDER'}_API_KEY"



def limits_for(settings: RemoteSettings) -> httpx.Limits:
    """The connection pool's bounds."""
    return httpx.Limits(
        max_connections=settings.max_connections, max_keepalive_connections=settings.max_keepalive_connections
    )


def new_sync_client(
    settings: RemoteSettings, transport: httpx.BaseTransport | None
) -> tuple[httpx.Client, httpx.BaseTransport]:
    """A pooled client that never follows redirects itself (downloads re-check every hop) nor reads proxies
    from the environment, and the transport that holds its pool.

    The driver builds requests with the client (its default headers) and sends them on the
    transport: the client's own ``send`` adds only what we switch off (redirects, auth) or do not
    want (a cookie jar filled from untrusted hosts), at ~20% of the per-request CPU at high rates.
    """
    if transport is None:
        transport = httpx.HTTPTransport(limits=limits_for(settings), trust_env=False)
    io_deadline.install(transport)  # the call's deadline bounds every socket operation, headers included
    client = httpx.Client(transport=transport, follow_redirects=False, trust_env=False)
    return client, transport


def new_async_client(
    settings: RemoteSettings, transport: httpx.AsyncBaseTransport | None, backend: str
) -> tuple[httpx.AsyncClient, httpx.AsyncBaseTransport]:
    """The async twin of :func:`new_sync_client`; ``async_transport = "aiohttp"`` swaps the transport."""
    wants_aiohttp = settings.async_transport == "aiohttp" or (
        settings.async_transport == "auto" and _aiohttp_available()
    )
    if transport is None:
        limits = limits_for(settings)
        transport = (aiohttp_transport(limits, backend) if wants_aiohttp
                     else httpx.AsyncHTTPTransport(limits=limits, trust_env=False))
    client = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
    return client, transport


def _aiohttp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("httpx_aiohttp") is not None


def aiohttp_transport(limits: httpx.Limits, backend: str) -> httpx.AsyncBaseTransport:
    from .._extras import optional_imports

    with optional_imports(f"backend `{backend}`: `async_transport = \"aiohttp\"`"):
        from httpx_aiohttp import AiohttpTransport
    transport: httpx.AsyncBaseTransport = AiohttpTransport(limits=limits, trust_env=False)
    return transport
