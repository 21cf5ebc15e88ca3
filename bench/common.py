"""What every benchmark here needs: free loopback ports, child processes that are always stopped,
readiness polling, and guardproxy config files."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
LOG_TAIL_CHARS = 2000
GUARD_PROTOCOL = "nemotron-content-safety"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-LOG_TAIL_CHARS:] if log.exists() else ""


def wait_ready(
    process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Poll `url` until it answers 200; fail with the child's log tail if it dies or stalls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode}:\n{log_tail(log)}"
            )
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


class Children:
    """Child processes started one by one; `stop()` ends every one of them (SIGTERM, then KILL)."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def launch(
        self,
        argv: list[str],
        log: Path,
        ready_url: str,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` logging to `log`; kept before the wait, so a failed start is stopped too."""
        with log.open("wb") as sink:
            process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
        self.processes.append(process)
        wait_ready(process, ready_url, log, ready_timeout_s)
        return process

    def stop(self) -> None:
        stop(self.processes)


@contextmanager
def children() -> Iterator[Children]:
    group = Children()
    try:
        yield group
    finally:
        group.stop()


def proxy_command(config: Path, port: int) -> tuple[list[str], str]:
    """`guardproxy serve` on `config` at `port`, and the path that says it is ready."""
    serve = ["serve", "--config", str(config), "--host", HOST, "--port", str(port)]
    return [sys.executable, "-m", "guardproxy", *serve, "--log-level", "warning"], "/healthz"


def hashed_key(key: str) -> str:
    """A SHA-256 digest, not the key itself, as the policy format asks of files on disk."""
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def write_guardproxy_config(
    folder: Path, guard_port: int, upstream_port: int, policies: list[dict[str, Any]]
) -> Path:
    """Write guardproxy.yaml and one file per tenant policy (JSON is valid YAML) under `folder`."""
    (folder / "policies").mkdir(parents=True)
    guard = {"url": f"http://{HOST}:{guard_port}/v1", "model": "fake-guard", "timeout_s": 5}
    config = {
        "guards": {"nemotron": {**guard, "protocol": GUARD_PROTOCOL}},
        "upstreams": {"app": {"url": f"http://{HOST}:{upstream_port}/v1", "api_key": ""}},
        "policies": "policies",
        "audit": {"path": str(folder / "audit.jsonl")},
    }
    for policy in policies:
        (folder / "policies" / f"{policy['tenant']}.yaml").write_text(json.dumps(policy))
    (folder / "guardproxy.yaml").write_text(json.dumps(config))
    return folder / "guardproxy.yaml"


def emit(report: dict[str, Any], table: str, json_path: Path | None) -> None:
    """Print the table and the wall time; write the whole report as JSON if asked."""
    sys.stdout.write(table + f"\nWall time: {report['wall_s']} s\n")
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
