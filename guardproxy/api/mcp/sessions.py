"""A server's session id as the client holds it: sealed to the proxy key that opened it.

Every tenant reaches a server with the same configured credentials, so the server cannot tell
one tenant's session from another's. The gateway hands the client `SESSION.MAC`, where MAC is
an HMAC of the server's name and session keyed by a digest of the client's own Authorization
header, and opens it on the way back: a session id that another key opened, or that the
client made up, is a session the server does not have (404, as the protocol answers for an
ended one). Nothing is stored, so every worker and replica opens what any other sealed.
"""

from __future__ import annotations

import hashlib
import hmac

from guardproxy.api.mcp.jsonrpc import INVALID_REQUEST, McpProblem

MAC_HEX = 32  # 128 bits of HMAC-SHA-256


class SessionSeal:
    def __init__(self, authorization: str, server: str) -> None:
        self._key = hashlib.sha256(authorization.encode()).digest()
        self._server = server

    def seal(self, session: str) -> str:
        return f"{session}.{self._mac(session)}"

    def open(self, sealed: str) -> str:
        """The server's session id, or a 404 for one this key did not open."""
        session, _, mac = sealed.rpartition(".")
        if not session or not hmac.compare_digest(mac, self._mac(session)):
            raise McpProblem(404, INVALID_REQUEST, "Session not found.")
        return session

    def _mac(self, session: str) -> str:
        message = f"{self._server}\0{session}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:MAC_HEX]
