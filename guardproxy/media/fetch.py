"""Getting the bytes behind an image or video URL without opening an SSRF hole.

A fetch checks the URL (scheme, credentials, host allowlist), and the connection itself goes
through `PinnedBackend`: the host is resolved once, every answer is checked, and the socket is
opened to a checked address, so a second DNS answer cannot slip in between check and use (DNS
rebinding). TLS still sends the host name for SNI and certificate checks. Redirects are
followed by hand, and every hop passes the same checks (vLLM CVE-2025-6242, issue #57157).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import anyio
import httpcore
import httpx

from guardproxy.media.addresses import (
    IPAddress,
    address_kind,
    is_allowed_host,
    is_public_address,
    is_valid_host,
    parse_ip,
)
from guardproxy.media.errors import MediaError
from guardproxy.media.settings import ImagesSettings

logger = logging.getLogger(__name__)

MediaKind = Literal["image", "video"]
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
AddressPolicy = Callable[[IPAddress], bool]

# Compressed transfer encodings would let a small body inflate past the byte cap inside one
# chunk; images and video are compressed already, so ask for the bytes as they are.
REQUEST_HEADERS = {"accept": "image/*, video/*", "accept-encoding": "identity"}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ISO_BMFF_BRANDS_AT = 4  # ISO/IEC 14496-12: a box size, then "ftyp"
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"%PDF-", "application/pdf"),
)
RIFF_TYPES = {b"WEBP": "image/webp", b"AVI ": "video/x-msvideo"}
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
# httpx's default pool limits.
MAX_CONNECTIONS = 100
MAX_KEEPALIVE_CONNECTIONS = 20
KEEPALIVE_EXPIRY_S = 5.0


@dataclass(frozen=True)
class FetchedMedia:
    """Bytes of a media part, with the type read from its magic bytes, never a header."""

    data: bytes = field(repr=False)
    media_type: str | None
    final_url: str | None = None  # None for a data: URL


class BlockedConnection(Exception):
    """A connection the address policy refused; raised inside httpcore, so httpx passes it on."""


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver returns for `host`."""
    loop = asyncio.get_running_loop()
    answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ip for *_, sockaddr in answers if (ip := parse_ip(str(sockaddr[0]))) is not None]


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolve once, refuse if any answer is not allowed, then dial the checked address."""

    def __init__(self, resolver: Resolver, address_allowed: AddressPolicy) -> None:
        self._resolver = resolver
        self._address_allowed = address_allowed
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with anyio.fail_after(timeout):
            addresses = await self._checked_addresses(host, port)
        error: httpcore.ConnectError | None = None
        for ip in addresses:  # all checked: trying the next one on failure is safe
            try:
                return await self._backend.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host!r}")

    async def _checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        literal = parse_ip(host)
        # One answer for a name that does not resolve and one that resolves inside: the
        # client learns nothing of the internal DNS. The address goes to the log.
        refused = f"host {host!r} does not resolve to a public address"
        try:
            addresses = [literal] if literal is not None else await self._resolver(host, port)
        except OSError as exc:
            logger.info("image host %r does not resolve: %s", host, exc)
            raise BlockedConnection(refused) from exc
        if not addresses:
            raise BlockedConnection(refused)
        for ip in addresses:
            if not self._address_allowed(ip):
                kind = address_kind(ip) or "disallowed"
                logger.info("image host %r resolves to a %s address (%s)", host, kind, ip)
                raise BlockedConnection(refused)
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedConnection("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a `PinnedBackend` (httpx takes no network backend argument)."""

    def __init__(self, backend: PinnedBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
            network_backend=backend,
        )


class ImageFetcher:
    """Fetches image and video URLs under `ImagesSettings`; long-lived, close with `aclose()`.

    `resolver` and `address_allowed` exist for tests: the production rules stay on while a
    test host name points at a loopback server.
    """

    def __init__(
        self,
        resolver: Resolver = system_resolver,
        address_allowed: AddressPolicy = is_public_address,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._address_allowed = address_allowed
        context = ssl_context or httpx.create_ssl_context()
        transport = PinnedTransport(PinnedBackend(resolver, address_allowed), context)
        # trust_env=False: an HTTP(S)_PROXY variable would connect somewhere unchecked.
        self._client = httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False
        )

    async def __aenter__(self) -> ImageFetcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(
        self, url: str, part: str, settings: ImagesSettings, max_bytes: int | None = None
    ) -> FetchedMedia:
        """GET `url` under every rule; `fetch_timeout_s` bounds the whole fetch, redirects too."""
        limit = settings.max_bytes if max_bytes is None else max_bytes
        target = self._checked_url(url, part, settings)
        try:
            async with asyncio.timeout(settings.fetch_timeout_s):
                return await self._follow(target, part, settings, limit)
        except (TimeoutError, httpx.TimeoutException) as exc:
            reason = f"fetching from host {target.host!r} took over {settings.fetch_timeout_s} s"
            raise MediaError(part, reason) from exc

    async def _follow(
        self, target: httpx.URL, part: str, settings: ImagesSettings, limit: int
    ) -> FetchedMedia:
        seen = {target}
        for _ in range(settings.max_redirects + 1):
            result = await self._get(target, part, settings, limit)
            if isinstance(result, FetchedMedia):
                return result
            target = self._checked_url(str(result), part, settings)
            if target in seen:
                raise MediaError(part, f"redirect loop at host {target.host!r}")
            seen.add(target)
        raise MediaError(part, f"more than {settings.max_redirects} redirects")

    async def _get(
        self, url: httpx.URL, part: str, settings: ImagesSettings, limit: int
    ) -> FetchedMedia | httpx.URL:
        timeout = httpx.Timeout(settings.fetch_timeout_s)
        try:
            async with self._client.stream(
                "GET", url, headers=REQUEST_HEADERS, timeout=timeout
            ) as response:
                return await _read_response(response, part, limit)
        except BlockedConnection as exc:
            raise MediaError(part, str(exc)) from exc
        except httpx.TimeoutException:
            raise
        except httpx.HTTPError as exc:
            logger.info("fetching from image host %r failed: %r", url.host, exc)
            reason = f"fetching from host {url.host!r} failed ({type(exc).__name__})"
            raise MediaError(part, reason) from exc

    def _checked_url(self, raw: str, part: str, settings: ImagesSettings) -> httpx.URL:
        try:
            url = httpx.URL(raw).copy_with(fragment=None)
        except httpx.InvalidURL as exc:
            raise MediaError(part, f"not a valid URL ({exc})") from exc
        reason = _url_problem(url, settings)
        if (
            reason is None
            and (ip := parse_ip(url.host)) is not None
            and not self._address_allowed(ip)
        ):
            reason = f"{address_kind(ip) or 'disallowed'} address {ip} is not allowed"
        if reason is not None:
            raise MediaError(part, reason)
        return url


def _url_problem(url: httpx.URL, settings: ImagesSettings) -> str | None:
    schemes = ("https", "http") if settings.allow_http else ("https",)
    if url.scheme not in schemes:
        return f"scheme {url.scheme!r} is not allowed (use {' or '.join(schemes)})"
    if url.userinfo:
        return "URLs with user credentials are not allowed"
    if not is_valid_host(url.host):
        return f"host {url.host!r} is not a valid host name"
    if not is_allowed_host(url.host, settings.allowed_hosts):
        return f"host {url.host!r} is not in allowed_hosts"
    return None


async def _read_response(
    response: httpx.Response, part: str, limit: int
) -> FetchedMedia | httpx.URL:
    host = response.url.host
    if response.status_code in REDIRECT_STATUSES:
        location = response.headers.get("location")
        if not location:
            raise MediaError(part, f"host {host!r} redirected without a Location")
        return response.url.join(location)
    if response.status_code != 200:
        raise MediaError(part, f"host {host!r} answered HTTP {response.status_code}")
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise MediaError(part, f"host {host!r} sent a {encoding!r}-encoded body")
    data = await _read_capped(response, part, limit)
    return FetchedMedia(data, sniff_media_type(data), str(response.url))


async def _read_capped(response: httpx.Response, part: str, limit: int) -> bytes:
    # Content-Length only serves to fail early; the count of bytes received is what is enforced.
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise MediaError(part, f"body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > limit:
            raise MediaError(part, f"body is over the limit of {limit} bytes")
    return bytes(body)


async def load_media(
    url: str,
    part: str,
    settings: ImagesSettings,
    fetcher: ImageFetcher,
    kind: MediaKind,
    max_bytes: int,
) -> FetchedMedia:
    """The bytes of a `data:` URL, or of an http(s) URL fetched under `settings`."""
    if url[:5].lower() == "data:":
        data = decode_data_url(url, part, max_bytes, kind)
        return FetchedMedia(data, sniff_media_type(data))
    if not settings.allow_urls:
        raise MediaError(part, f"{kind} URLs are not allowed; send a base64 data: URL")
    return await fetcher.fetch(url, part, settings, max_bytes)


def decode_data_url(url: str, part: str, max_bytes: int, kind: MediaKind = "image") -> bytes:
    """Bytes of a base64 `data:` URL (RFC 2397) of media type `kind`/*, at most `max_bytes`."""
    scheme, _, rest = url.partition(":")
    header, comma, payload = rest.partition(",")
    if scheme.lower() != "data" or not comma:
        raise MediaError(part, "malformed data: URL")
    media_type, *params = header.split(";")
    if not media_type.lower().startswith(f"{kind}/"):
        raise MediaError(part, f"data: URL media type {media_type!r} is not {kind}/*")
    if not params or params[-1].lower() != "base64":
        raise MediaError(part, "data: URL is not base64-encoded")
    if len(payload) > 4 * -(-max_bytes // 3):
        raise MediaError(part, f"data: URL is over the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(part, f"data: URL has invalid base64 ({exc})") from exc
    if len(data) > max_bytes:
        raise MediaError(part, f"data: URL is over the limit of {max_bytes} bytes")
    return data


def sniff_media_type(data: bytes) -> str | None:
    """The media type from the leading magic bytes; None when unknown."""
    head = data[:64]
    for magic, media_type in MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] in RIFF_TYPES:
        return RIFF_TYPES[head[8:12]]
    if head[ISO_BMFF_BRANDS_AT : ISO_BMFF_BRANDS_AT + 4] == b"ftyp":
        return "video/mp4"
    if head.startswith(EBML_MAGIC):
        return "video/webm" if b"webm" in head else "video/x-matroska"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return "text/xml"  # SVG, HTML: markup is never decoded as an image
    return None
