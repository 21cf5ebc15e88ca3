"""A resumable cache of judgements on disk (JSON lines): a rerun after a policy edit asks the
guard only for what changed, because the key is the exact guard request bodies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from guardproxy.pipeline.checks import CheckResult, CheckStatus


class VerdictFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.known: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.known[entry["key"]] = entry
        self._file = path.open("a", encoding="utf-8") if path is not None else None

    @staticmethod
    def key(url: str, bodies: list[dict[str, Any]]) -> str:
        canonical = json.dumps(bodies, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(f"{url}\n{canonical}".encode()).hexdigest()

    def get(self, key: str) -> CheckResult | None:
        entry = self.known.get(key)
        if entry is None:
            return None
        return CheckResult(
            CheckStatus(entry["status"]),
            tuple(entry["categories"]),
            tuple(entry["reasoning"]),
            latency_ms=entry["latency_ms"],
            policy_violation=entry["policy_violation"],
        )

    def put(self, key: str, result: CheckResult) -> None:
        """Definite verdicts only: an error is asked again next time."""
        if result.status not in (CheckStatus.SAFE, CheckStatus.UNSAFE):
            return
        entry = {
            "key": key,
            "status": result.status.value,
            "categories": list(result.categories),
            "reasoning": list(result.reasoning),
            "latency_ms": result.latency_ms,
            "policy_violation": result.policy_violation,
        }
        self.known[key] = entry
        if self._file is not None:
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
