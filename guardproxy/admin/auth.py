"""Who may open the reviewer page: a named reviewer's key (never a tenant key), sent as a
Bearer token by scripts, or once through the login form (or an OpenID Connect sign-in, oidc.py)
by a browser, which then holds a session that the server keeps (sessions.py). Failed logins
are limited per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from guardproxy.admin.reviewers import Directory, Reviewer
from guardproxy.admin.sessions import Session, SessionStore, new_token, token_sha256
from guardproxy.config import OidcSettings

COOKIE = "guardproxy_admin"
# Failed logins one client address may make in a window; past it, 429 until the window moves.
MAX_FAILED_LOGINS = 5
FAILED_LOGIN_WINDOW_S = 300.0
MAX_TRACKED_ADDRESSES = 10_000


def bearer(request: Request, directory: Directory) -> Reviewer | None:
    """The reviewer whose key the request carries as `Authorization: Bearer <key>`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    found = directory.by_key(token.strip()) if scheme.lower() == "bearer" else None
    return found.reviewer if found else None


def provider_sha256(oidc: OidcSettings | None) -> str | None:
    """What an OpenID Connect session records in place of a key: changing the provider (or
    turning it off) ends those sessions, as removing a key ends its own."""
    if oidc is None:
        return None
    return hashlib.sha256(f"oidc {oidc.issuer} {oidc.client_id}".encode()).hexdigest()


@dataclass
class AdminAccess:
    """Reviewers' keys and browser sessions. `store` gives the audit database's session store
    once the lifespan has opened it, else the process's own."""

    directory: Directory
    store: Callable[[], SessionStore]
    provider: str | None = None  # provider_sha256 of the configured OIDC provider

    async def open(self, reviewer: Reviewer, key_sha256: str, now: float | None = None) -> str:
        """A new session for `reviewer`, signed in with the key (or provider) `key_sha256`:
        the token for the cookie."""
        token = new_token()
        expires = (now or time.time()) + self.directory.session_s
        await self.store().put(token_sha256(token), Session(key_sha256, expires, reviewer))
        return token

    async def admits(self, request: Request, now: float | None = None) -> Reviewer | None:
        """Who the request comes from, or None when it is no reviewer (or their session has
        ended, or their user was removed or changed since)."""
        if "authorization" in request.headers:
            return bearer(request, self.directory)
        token = request.cookies.get(COOKIE, "")
        session = await self.store().get(token_sha256(token)) if token else None
        now = now or time.time()
        if session is None or not now < session.expires <= now + self.directory.session_s:
            return None
        return session.reviewer if self._current(session) else None

    def _current(self, session: Session) -> bool:
        who = session.reviewer
        if who is None:
            return False
        if self.provider is not None and hmac.compare_digest(session.key_sha256, self.provider):
            return True
        entry = self.directory.by_name(who.name)
        return (
            entry is not None
            and hmac.compare_digest(entry.digest.hex(), session.key_sha256)
            and entry.reviewer == who
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
