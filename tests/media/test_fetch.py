"""Fetching under the SSRF rules, against a real loopback server.

Test host names resolve through an injected resolver; the address policy is the production one,
plus exactly 127.0.0.1 where a test needs to reach its own server.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, ip_address

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from guardproxy.media.addresses import IPAddress, is_public_address
from guardproxy.media.errors import MediaError
from guardproxy.media.fetch import ImageFetcher, decode_data_url, load_media
from guardproxy.media.images import prepare_image
from guardproxy.media.settings import ImagesSettings
from tests.fakes.server import run_in_thread

pytestmark = pytest.mark.anyio

PART = "messages[0].content[1].image_url"
LOOPBACK = IPv4Address("127.0.0.1")
HOSTS = {
    "images.test": ["127.0.0.1"],
    "other.test": ["127.0.0.1"],
    "private.test": ["10.0.0.5"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.216.34", "10.0.0.5"],
}
HTTP = ImagesSettings(allow_http=True)
CHUNK = b"x" * 65536


def png_bytes(size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


class FakeDns:
    """Maps the test host names to addresses and counts lookups."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        if host not in HOSTS:
            raise OSError(f"unknown test host {host}")
        return [ip_address(answer) for answer in HOSTS[host]]


def loopback_or_public(ip: IPAddress) -> bool:
    return ip == LOOPBACK or is_public_address(ip)


async def image(request: Request) -> Response:
    return Response(png_bytes(), media_type="text/plain")  # the header lies; magic bytes rule


async def host_header(request: Request) -> Response:
    return Response(request.headers["host"])


async def redirect(request: Request) -> Response:
    return RedirectResponse(request.query_params["to"], status_code=302)


async def loop(request: Request) -> Response:
    return RedirectResponse("/loop", status_code=301)


async def hops(request: Request) -> Response:
    left = int(request.path_params["left"])
    return RedirectResponse(f"/hops/{left - 1}" if left else "/image.png", status_code=307)


async def endless(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):  # 4 MiB, no Content-Length
            yield CHUNK

    return StreamingResponse(body(), media_type="image/png")


async def missing(request: Request) -> Response:
    return Response("no", status_code=404)


APP = Starlette(
    routes=[
        Route("/image.png", image),
        Route("/host", host_header),
        Route("/redirect", redirect),
        Route("/loop", loop),
        Route("/hops/{left}", hops),
        Route("/endless", endless),
        Route("/missing", missing),
    ]
)


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    with run_in_thread(APP) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture
def dns() -> FakeDns:
    return FakeDns()


@pytest.fixture
async def fetcher(dns: FakeDns) -> AsyncIterator[ImageFetcher]:
    """The test server is reachable; every other non-public address is refused."""
    async with ImageFetcher(resolver=dns, address_allowed=loopback_or_public) as fetcher:
        yield fetcher


@pytest.fixture
async def strict_fetcher(dns: FakeDns) -> AsyncIterator[ImageFetcher]:
    """The production address policy, unchanged."""
    async with ImageFetcher(resolver=dns) as fetcher:
        yield fetcher


@asynccontextmanager
async def raw_server(
    respond: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A TCP server that answers with hand-written bytes, for what uvicorn refuses to send."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            await respond(reader, writer)
        except ConnectionError:
            pass  # the client hung up, as it should once a limit is hit
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def lying_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # RFC 9112 6.3: Transfer-Encoding overrides Content-Length, so the 100 is a lie.
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(64):
        writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
        await writer.drain()
    writer.write(b"0\r\n\r\n")


async def headers_then_silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    await writer.drain()
    await reader.read()  # until the client gives up and closes


async def silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


async def refused(
    fetcher: ImageFetcher, url: str, settings: ImagesSettings = HTTP, max_bytes: int | None = None
) -> MediaError:
    with pytest.raises(MediaError) as caught:
        await fetcher.fetch(url, PART, settings, max_bytes)
    error = caught.value
    assert error.param == PART
    assert error.message.startswith(f"{PART}: ")
    return error


async def test_fetch_connects_to_the_checked_address_and_keeps_the_host_name(
    fetcher: ImageFetcher, dns: FakeDns, server_port: int
) -> None:
    fetched = await fetcher.fetch(f"http://images.test:{server_port}/host", PART, HTTP)
    assert fetched.data == f"images.test:{server_port}".encode()
    assert dns.lookups == ["images.test"]


async def test_media_type_comes_from_magic_bytes_not_the_header(
    fetcher: ImageFetcher, server_port: int
) -> None:
    url = f"http://images.test:{server_port}/image.png"
    fetched = await fetcher.fetch(url, PART, HTTP)
    assert fetched.data == png_bytes()
    assert fetched.media_type == "image/png"
    assert fetched.final_url == url


async def test_redirects_are_followed_by_hand_and_each_hop_resolved(
    fetcher: ImageFetcher, dns: FakeDns, server_port: int
) -> None:
    target = f"http://other.test:{server_port}/image.png"
    url = f"http://images.test:{server_port}/redirect?to={target}"
    fetched = await fetcher.fetch(url, PART, HTTP)
    assert fetched.media_type == "image/png"
    assert fetched.final_url == target
    assert dns.lookups == ["images.test", "other.test"]


async def test_up_to_max_redirects_are_followed(fetcher: ImageFetcher, server_port: int) -> None:
    fetched = await fetcher.fetch(f"http://images.test:{server_port}/hops/2", PART, HTTP)
    assert fetched.media_type == "image/png"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback address 127.0.0.1 is not allowed"),
        ("http://10.1.2.3/", "private address 10.1.2.3 is not allowed"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address 169.254.169.254"),
        ("http://[::ffff:127.0.0.1]/", "loopback address ::ffff:"),  # 7f00:1 before 3.13
        ("http://[::1]:8080/", "loopback address ::1 is not allowed"),
        ("http://private.test/cat.png", "host 'private.test' does not resolve to a public"),
        ("http://metadata.test/", "host 'metadata.test' does not resolve to a public address"),
        ("http://mixed.test/", "host 'mixed.test' does not resolve to a public address"),
        ("http://nowhere.test/", "host 'nowhere.test' does not resolve to a public address"),
    ],
)
async def test_non_public_destinations_are_refused(
    strict_fetcher: ImageFetcher, url: str, reason: str
) -> None:
    error = await refused(strict_fetcher, url)
    assert reason in error.message
    assert "10.0.0.5" not in error.message  # no DNS answer reaches the client


@pytest.mark.parametrize("host", ["localhost", "2130706433", "0x7f.1", "127.1"])
async def test_system_resolver_answers_are_checked_too(host: str) -> None:
    # glibc reads the numeric forms as 127.0.0.1 (inet_aton); another libc may not resolve them.
    async with ImageFetcher() as fetcher:
        error = await refused(fetcher, f"http://{host}/")
    assert "does not resolve to a public address" in error.message


async def test_redirect_to_a_private_address_is_refused(
    fetcher: ImageFetcher, server_port: int
) -> None:
    url = f"http://images.test:{server_port}/redirect?to=http://private.test/x"
    error = await refused(fetcher, url)
    assert "'private.test' does not resolve to a public address" in error.message


async def test_redirect_to_a_literal_metadata_address_is_refused(
    fetcher: ImageFetcher, server_port: int
) -> None:
    url = f"http://images.test:{server_port}/redirect?to=http://169.254.169.254/"
    error = await refused(fetcher, url)
    assert "link-local address 169.254.169.254 is not allowed" in error.message


async def test_redirect_leaving_the_allowlist_is_refused(
    fetcher: ImageFetcher, server_port: int
) -> None:
    settings = ImagesSettings(allow_http=True, allowed_hosts=("images.test",))
    target = f"http://other.test:{server_port}/image.png"
    url = f"http://images.test:{server_port}/redirect?to={target}"
    error = await refused(fetcher, url, settings)
    assert "host 'other.test' is not in allowed_hosts" in error.message


async def test_redirect_loop_is_refused(fetcher: ImageFetcher, server_port: int) -> None:
    error = await refused(fetcher, f"http://images.test:{server_port}/loop")
    assert "redirect loop at host 'images.test'" in error.message


async def test_too_many_redirects_are_refused(fetcher: ImageFetcher, server_port: int) -> None:
    error = await refused(fetcher, f"http://images.test:{server_port}/hops/5")
    assert "more than 3 redirects" in error.message


@pytest.mark.parametrize(
    ("url", "settings", "reason"),
    [
        ("http://images.test/a.png", ImagesSettings(), "scheme 'http' is not allowed (use https)"),
        ("ftp://images.test/a.png", HTTP, "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", HTTP, "scheme 'file' is not allowed"),
        ("https://user:secret@images.test/", HTTP, "URLs with user credentials are not allowed"),
        (
            "https://images.test/a.png",
            ImagesSettings(allowed_hosts=("*.example.org",)),
            "host 'images.test' is not in allowed_hosts",
        ),
        ("https://[zz]/", HTTP, "not a valid URL"),
        ("https://exa mple.org/", HTTP, "host 'exa%20mple.org' is not a valid host name"),
        ("https:///a.png", HTTP, "host '' is not a valid host name"),
    ],
)
async def test_urls_breaking_the_rules_are_refused_before_any_lookup(
    fetcher: ImageFetcher, dns: FakeDns, url: str, settings: ImagesSettings, reason: str
) -> None:
    error = await refused(fetcher, url, settings)
    assert reason in error.message
    assert dns.lookups == []


async def test_body_over_the_cap_with_a_lying_content_length_is_refused(
    fetcher: ImageFetcher,
) -> None:
    async with raw_server(lying_length) as port:
        error = await refused(fetcher, f"http://images.test:{port}/", max_bytes=1_000_000)
    assert "body is over the limit of 1000000 bytes" in error.message


async def test_streamed_body_over_the_cap_is_refused(
    fetcher: ImageFetcher, server_port: int
) -> None:
    url = f"http://images.test:{server_port}/endless"
    error = await refused(fetcher, url, max_bytes=100_000)
    assert "body is over the limit of 100000 bytes" in error.message


async def test_declared_length_over_the_cap_fails_early(
    fetcher: ImageFetcher, server_port: int
) -> None:
    url = f"http://images.test:{server_port}/image.png"
    error = await refused(fetcher, url, max_bytes=10)
    assert "bytes; the limit is 10" in error.message


@pytest.mark.parametrize("respond", [headers_then_silence, silence])
async def test_a_silent_server_times_out(
    fetcher: ImageFetcher,
    respond: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> None:
    settings = ImagesSettings(allow_http=True, fetch_timeout_s=0.2)
    async with raw_server(respond) as port:
        error = await refused(fetcher, f"http://images.test:{port}/", settings)
    assert "fetching from host 'images.test' took over 0.2 s" in error.message


async def test_error_status_is_refused(fetcher: ImageFetcher, server_port: int) -> None:
    error = await refused(fetcher, f"http://images.test:{server_port}/missing")
    assert "host 'images.test' answered HTTP 404" in error.message


async def test_urls_can_be_switched_off(fetcher: ImageFetcher) -> None:
    settings = ImagesSettings(allow_urls=False)
    with pytest.raises(MediaError, match="image URLs are not allowed"):
        await load_media("https://images.test/a.png", PART, settings, fetcher, "image", 100)


async def test_prepare_image_fetches_and_downscales_for_the_guard(
    fetcher: ImageFetcher, server_port: int
) -> None:
    url = f"http://images.test:{server_port}/image.png"
    prepared = await prepare_image(
        url, PART, ImagesSettings(allow_http=True, guard_size=20), fetcher
    )
    assert prepared.original_bytes == png_bytes()
    assert (prepared.width, prepared.height) == (40, 30)
    with Image.open(io.BytesIO(prepared.guard_bytes)) as guard:
        assert guard.size == (20, 15)
    assert prepared.forward_url("original_url") == url


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def test_data_url_decodes_strict_base64() -> None:
    assert decode_data_url(data_url(b"\x89PNG..."), PART, 100) == b"\x89PNG..."


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,iVBORw0K!!!", "invalid base64"),
        ("data:image/png;base64,iVBO\nRw0K", "invalid base64"),
        ("data:image/png;base64,iVBORw0", "invalid base64"),
        ("data:image/png,%89PNG", "not base64-encoded"),
        ("data:text/plain;base64,aGVsbG8=", "media type 'text/plain' is not image/*"),
        ("data:;base64,aGVsbG8=", "media type '' is not image/*"),
        ("data:image/png;base64", "malformed data: URL"),
        (data_url(b"x" * 101), "over the limit of 100 bytes"),
    ],
)
def test_bad_data_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(MediaError, match=reason) as caught:
        decode_data_url(url, PART, 100)
    assert caught.value.param == PART


def test_video_data_urls_need_a_video_media_type() -> None:
    with pytest.raises(MediaError, match="is not video/"):
        decode_data_url(data_url(b"abc"), PART, 100, "video")
