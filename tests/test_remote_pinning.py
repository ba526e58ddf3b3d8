"""Result downloads connect to the address that passed the SSRF check, not to a second DNS answer.

The result host here is a name no resolver on this machine knows (``*.pixelroute.test``); the
tests stand in for DNS with the address of a real local server. A download that resolved the
name again when connecting would fail, so success proves the checked address was used; the
server sees the name in ``Host``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from pixelroute._deadline import Deadline
from pixelroute._errors import BackendError, InvalidOutput
from pixelroute._types import GenerateRequest
from pixelroute.backends import _http, create_backend, settings_model
from pixelroute.backends._http import RemoteBackend
from pixelroute.backends._http_safety import pin_address
from tests.fakeservers import FakeServer
from tests.fakeservers._server import Recorded, Response
from tests.fakeservers.providers import PNG

RESULT_HOST = "files.pixelroute.test"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as srv:
        yield srv


class StandInDns:
    """Answers every lookup with ``addresses`` and counts the lookups, sync and async."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, addresses: list[str]) -> None:
        self.lookups: list[str] = []

        def lookup(host: str, port: int) -> list[str]:
            self.lookups.append(host)
            return list(addresses)

        async def alookup(host: str, port: int) -> list[str]:
            return lookup(host, port)

        monkeypatch.setattr(_http, "_resolve_sync", lookup)
        monkeypatch.setattr(_http, "_resolve_async", alookup)


def ideogram_with_result_host(server: FakeServer, **settings: Any) -> RemoteBackend:
    port = server.url.rsplit(":", 1)[1]

    def generate(req: Recorded) -> Response:
        item = {"url": f"http://{RESULT_HOST}:{port}/files/out-0.png", "is_image_safe": True, "seed": 1,
                "resolution": "1024x1024", "prompt": "p"}
        return Response(json={"created": "t", "data": [item]})

    server.route("POST", "/generate", generate)
    server.route("GET", "/files/{name}", lambda req: Response(body=PNG, content_type="image/png"))
    options: dict[str, Any] = dict(base_url=server.url, api_key_env=None, allowed_download_hosts=[RESULT_HOST],
                                   allow_private_download_hosts=True)
    options.update(settings)
    be = create_backend(settings_model("ideogram")(name="ideogram-pin", kind="ideogram", **options))
    assert isinstance(be, RemoteBackend)
    return be


def generate(be: RemoteBackend, mode: str) -> Any:
    """One generate in ``mode``: sync, or async on httpx's own transport or on aiohttp's."""
    if mode != "sync":
        transport = "httpx" if mode == "async" else "aiohttp"
        be = create_backend(be.settings.model_copy(update={"async_transport": transport}))  # type: ignore[assignment]
    return run_mode(be, mode)


@pytest.mark.parametrize("mode", ["sync", "async", "aiohttp"])
def test_download_connects_to_the_checked_address(server: FakeServer, monkeypatch: pytest.MonkeyPatch,
                                                  mode: str) -> None:
    if mode == "aiohttp":
        pytest.importorskip("httpx_aiohttp")
    dns = StandInDns(monkeypatch, ["127.0.0.1"])
    out = generate(ideogram_with_result_host(server), mode)
    assert out.images[0].size == (8, 8)
    assert dns.lookups == [RESULT_HOST]  # one lookup: the one that was checked
    download = [r for r in server.requests if r.method == "GET"]
    assert len(download) == 1 and download[0].headers["host"] == f"{RESULT_HOST}:{server.url.rsplit(':', 1)[1]}"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_private_answer_is_refused_before_any_connection(server: FakeServer, monkeypatch: pytest.MonkeyPatch,
                                                          mode: str) -> None:
    StandInDns(monkeypatch, ["93.184.216.34", "10.1.2.3"])  # one private address among public ones is enough
    with pytest.raises(InvalidOutput, match="private or loopback"):
        generate(ideogram_with_result_host(server, allow_private_download_hosts=False), mode)
    assert server.count("GET") == 0


def test_pinned_url_keeps_the_name_for_host_and_tls() -> None:
    url = httpx.URL("https://cdn.example.com/out.png?sig=s3cr3t")
    pinned, headers, extensions = pin_address(url, "93.184.216.34")
    assert str(pinned) == "https://93.184.216.34/out.png?sig=s3cr3t"
    assert headers == {"Host": "cdn.example.com"} and extensions == {"sni_hostname": "cdn.example.com"}

    pinned, headers, extensions = pin_address(httpx.URL("https://cdn.example.com:8443/a.png"), "2606:2800:220:1::1")
    assert str(pinned) == "https://[2606:2800:220:1::1]:8443/a.png"
    assert headers == {"Host": "cdn.example.com:8443"} and extensions == {"sni_hostname": "cdn.example.com"}

    pinned, headers, extensions = pin_address(httpx.URL("http://files.test:8000/a.png"), "127.0.0.1")
    assert str(pinned) == "http://127.0.0.1:8000/a.png" and extensions == {}  # no TLS, no SNI


# -- TLS: the certificate is still checked against the name, not the address -------------------


class _Image(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


@pytest.fixture
def ca() -> Any:
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


def https_image_server(ca: Any, cert_name: str) -> tuple[ThreadingHTTPServer, int]:
    """An https server on 127.0.0.1 whose certificate (issued by ``ca``) names ``cert_name``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(cert_name).configure_cert(context)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Image)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def tls_backend(server: FakeServer, ca: Any, port: int, mode: str) -> RemoteBackend:
    """An ideogram backend whose result URL is https://RESULT_HOST:port, trusting only ``ca``."""
    def generate(req: Recorded) -> Response:
        item = {"url": f"https://{RESULT_HOST}:{port}/files/out-0.png", "is_image_safe": True, "seed": 1}
        return Response(json={"created": "t", "data": [item]})

    server.route("POST", "/generate", generate)
    verify = ssl.create_default_context()
    ca.configure_trust(verify)
    transport: dict[str, Any]
    if mode == "sync":
        transport = {"transport": httpx.HTTPTransport(verify=verify)}
    elif mode == "async":
        transport = {"async_transport": httpx.AsyncHTTPTransport(verify=verify)}
    else:
        aiohttp_transport = pytest.importorskip("httpx_aiohttp").AiohttpTransport
        transport = {"async_transport": aiohttp_transport(verify=verify)}
    settings = settings_model("ideogram")(name="ideogram-tls", kind="ideogram", base_url=server.url, api_key_env=None,
                                          allowed_download_hosts=[RESULT_HOST], allow_private_download_hosts=True,
                                          max_retries=0)
    be = create_backend(settings, **transport)
    assert isinstance(be, RemoteBackend)
    return be


def run_mode(be: RemoteBackend, mode: str) -> Any:
    request = GenerateRequest(prompt="a poster")
    if mode == "sync":
        try:
            return be.generate(request, Deadline(5))
        finally:
            be.close()

    async def go() -> Any:
        try:
            return await be.agenerate(request, Deadline(5))
        finally:
            await be.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["sync", "async", "aiohttp"])
def test_pinned_https_download_verifies_the_certificate_against_the_name(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch, ca: Any, mode: str) -> None:
    StandInDns(monkeypatch, ["127.0.0.1"])
    httpd, port = https_image_server(ca, RESULT_HOST)
    try:
        out = run_mode(tls_backend(server, ca, port, mode), mode)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert out.images[0].size == (8, 8)


@pytest.mark.parametrize("mode", ["sync", "async", "aiohttp"])
def test_pinned_https_download_refuses_a_certificate_for_another_name(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch, ca: Any, mode: str) -> None:
    StandInDns(monkeypatch, ["127.0.0.1"])
    httpd, port = https_image_server(ca, "elsewhere.pixelroute.test")
    try:
        with pytest.raises(BackendError) as err:
            run_mode(tls_backend(server, ca, port, mode), mode)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not isinstance(err.value, InvalidOutput)  # refused by TLS, not by our URL rules
