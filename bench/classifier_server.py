"""The fake text classifier (tests/fakes/classifier.py) as a process, for benchmarks:

    python -m bench.classifier_server --port P

It answers instantly; `GET /healthz` is added so `bench.common` can wait for it.
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from tests.fakes.classifier import FakeClassifierState, create_fake_classifier
from tests.fakes.server import serve


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    fake = create_fake_classifier(FakeClassifierState())
    serve(Starlette(routes=[Route("/healthz", healthz), Mount("/", app=fake)]), args.port)


if __name__ == "__main__":
    main()
