"""The verdict cache: a definite verdict, keyed by the exact guard request that produced it.

The key is the SHA-256 of the guard's URL and the request body (model, messages, image bytes
as data URLs, the policy text in its kwargs, sampling), so a changed policy, guard, protocol,
direction or content is a different key, and a reload can never serve a stale verdict. Errors
are never cached. Bounded: least recently used entries go first, and every entry expires.

With `cache: {redis: URL}` a second tier is shared by every replica: a miss here asks Redis,
and a verdict judged here is written there too. Redis is a cache, never a dependency: when it
is slow or down, the call is logged, counted and skipped, and the guard is asked instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import asdict, replace
from typing import Any, Protocol

from cachetools import TTLCache

from guardproxy.config import CacheSettings
from guardproxy.core.verdict import Safety, Verdict
from guardproxy.errors import ConfigError

logger = logging.getLogger(__name__)
REDIS_PREFIX = "guardproxy:verdict:"


class SharedTier(Protocol):
    """Where replicas share verdicts: raw bytes by key, with an expiry."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def aclose(self) -> None: ...


class VerdictCache:
    def __init__(self, settings: CacheSettings, shared: SharedTier | None = None) -> None:
        self._entries: TTLCache[bytes, Verdict] = TTLCache(settings.size, settings.ttl_s)
        self._ttl_s = settings.ttl_s
        self._timeout_s = settings.redis_timeout_s
        self._shared = shared
        self.hits = 0
        self.shared_hits = 0
        self.misses = 0
        self.shared_errors = 0

    @property
    def size(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(url: str, body: dict[str, Any]) -> bytes:
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(f"{url}\n{canonical}".encode()).digest()

    async def get(self, key: bytes) -> Verdict | None:
        verdict = self._entries.get(key)
        if verdict is None and self._shared is not None:
            verdict = await self._shared_get(key)
            if verdict is not None:
                self.shared_hits += 1
                self._entries[key] = verdict
        if verdict is None:
            self.misses += 1
            return None
        self.hits += 1
        return replace(verdict, cached=True)

    async def put(self, key: bytes, verdict: Verdict) -> None:
        self._entries[key] = verdict
        if self._shared is not None:
            value = json.dumps(verdict_to_json(verdict)).encode()
            await self._guarded(self._shared.set(REDIS_PREFIX + key.hex(), value, self._ttl_s))

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()

    async def _shared_get(self, key: bytes) -> Verdict | None:
        assert self._shared is not None
        value = await self._guarded(self._shared.get(REDIS_PREFIX + key.hex()))
        if not isinstance(value, bytes):
            return None
        try:
            return verdict_from_json(json.loads(value))
        except (ValueError, TypeError, KeyError):
            logger.warning("verdict cache: an unreadable entry in the shared tier was ignored")
            return None

    async def _guarded(self, call: Any) -> Any:
        try:
            return await asyncio.wait_for(call, self._timeout_s)
        except Exception as exc:  # a cache outage must never fail a request
            self.shared_errors += 1
            if self.shared_errors == 1 or self.shared_errors % 1000 == 0:
                logger.warning(
                    "verdict cache: the shared tier failed (%s; %d so far); asking the guard",
                    type(exc).__name__,
                    self.shared_errors,
                )
            return None


def verdict_to_json(verdict: Verdict) -> dict[str, Any]:
    data = asdict(verdict)
    data.pop("cached")
    return data


def verdict_from_json(data: dict[str, Any]) -> Verdict:
    def safety(value: Any) -> Safety | None:
        return None if value is None else Safety(value)

    return Verdict(
        user=safety(data["user"]),
        response=safety(data["response"]),
        categories=tuple(data["categories"]),
        reasoning=data["reasoning"],
        raw=data["raw"],
        policy_violation=bool(data["policy_violation"]),
        reasoning_unavailable=bool(data["reasoning_unavailable"]),
        refusal=data["refusal"],
        mode=data["mode"],
        calls=tuple(verdict_from_json(call) for call in data["calls"]),
        prompt_tokens=data.get("prompt_tokens"),
        score=data.get("score"),
    )


class RedisTier:
    """The shared tier over Redis (`pip install 'guardproxy[redis]'`)."""

    def __init__(self, client: Any) -> None:
        self._client = client  # a redis.asyncio.Redis, or anything with its get/set

    @classmethod
    def from_url(cls, url: str) -> RedisTier:
        try:
            from redis import asyncio as redis
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "cache.redis needs the redis client: pip install 'guardproxy[redis]'."
            ) from exc
        return cls(redis.Redis.from_url(url))

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._client.set(key, value, px=max(int(ttl_s * 1000), 1))

    async def aclose(self) -> None:
        await self._client.aclose()


def build_cache(settings: CacheSettings) -> VerdictCache | None:
    if not settings.enabled:
        return None
    shared = RedisTier.from_url(settings.redis) if settings.redis else None
    return VerdictCache(settings, shared)
