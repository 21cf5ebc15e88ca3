"""Who sent a request: the socket's peer, or, behind proxies the operator trusts, the client
that `X-Forwarded-For` names (MDN and RFC 7239 §5.2 describe the list's order).

`trusted_proxies` is the only trust decision. `ForwardedHeaders` applies it once, at the edge
of the apps `guardproxy serve` and `guardproxy admin serve` run, and both run uvicorn with its
own proxy-header handling off: uvicorn trusts 127.0.0.1 and its `FORWARDED_ALLOW_IPS` variable
by default, which would let a client on loopback, or anyone where that variable says `*`,
choose the address the audit record, the access log and the sign-in limit see.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from pydantic import IPvAnyNetwork
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from guardproxy.config import Settings

FORWARDED_FOR = "x-forwarded-for"
FORWARDED_PROTO = "x-forwarded-proto"
SCHEMES = ("http", "https")


class ForwardedHeaders:
    """Behind a trusted proxy, the request's client and scheme become those the proxy
    forwarded; from anyone else, both headers are ignored."""

    def __init__(self, app: ASGIApp, trusted: Sequence[IPvAnyNetwork]) -> None:
        self.app, self.trusted = app, tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client") if scope["type"] == "http" and self.trusted else None
        if peer is not None and _is_trusted(peer[0], self.trusted):
            _apply_forwarded(scope, self.trusted)  # in place, as uvicorn's access log reads it
        await self.app(scope, receive, send)


def forwarded_headers(settings: Settings) -> Middleware:
    """`ForwardedHeaders` on the config's `trusted_proxies`, for an app's middleware list."""
    return Middleware(ForwardedHeaders, trusted=settings.trusted_proxies)


def _apply_forwarded(scope: Scope, trusted: Sequence[IPvAnyNetwork]) -> None:
    headers = Headers(scope=scope)
    peer = scope["client"][0]
    client = client_address(peer, headers.getlist(FORWARDED_FOR), trusted)
    if client != peer:
        scope["client"] = (client, 0)  # the forwarded hop's port is not known
    protos = headers.getlist(FORWARDED_PROTO)  # the last line is the trusted proxy's own
    proto = protos[-1].strip().lower() if protos else ""
    if proto in SCHEMES:
        scope["scheme"] = proto


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPvAnyNetwork]
) -> str | None:
    """The peer, unless it is a trusted proxy: then the nearest untrusted hop of the chain.

    Each proxy appends the address it received from, so the list is read from the right and
    stops at the first address no trusted proxy stands for: what lies left of it was written by
    the client itself and could be anything. A chain of trusted proxies only gives its first.
    Applied to its own answer it gives the same answer again.
    """
    if peer is None or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _is_trusted(address: str, trusted: Sequence[IPvAnyNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # a name or garbage: nobody vouches for it
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return any(ip in network for network in trusted)
