"""Safety rules for untrusted responses: size caps, image verification and result-URL (SSRF) checks.

Bodies are size-capped while streaming, images are decoded and verified by Pillow under a pixel
limit, and result URLs are fetched only from allowed hosts, never from private or loopback
addresses unless ``allow_private_download_hosts`` is set, with redirects followed only to the
same host. :class:`ResponseSafety` holds the rules that need a backend's settings; the rest are
plain functions.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx

from .._errors import BackendError, InvalidOutput
from .._redact import redact

if TYPE_CHECKING:
    from ._http_protocol import Call, Reply
    from ._http_settings import RemoteSettings


class ResponseSafety:
    """The checks a remote backend applies to what comes back (mixed into ``RemoteBackend``)."""

    settings: RemoteSettings

    if TYPE_CHECKING:  # provided by RemoteBackend

        def error(
            self, cls: type[BackendError], message: str, reply: Reply | None = None, **kw: Any
        ) -> BackendError: ...

        def allowed_hosts(self) -> tuple[str, ...]: ...

    def _body_cap(self, response: httpx.Response) -> int:
        """``max_response_bytes``; a declared ``Content-Length`` above it is refused before reading."""
        cap = self.settings.max_response_bytes
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise self.error(InvalidOutput, f"response body of {length} bytes exceeds max_response_bytes={cap}")
        return cap

    def _redirect(self, call: Call, reply: Reply) -> httpx.URL | None:
        """Where a redirect leads, if it may be followed; ``None`` when ``reply`` is not a redirect."""
        if not (300 <= reply.status < 400) or "location" not in reply.headers:
            return None
        here = httpx.URL(reply.url)
        target = here.join(reply.headers["location"])
        if not call.download or target.host != here.host:
            raise self.error(InvalidOutput, f"redirect to {url_for_message(str(target))} refused "
                             "(redirects are followed only for downloads, on the same host)", reply)
        return target

    # The address that passed the checks is the one connected to (see pin_address): resolving the
    # name again when connecting would let a DNS answer that changes in between (rebinding) reach
    # a private address after a public one was checked.

    def _check_download(self, url: httpx.URL, resolve: Callable[[str, int], list[str]]) -> str:
        """Check a result URL; return the checked address to connect to."""
        host, port = self._check_download_host(url)
        addresses = resolve(host, port)
        return self._checked_address(url, host, addresses)

    async def _acheck_download(self, url: httpx.URL, resolve: Callable[[str, int], Awaitable[list[str]]]) -> str:
        host, port = self._check_download_host(url)
        addresses = await resolve(host, port)
        return self._checked_address(url, host, addresses)

    def _checked_address(self, url: httpx.URL, host: str, addresses: list[str]) -> str:
        if not addresses:
            raise self.error(InvalidOutput, f"result URL host `{host}` does not resolve")
        self._check_addresses(url, addresses)
        self._check_scheme(url)
        return addresses[0]

    def _check_scheme(self, url: httpx.URL) -> None:
        if url.scheme != "https" and not (url.scheme == "http" and self.settings.allow_private_download_hosts):
            raise self.error(InvalidOutput, f"result URL {url_for_message(str(url))} is not https")

    def _check_download_host(self, url: httpx.URL) -> tuple[str, int]:
        shown = url_for_message(str(url))
        host = url.host.lower()
        if not any(host_matches(host, pattern) for pattern in self.allowed_hosts()):
            raise self.error(InvalidOutput, f"result URL {shown} is not on an allowed host "
                             f"(allowed_download_hosts: {', '.join(self.allowed_hosts()) or 'none'})")
        return host, url.port or (443 if url.scheme == "https" else 80)

    def _check_addresses(self, url: httpx.URL, addresses: list[str]) -> None:
        if self.settings.allow_private_download_hosts:
            return
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise self.error(InvalidOutput, f"result URL {url_for_message(str(url))} resolves to a "
                                 "private or loopback address (SSRF guard; see allow_private_download_hosts)")


class UnsafeImage(ValueError):
    """Bytes that are not an image we accept: ``why`` says what is wrong (the callers name the source)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def open_untrusted_image(data: bytes, max_pixels: int, what: str = "response") -> Any:
    """Decode untrusted bytes into a fully loaded PIL image: refuse non-images, truncation and
    decompression bombs, with the pixel count read from the header before any pixel is decoded.

    The one check for every image that crosses a trust boundary: provider responses here, and the
    caller's input images for edits (:mod:`pixelroute._edit`). Raises :class:`UnsafeImage`;
    ``what`` names the bytes in its text ("response", "input").
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size  # read from the header, before any pixel is decoded
            if width * height > max_pixels:
                raise UnsafeImage(f"image of {width}x{height} exceeds max_image_pixels={max_pixels}")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnsafeImage("image refused as a decompression bomb") from exc
    except UnidentifiedImageError as exc:
        raise UnsafeImage(f"{what} is not an image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, UnsafeImage):
            raise
        raise UnsafeImage(f"image is truncated or corrupt ({type(exc).__name__})") from exc
    return image


def decode_image(data: bytes, max_pixels: int, backend: str) -> Any:
    """Decode untrusted response bytes (see :func:`open_untrusted_image`); refusals are ``InvalidOutput``."""
    try:
        return open_untrusted_image(data, max_pixels)
    except UnsafeImage as exc:
        raise InvalidOutput(f"backend `{backend}`: {exc.why}", backend=backend) from exc.__cause__


def host_matches(host: str, pattern: str) -> bool:
    """``host`` is ``pattern``, or under it when ``pattern`` is ``*.domain``."""
    pattern = pattern.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def resolve_sync(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (blocking DNS)."""
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except OSError as exc:
        raise InvalidOutput(f"result URL host `{host}` does not resolve") from exc


async def resolve_async(host: str, port: int) -> list[str]:
    """The async twin of :func:`resolve_sync` (the event loop's resolver)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidOutput(f"result URL host `{host}` does not resolve") from exc
    return [str(info[4][0]) for info in infos]


def pin_address(url: httpx.URL, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """``url`` sent to the checked ``address``: the URL, extra headers and request extensions.

    The connection goes to the address; ``Host`` keeps the name for the server and ``sni_hostname``
    keeps it for TLS, so the certificate is still verified against the name (httpx's and
    httpx-aiohttp's transports both honour that extension).
    """
    if "%" in address:  # a scoped link-local address (only allowed in tests): let the transport resolve
        return url, {}, {}
    host = url.host
    extensions: dict[str, Any] = {"sni_hostname": host} if url.scheme == "https" else {}
    return url.copy_with(host=address), {"Host": url.netloc.decode("ascii")}, extensions


def url_for_message(url: str) -> str:
    """``url`` without its query string, redacted, for error messages."""
    # signed result URLs carry credentials in the query string: never show it
    return redact(url.split("?", 1)[0])
