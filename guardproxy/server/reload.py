"""Hot reload of the policy set: on file changes in the policies folder, and on SIGHUP.

A reload builds a complete new set; a set with any error is rejected whole, the last good set
keeps serving, and the error is logged and shown by /readyz. Requests in flight finish under
the runtime they started with, since a reload swaps the `AppState`'s runtime, never edits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import watchfiles

from guardproxy.errors import ConfigError
from guardproxy.policy.model import PolicySet
from guardproxy.server.runtime import app_state

if TYPE_CHECKING:
    from starlette.applications import Starlette

logger = logging.getLogger(__name__)

PolicyLoader = Callable[[], PolicySet]
# Editors write files in several steps; wait for the burst to end before reloading.
DEBOUNCE_MS = 200


async def reload_policies(
    app: Starlette, load: PolicyLoader, reason: str, lock: asyncio.Lock
) -> bool:
    """Load a new set and swap it in; on any error keep the current one. True if swapped.

    Reloads run one at a time, so a slow failing one can never roll back a newer good set.
    """
    state = app_state(app)
    async with lock:
        try:
            policies = await asyncio.to_thread(load)
        except ConfigError as exc:
            logger.error("policy reload (%s) rejected, the previous set stays:\n%s", reason, exc)
            state.runtime = state.runtime.with_error(str(exc))
            state.metrics.reloads.labels("error").inc()
            return False
        state.runtime = state.runtime.with_policies(policies)
        state.metrics.reloads.labels("ok").inc()
        state.metrics.prime(policies.tenants, (), ())  # a new tenant's series start at 0
    logger.info("policies reloaded (%s): %d tenant(s)", reason, len(policies.tenants))
    return True


@asynccontextmanager
async def watch_policies(
    app: Starlette, folder: Path, load: PolicyLoader | None
) -> AsyncIterator[None]:
    """While the context is open, SIGHUP reopens the audit trail (as logrotate's `postrotate`
    asks) and, with a loader, reloads the policies, as file changes under `folder` do."""
    stop, lock = asyncio.Event(), asyncio.Lock()
    watcher = asyncio.create_task(_watch(app, folder, load, stop, lock)) if load else None
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[bool]] = set()

    def on_sighup() -> None:
        app_state(app).runtime.audit.reopen()
        if load is None:
            return
        task = loop.create_task(reload_policies(app, load, "SIGHUP", lock))
        pending.add(task)  # keep a reference until it is done
        task.add_done_callback(pending.discard)

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not main thread
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not main thread
            loop.remove_signal_handler(signal.SIGHUP)
        if watcher is not None:
            await watcher


async def _watch(
    app: Starlette, folder: Path, load: PolicyLoader, stop: asyncio.Event, lock: asyncio.Lock
) -> None:
    async for changes in watchfiles.awatch(
        folder, stop_event=stop, debounce=DEBOUNCE_MS, recursive=True
    ):
        names = sorted({Path(path).name for _, path in changes})
        await reload_policies(app, load, f"changed: {', '.join(names)}", lock)
