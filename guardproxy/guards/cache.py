"""The verdict cache: a definite verdict, keyed by the exact guard request that produced it.

The key is the SHA-256 of the guard's URL and the request body (model, messages, image bytes
as data URLs, the policy text in its kwargs, sampling), so a changed policy, guard, protocol,
direction or content is a different key, and a reload can never serve a stale verdict. Errors
are never cached. Bounded: least recently used entries go first, and every entry expires.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from cachetools import TTLCache

from guardproxy.config import CacheSettings
from guardproxy.verdict import Verdict


class VerdictCache:
    def __init__(self, settings: CacheSettings) -> None:
        self._entries: TTLCache[bytes, Verdict] = TTLCache(settings.size, settings.ttl_s)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(url: str, body: dict[str, Any]) -> bytes:
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(f"{url}\n{canonical}".encode()).digest()

    def get(self, key: bytes) -> Verdict | None:
        verdict = self._entries.get(key)
        if verdict is None:
            self.misses += 1
            return None
        self.hits += 1
        return replace(verdict, cached=True)

    def put(self, key: bytes, verdict: Verdict) -> None:
        self._entries[key] = verdict
