"""`guardproxy serve` with stall probes: the app built by the same function `serve --workers 1`
calls, on uvicorn with the same options, plus loop-lag, GC and trail-flush measurements.

    python -m bench.stalls --config guardproxy.yaml --port P [--gc-freeze] [--gen0 N] [--out F]

Bench-only endpoints: `/bench/open` and `/bench/close` start and stop a measurement window
(`bench.tail` opens one around each of this target's rounds), `/bench/report` answers the
sums as JSON; on SIGTERM/SIGINT the same JSON is written to `--out` if given.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
from pathlib import Path
from typing import Any

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.common import HOST
from bench.probes import Probes
from guardproxy import cli
from guardproxy.audit.sinks import JsonlAuditSink
from guardproxy.observe.logs import configure as configure_logs

GRACEFUL_SHUTDOWN_S = 30.0  # `serve`'s default


class Probed:
    """The proxy app, and the bench endpoints in front of it."""

    def __init__(self, app: ASGIApp, probes: Probes, args: argparse.Namespace) -> None:
        self.app, self.probes, self.args = app, probes, args

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._watch_lifespan(send))
        elif scope["type"] == "http" and scope["path"].startswith("/bench/"):
            await self._bench(scope["path"])(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _watch_lifespan(self, send: Send) -> Send:
        async def watched(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                tune_gc(self.args.gc_freeze, self.args.gen0)
            elif message["type"] == "lifespan.shutdown.complete" and self.args.out:
                await self.probes.close()
                self.args.out.write_text(json.dumps(self.probes.report(), indent=2))
            await send(message)

        return watched

    def _bench(self, path: str) -> ASGIApp:
        if path == "/bench/open":
            self.probes.open()
            return JSONResponse({"open": True})
        if path == "/bench/report":
            return JSONResponse(self.probes.report())
        if path == "/bench/close":
            return self._closed
        return JSONResponse({"error": f"unknown {path}"}, 404)

    async def _closed(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.probes.close()
        await JSONResponse({"open": False})(scope, receive, send)


def tune_gc(freeze: bool, gen0: int | None) -> None:
    """After startup: move everything alive into the permanent generation, so collections
    no longer walk the app's long-lived objects; and/or collect gen0 less often."""
    if gen0 is not None:
        gc.set_threshold(gen0, *gc.get_threshold()[1:])
    if freeze:
        gc.collect()
        gc.freeze()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning", choices=cli.LOG_LEVELS)
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after startup")
    parser.add_argument("--gen0", type=int, help="gen0 threshold after startup (default 700)")
    parser.add_argument("--out", type=Path, help="write the measurements here on shutdown")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logs(args.log_level.upper(), "text")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # as `serve` does
    probes = Probes()
    # Timed in the trail's worker thread, around the unchanged write.
    JsonlAuditSink._write_batch = probes.timed_flush(JsonlAuditSink._write_batch)  # type: ignore[method-assign]
    app: Any = cli._app(args.config, 1)  # what `serve` runs with one worker
    options: dict[str, Any] = {"host": HOST, "port": args.port, "log_level": args.log_level}
    options |= {"access_log": False, "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S}
    uvicorn.run(Probed(app, probes, args), **options)


if __name__ == "__main__":
    main()
