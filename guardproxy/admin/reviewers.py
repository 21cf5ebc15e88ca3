"""Who is looking: one `Reviewer` per request, on `request.state.reviewer`, set by the admission
wrapper (site.py) from a key, a session or an OpenID Connect sign-in.

Roles are ordered: a `viewer` reads decisions and counts but no content (prompt and answer
text, the content document, reasoning traces); a `reviewer` also reads content and labels; an
`admin` may do everything (the playground, policy views, the access log). Every route names
the least role it needs (`site.py`); what a viewer may not read is taken out here, in
`Reviewer.shown`, and nowhere else. A reviewer with `tenants` sees only those tenants'
decisions: the decisions query is narrowed by `Reviewer.scope`, and a single decision outside
it is answered as missing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, get_args

from starlette.requests import Request

from guardproxy.config import AdminSettings, Role
from guardproxy.errors import ConfigError
from guardproxy.policy.model import PolicySet, key_digest

RANKS = {role: rank for rank, role in enumerate(get_args(Role))}  # viewer < reviewer < admin
# What a viewer may not read, at any depth of a decision row (its columns, its audit record
# and its shadow decision): stored content, guard reasoning traces, and text of any kind.
CONTENT_KEYS = frozenset({"content", "reasoning", "prompt", "response", "text", "received_text"})


@dataclass(frozen=True, slots=True)
class Reviewer:
    name: str
    role: Role
    tenants: tuple[str, ...] | None = None  # None: every tenant

    def may(self, role: Role) -> bool:
        """Whether this reviewer holds `role` or a higher one."""
        return RANKS[self.role] >= RANKS[role]

    def sees(self, tenant: str | None) -> bool:
        return self.tenants is None or (tenant is not None and tenant in self.tenants)

    @property
    def scope(self) -> tuple[str, ...] | None:
        """The tenants a decisions query is narrowed to (None: not narrowed)."""
        return self.tenants

    def shown(self, row: dict[str, Any]) -> dict[str, Any]:
        """A decision (row, record or API body) as this reviewer may read it: for a viewer,
        every content field is None."""
        return row if self.may("reviewer") else _without_content(row)


def reviewer_of(request: Request) -> Reviewer:
    """Who a route admitted by the admission wrapper (site.py) serves."""
    reviewer: Reviewer = request.state.reviewer
    return reviewer


def _without_content(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: None if k in CONTENT_KEYS else _without_content(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_content(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class Keyed:
    """A reviewer who signs in with a key, and the key's SHA-256."""

    reviewer: Reviewer
    digest: bytes


@dataclass(frozen=True)
class Directory:
    """The reviewers of `admin.users` and `admin.keys`, found by key in constant time."""

    keyed: tuple[Keyed, ...]
    session_s: float

    @classmethod
    def named(cls, settings: AdminSettings) -> Directory:
        keyed = tuple(
            Keyed(Reviewer(user.name, user.role, user.tenants), key_digest(user.key))
            for user in settings.named_users()
        )
        return cls(keyed, settings.session_hours * 3600)

    @classmethod
    def of(cls, settings: AdminSettings, tenants: PolicySet) -> Directory:
        """The directory, refused when a reviewer's key is also a tenant's."""
        directory = cls.named(settings)
        if any(entry.digest in tenants.by_key for entry in directory.keyed):
            raise ConfigError("an admin key is also a tenant key; give the reviewer page its own")
        return directory

    def by_key(self, key: str) -> Keyed | None:
        """The reviewer whose key is `key` (every entry is compared: no early exit)."""
        offered = hashlib.sha256(key.encode("utf-8", "replace")).digest()
        found = [entry for entry in self.keyed if hmac.compare_digest(entry.digest, offered)]
        return found[0] if found else None

    def by_name(self, name: str) -> Keyed | None:
        return next((entry for entry in self.keyed if entry.reviewer.name == name), None)
