"""The reviewer page's browser sessions, held by the server.

A login gives the browser a random 256-bit token and nothing else: the server keeps the
token's SHA-256, the key it was opened with (by its SHA-256; for an OpenID Connect sign-in,
of the provider), an expiry the server chose, and the reviewer (name, role, tenants). So a
cookie cannot be forged from anything in the config, its lifetime cannot be stretched by the
client, logging out ends it for every worker and replica, and removing or changing a user
(or an admin key) ends their sessions (auth.py). Sessions live in the audit database when
there is one (shared by workers and replicas), else in the process.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from guardproxy.admin.reviewers import Reviewer
from guardproxy.audit.schema import admin_sessions
from guardproxy.config import Role

TOKEN_BYTES = 32
MAX_MEMORY_SESSIONS = 10_000  # a process without a database keeps at most this many


@dataclass(frozen=True, slots=True)
class Session:
    key_sha256: str
    expires: float  # Unix time
    reviewer: Reviewer | None = None  # None: a session from before named reviewers, void

    def row(self) -> dict[str, Any]:
        who = self.reviewer
        return {
            "key_sha256": self.key_sha256,
            "expires": self.expires,
            "user": who and who.name,
            "role": who and who.role,
            "tenants": who and who.tenants and list(who.tenants),
        }

    @classmethod
    def of(cls, row: Any) -> Session:
        reviewer = None
        if row.user and row.role:
            tenants = tuple(row.tenants) if row.tenants else None
            reviewer = Reviewer(row.user, cast(Role, row.role), tenants)
        return cls(row.key_sha256, row.expires, reviewer)


class SessionStore(Protocol):
    async def put(self, token_sha256: str, session: Session) -> None: ...

    async def get(self, token_sha256: str) -> Session | None: ...

    async def drop(self, token_sha256: str) -> None: ...


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_sha256(token: str) -> str:
    """What the server keeps of a token: who reads the store cannot log in with it."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class MemorySessions:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}

    async def put(self, token_sha256: str, session: Session) -> None:
        now = time.time()
        self.sessions = {k: s for k, s in self.sessions.items() if s.expires > now}
        if len(self.sessions) >= MAX_MEMORY_SESSIONS:
            del self.sessions[min(self.sessions, key=lambda k: self.sessions[k].expires)]
        self.sessions[token_sha256] = session

    async def get(self, token_sha256: str) -> Session | None:
        return self.sessions.get(token_sha256)

    async def drop(self, token_sha256: str) -> None:
        self.sessions.pop(token_sha256, None)


class DatabaseSessions:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def put(self, token_sha256: str, session: Session) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(admin_sessions).where(admin_sessions.c.expires <= time.time())
            )
            row = {"token_sha256": token_sha256, **session.row()}
            await connection.execute(insert(admin_sessions), [row])

    async def get(self, token_sha256: str) -> Session | None:
        query = select(admin_sessions).where(admin_sessions.c.token_sha256 == token_sha256)
        async with self.engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else Session.of(row)

    async def drop(self, token_sha256: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(admin_sessions).where(admin_sessions.c.token_sha256 == token_sha256)
            )
