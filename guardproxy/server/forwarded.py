"""Who sent a request: the socket's peer, or, behind proxies the operator trusts, the client
that `X-Forwarded-For` names (MDN and RFC 7239 §5.2 describe the list's order)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from pydantic import IPvAnyNetwork

FORWARDED_FOR = "x-forwarded-for"


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPvAnyNetwork]
) -> str | None:
    """The peer, unless it is a trusted proxy: then the nearest untrusted hop of the chain.

    Each proxy appends the address it received from, so the list is read from the right and
    stops at the first address no trusted proxy stands for: what lies left of it was written by
    the client itself and could be anything. A chain of trusted proxies only gives its first.
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
