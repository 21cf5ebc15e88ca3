"""Who may open the reviewer page: an admin key (never a tenant key), sent as a Bearer token
by scripts, or once through the login form by a browser, which then holds a session cookie.

The cookie is `EXPIRES.MAC`, MAC = HMAC-SHA256(SHA-256(admin key), EXPIRES): no server-side
session state, valid in every worker and replica that has the key, and void once the key is
removed from the config.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from starlette.requests import Request

from guardproxy.errors import ConfigError
from guardproxy.policy.model import PolicySet, key_digest

COOKIE = "guardproxy_admin"


@dataclass(frozen=True)
class AdminKeys:
    digests: tuple[bytes, ...]
    session_s: float

    @classmethod
    def of(cls, keys: tuple[str, ...], session_hours: float, tenants: PolicySet) -> AdminKeys:
        digests = tuple(key_digest(key) for key in keys)
        if any(digest in tenants.by_key for digest in digests):
            raise ConfigError("an admin key is also a tenant key; give the reviewer page its own")
        return cls(digests, session_hours * 3600)

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def accepts(self, key: str) -> bytes | None:
        """The digest of `key` if it is an admin key (compared in constant time)."""
        offered = hashlib.sha256(key.encode()).digest()
        found = [d for d in self.digests if hmac.compare_digest(d, offered)]
        return found[0] if found else None

    def session(self, digest: bytes, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.session_s)
        return f"{expires}.{_mac(digest, expires)}"

    def admits(self, request: Request, now: float | None = None) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self.accepts(token.strip()) is not None
        return self._valid_session(request.cookies.get(COOKIE, ""), now or time.time())

    def _valid_session(self, cookie: str, now: float) -> bool:
        expires, _, mac = cookie.partition(".")
        if not expires.isdigit() or int(expires) < now:
            return False
        return any(hmac.compare_digest(_mac(d, int(expires)), mac) for d in self.digests)


def _mac(digest: bytes, expires: int) -> str:
    return hmac.new(digest, str(expires).encode(), hashlib.sha256).hexdigest()
