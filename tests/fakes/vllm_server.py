"""A stand-in for `python -m vllm.entrypoints.openai.api_server`: takes vLLM's flags, prints a
start line as vLLM does, and serves the fake guard on `--host`/`--port` with `GET /health`.

Used to test the proxy's engine supervisor without vLLM installed; the real engine is tested in
tests/engine/.
"""

from __future__ import annotations

import argparse

from tests.fakes.guard import FakeGuardState, create_fake_guard
from tests.fakes.server import serve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args, engine_flags = parser.parse_known_args()
    print(f"INFO fake vLLM serving {args.model} with {' '.join(engine_flags)}", flush=True)
    state = FakeGuardState(model=args.served_model_name or args.model)
    serve(create_fake_guard(state), args.port)


if __name__ == "__main__":
    main()
