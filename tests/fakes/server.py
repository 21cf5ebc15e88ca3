"""Run an ASGI app on a real uvicorn server: in a test thread, or as a benchmark process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0


def _bind_free_port() -> socket.socket:
    # Binding port 0 and handing the bound socket to uvicorn leaves no window in which
    # another process could take the port between "find a free port" and "listen".
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    return sock


def free_port() -> int:
    """A port free now, for a server the test cannot hand a bound socket (a side port)."""
    with _bind_free_port() as sock:
        return int(sock.getsockname()[1])


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn test server did not start")
        time.sleep(0.005)


@contextmanager
def run_in_thread(app: ASGIApp) -> Iterator[str]:
    """Serve `app` on a free loopback port in a daemon thread; yield its base URL."""
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5,
        proxy_headers=False,  # as `guardproxy serve` runs it: the app's edge decides
    )  # fmt: skip
    server = uvicorn.Server(config)
    sock = _bind_free_port()
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_started(server, thread)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_S)
        sock.close()


def serve(app: ASGIApp, port: int) -> None:
    """Serve `app` in the foreground the way benchmarks want it: uvloop, httptools, quiet."""
    uvicorn.run(
        app,
        host=LOOPBACK,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
