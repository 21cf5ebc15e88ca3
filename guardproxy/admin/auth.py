"""Who may open the reviewer page: an admin key (never a tenant key), sent as a Bearer token
by scripts, or once through the login form by a browser, which then holds a session that the
server keeps (sessions.py). Failed logins are limited per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from guardproxy.admin.sessions import Session, SessionStore, new_token, token_sha256
from guardproxy.errors import ConfigError
from guardproxy.policy.model import PolicySet, key_digest

COOKIE = "guardproxy_admin"
# Failed logins one client address may make in a window; past it, 429 until the window moves.
MAX_FAILED_LOGINS = 5
FAILED_LOGIN_WINDOW_S = 300.0
MAX_TRACKED_ADDRESSES = 10_000


@dataclass(frozen=True)
class AdminKeys:
    digests: tuple[bytes, ...]
    session_s: float

    @classmethod
    def of(cls, keys: tuple[str, ...], session_hours: float, tenants: PolicySet) -> AdminKeys:
        digests = tuple(key_digest(key) for key in keys)
        if shares_a_key(digests, tenants):
            raise ConfigError("an admin key is also a tenant key; give the reviewer page its own")
        return cls(digests, session_hours * 3600)

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def accepts(self, key: str) -> bytes | None:
        """The digest of `key` if it is an admin key (compared in constant time)."""
        offered = hashlib.sha256(key.encode("utf-8", "replace")).digest()
        found = [d for d in self.digests if hmac.compare_digest(d, offered)]
        return found[0] if found else None

    def bearer(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.accepts(token.strip()) is not None


def shares_a_key(digests: tuple[bytes, ...], tenants: PolicySet) -> bool:
    return any(digest in tenants.by_key for digest in digests)


@dataclass
class AdminAccess:
    """Admin keys and browser sessions. `store` gives the audit database's session store
    once the lifespan has opened it, else the process's own."""

    keys: AdminKeys
    store: Callable[[], SessionStore]

    async def open(self, digest: bytes, now: float | None = None) -> str:
        """A new session for the admin key with `digest`: the token for the cookie."""
        token = new_token()
        expires = (now or time.time()) + self.keys.session_s
        await self.store().put(token_sha256(token), Session(digest.hex(), expires))
        return token

    async def admits(self, request: Request, now: float | None = None) -> bool:
        if "authorization" in request.headers:
            return self.keys.bearer(request)
        token = request.cookies.get(COOKIE, "")
        if not token:
            return False
        session = await self.store().get(token_sha256(token))
        now = now or time.time()
        return (
            session is not None
            and now < session.expires <= now + self.keys.session_s
            and bytes.fromhex(session.key_sha256) in self.keys.digests  # a removed key: void
        )

    async def close(self, request: Request) -> None:
        token = request.cookies.get(COOKIE, "")
        if token:
            await self.store().drop(token_sha256(token))


@dataclass
class LoginThrottle:
    """At most `MAX_FAILED_LOGINS` failed logins per client address in the window."""

    failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, address: str, now: float | None = None) -> int | None:
        """Seconds until `address` may try again, or None if it may now."""
        now = now or time.time()
        recent = self._recent(address, now)
        if len(recent) < MAX_FAILED_LOGINS:
            return None
        return max(int(recent[0] + FAILED_LOGIN_WINDOW_S - now) + 1, 1)

    def failed(self, address: str, now: float | None = None) -> None:
        now = now or time.time()
        if address not in self.failures and len(self.failures) >= MAX_TRACKED_ADDRESSES:
            self._forget_idle(now)
        self._recent(address, now).append(now)

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)

    def _recent(self, address: str, now: float) -> deque[float]:
        recent = self.failures.setdefault(address, deque(maxlen=MAX_FAILED_LOGINS))
        while recent and recent[0] <= now - FAILED_LOGIN_WINDOW_S:
            recent.popleft()
        return recent

    def _forget_idle(self, now: float) -> None:
        cutoff = now - FAILED_LOGIN_WINDOW_S
        self.failures = {a: t for a, t in self.failures.items() if t and t[-1] > cutoff}
        if len(self.failures) >= MAX_TRACKED_ADDRESSES:
            self.failures.clear()  # under a flood of addresses, forget rather than grow
