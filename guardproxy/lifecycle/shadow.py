"""Shadow policies: a tenant's `shadow:` judged on the same exchange after the response, its
decision recorded next to the live one, never enforced and never in the client's path.

The live pipeline keeps what it judged (`Judged`) on the exchange; once the live record is
written, `ShadowRunner.submit` starts the shadow's checks in the background. Past
`max_in_flight` a shadow check is dropped and counted, so load never queues behind it. Guard
calls whose bodies equal the live ones are answered by the verdict cache, not the guard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from guardproxy.pipeline.shadow import Judged, ShadowRoute, judge_shadow

logger = logging.getLogger(__name__)

Record = Callable[[dict[str, Any]], None]
Count = Callable[[str, str, str], None]  # (tenant, result, the shadow's action or "none")


class ShadowRunner:
    def __init__(self, record: Record, count: Count, max_in_flight: int = 32) -> None:
        self._record, self._count, self._max = record, count, max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, route: ShadowRoute, request_id: str, judged: Judged, live: str) -> None:
        tenant = route.tenant.tenant
        if len(self._tasks) >= self._max:
            self._count(tenant, "dropped", "none")
            return
        task = asyncio.get_running_loop().create_task(self._run(route, request_id, judged, live))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Let the shadow checks in flight finish (their records are queued before the sinks
        close)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, route: ShadowRoute, request_id: str, judged: Judged, live: str) -> None:
        try:
            shadow = await judge_shadow(route, judged)
        except Exception:  # a shadow must never take anything down; counted and logged
            logger.exception(
                "the shadow policy of %s failed on %s", route.tenant.tenant, request_id
            )
            self._count(route.tenant.tenant, "error", "none")
            return
        shadow |= {"policy": route.name, "live_action": live}
        self._record(
            {
                "kind": "shadow",
                "request_id": request_id,
                "tenant": route.tenant.tenant,
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "shadow": shadow,
            }
        )
        self._count(route.tenant.tenant, "judged", str(shadow["action"]))
