"""The reviewer page on a port of its own (`admin: {port: N}`): a second uvicorn server in the
proxy's own event loop, so the pages read the same runtime and audit engine as the proxy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware

from guardproxy.admin.site import AdminSite
from guardproxy.config import AdminSettings
from guardproxy.errors import ConfigError

STARTUP_POLL_S = 0.01


class _SideServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The main server owns SIGINT/SIGTERM; this one stops when the proxy's lifespan ends.
        yield


@asynccontextmanager
async def side_server(
    site: AdminSite | None, settings: AdminSettings, middleware: Sequence[Middleware] = ()
) -> AsyncIterator[None]:
    """`middleware`: the main app's edge (its forwarded-client choice), so both ports see the
    same client; uvicorn's own proxy-header handling stays off, as on the main port."""
    if site is None or settings.port is None:
        yield
        return
    app = Starlette(routes=site.routes(), middleware=middleware)
    config = uvicorn.Config(
        app, settings.host, settings.port, lifespan="off", log_level="warning",
        proxy_headers=False,
    )  # fmt: skip
    server = _SideServer(config)
    task = asyncio.create_task(server.serve())
    # uvicorn's Server has a `started` flag, not an event to wait on.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(STARTUP_POLL_S)
    if not server.started:
        with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind
            await task
        raise ConfigError(f"admin.port {settings.port} could not be opened on {settings.host}")
    try:
        yield
    finally:
        server.should_exit = True
        await task
