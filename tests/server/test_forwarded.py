"""The client address the audit record names: the peer, or what trusted proxies forwarded."""

from __future__ import annotations

import pytest
from pydantic import IPvAnyNetwork, TypeAdapter

from guardproxy.server.forwarded import client_address

NETWORKS = TypeAdapter(tuple[IPvAnyNetwork, ...])
LB = NETWORKS.validate_python(["10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        ("203.0.113.7", ["198.51.100.1"], (), "203.0.113.7"),  # trust none by default
        ("203.0.113.7", ["198.51.100.1"], LB, "203.0.113.7"),  # an untrusted peer's header
        ("10.0.0.2", ["198.51.100.1"], LB, "198.51.100.1"),
        ("10.0.0.2", ["198.51.100.1, 10.0.0.9"], LB, "198.51.100.1"),  # a chain of two
        ("10.0.0.2", ["1.2.3.4, 198.51.100.1"], LB, "198.51.100.1"),  # a spoofed left part
        ("10.0.0.2", ["1.2.3.4", "198.51.100.1"], LB, "198.51.100.1"),  # two header lines
        ("10.0.0.2", ["10.0.0.5, 10.0.0.9"], LB, "10.0.0.5"),  # all inside: the first
        ("10.0.0.2", [], LB, "10.0.0.2"),  # no header: the proxy itself
        ("10.0.0.2", ["unknown"], LB, "unknown"),  # not an address: nobody vouches for it
        ("::ffff:10.0.0.2", ["198.51.100.1"], LB, "198.51.100.1"),  # a dual-stack socket
        ("2001:db8::1", ["2001:db8::5, 2a00::1"], LB, "2a00::1"),
        (None, ["198.51.100.1"], LB, None),  # no socket (an in-process test client)
    ],
)
def test_the_nearest_untrusted_address_is_the_client(
    peer: str | None, forwarded: list[str], trusted: tuple[IPvAnyNetwork, ...], client: str | None
) -> None:
    assert client_address(peer, forwarded, trusted) == client
