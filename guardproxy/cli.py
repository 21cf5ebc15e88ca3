"""The `guardproxy` command: serve, check, classify. The only code that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml

from guardproxy.audit.store import migrate, open_engine
from guardproxy.config import Settings, load_settings
from guardproxy.core.verdict import Direction
from guardproxy.errors import ConfigError, RequestError
from guardproxy.guards.client import build_guard
from guardproxy.lifecycle.commands import add_eval, add_export_labels, add_replay
from guardproxy.media.fetch import ImageFetcher
from guardproxy.media.images import prepare_image
from guardproxy.media.request import GuardImage
from guardproxy.observe.logs import configure as configure_logs
from guardproxy.pipeline.chain import chain_for, runner
from guardproxy.pipeline.judging import (
    NOT_JUDGED,
    Case,
    Judgement,
    Ruling,
    guards_not_run,
    judge_exchange,
    not_run_note,
    tool_turns,
)
from guardproxy.pipeline.masking import Masker
from guardproxy.policy.loader import load_policies
from guardproxy.policy.model import PolicySet, TenantPolicy
from guardproxy.policy.profile import build_profiles
from guardproxy.policy.view import show_guard_request

DEFAULT_CONFIG = Path("guardproxy.yaml")
logger = logging.getLogger(__name__)
LOG_LEVELS = ["critical", "error", "warning", "info", "debug"]
# uvicorn's own X-Forwarded-* handling stays off: it trusts 127.0.0.1 and FORWARDED_ALLOW_IPS,
# a second list beside `trusted_proxies`, which `ForwardedHeaders` applies instead.
PROXY_HEADERS = False


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = getattr(args, "log_level", "info").upper()
    configure_logs(level, getattr(args, "log_format", "text"))
    if "config" in args:
        args.config = _config_path(args.config)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (UnknownTenant, RequestError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return code


class UnknownTenant(Exception):
    """A tenant named on the command line that no policy defines."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guardproxy", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    serve.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one object per line, with request_id, tenant and action",
    )
    serve.add_argument(
        "--graceful-shutdown-s",
        type=float,
        default=30.0,
        help="on SIGTERM, how long in-flight requests and streams may take to finish",
    )
    serve.add_argument(
        "--workers",
        default="1",
        type=_workers,
        help="worker processes (default 1; 'auto': one per CPU)",
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="uvicorn's per-request log line (the audit log records every request anyway)",
    )
    serve.set_defaults(run=_serve)
    check = commands.add_parser("check", help="validate the config and every tenant policy")
    check.set_defaults(run=_check)
    classify = commands.add_parser("classify", help="ask a tenant's guard for one verdict")
    classify.add_argument("--tenant", required=True)
    classify.add_argument("--image", help="image path or URL")
    classify.add_argument("--response", help="an answer to judge in context of TEXT")
    classify.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="RESULT",
        help="a tool result TEXT came with, judged as a `tool` message (repeat for several)",
    )
    classify.add_argument("text")
    classify.set_defaults(run=_classify)
    policy = commands.add_parser("policy", help="show a tenant's policy")
    policy_commands = policy.add_subparsers(required=True, metavar="ACTION")
    show = policy_commands.add_parser("show", help="print exactly what the guard is sent")
    show.add_argument("tenant")
    show.add_argument("--effective", action="store_true", help="print the merged policy instead")
    show.add_argument("--region", help="as a request with X-Guardproxy-Region would see it")
    show.add_argument("--direction", choices=["input", "output"], default="input")
    show.set_defaults(run=_policy_show)
    _add_admin(commands)
    evaluate, replay = add_eval(commands), add_replay(commands)
    labels = add_export_labels(commands)
    for command in (serve, check, classify, show, evaluate, replay, labels):
        command.add_argument(
            "--config", type=Path, help="default: ./guardproxy.yaml, else built-in"
        )
    return parser


def _add_admin(commands: Any) -> None:
    admin = commands.add_parser("admin", help="the reviewer page")
    actions = admin.add_subparsers(required=True, metavar="ACTION")
    serve = actions.add_parser(
        "serve", help="serve the reviewer page alone, over the shared audit database"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8081)
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    serve.add_argument("--config", type=Path, help="default: ./guardproxy.yaml, else built-in")
    serve.set_defaults(run=_admin_serve)


def _admin_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from guardproxy.server.admin_app import create_admin_app

    app = create_admin_app(*_load(args.config))  # refuses here, before a port is opened
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, proxy_headers=PROXY_HEADERS
    )
    return 0


def _load(config: Path | None) -> tuple[Settings, PolicySet]:
    env = dict(os.environ)
    settings = load_settings(_config_path(config), env)
    return settings, load_policies(settings, env)


def _config_path(config: Path | None) -> Path:
    if config is not None:
        return config
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    return _built_in(os.environ)


def _built_in(env: Mapping[str, str]) -> Path:
    """The packaged config: the guard at GUARD_URL; with no GUARD_URL on a box where vLLM is
    installed (`guardproxy[engine]`), the embedded Nemotron 3.5 guard: the one-box default."""
    name = "guardproxy.yaml"
    if not env.get("GUARD_URL") and importlib.util.find_spec("vllm") is not None:
        name = "guardproxy-engine.yaml"
        logger.info("no GUARD_URL and vLLM is installed: starting the embedded guard")
    return Path(str(resources.files("guardproxy") / "defaults" / name))


def _workers(value: str) -> int | str:
    if value == "auto":
        return value  # sized once the config is read (`_auto_workers`)
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError("a positive number or 'auto'")
    return int(value)


def _auto_workers(settings: Settings) -> int:
    """This pod's size: its CPU affinity and its cgroup's CPU quota and memory limit
    (`server/sizing.py`), and no more workers than the smallest guard `max_concurrency`, so
    split between them it still holds. The choice is logged."""
    from guardproxy.server.sizing import auto_workers

    sizing = auto_workers()
    caps = [g.max_concurrency for g in settings.guards.values()]
    workers = min([sizing.workers, *(cap for cap in caps if cap is not None)])
    logger.info("--workers auto: %s; starting %d", sizing.describe(), workers)
    return workers


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    # litellm fetches its model price map from the internet at import unless told not to;
    # behind a firewall that costs seconds of retries on the first request.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    path = _config_path(args.config)
    options = {"host": args.host, "port": args.port, "log_level": args.log_level}
    options |= {"access_log": args.access_log, "proxy_headers": PROXY_HEADERS}
    options |= {"timeout_graceful_shutdown": args.graceful_shutdown_s}
    if args.log_format == "json":
        options["log_config"] = None  # uvicorn's own lines go through the JSON root handler
    settings = load_settings(path, dict(os.environ))  # read once for what serve decides
    workers = args.workers if isinstance(args.workers, int) else _auto_workers(settings)
    if workers == 1:
        uvicorn.run(_app(path, 1), **options)
        return 0
    settings, _ = _load_for_serving(path, workers)  # a bad config fails here, once
    if settings.audit.database:  # workers must not race to create the audit schema
        asyncio.run(_migrate_audit(settings.audit.database))
    # Each worker builds its own app from the same files (see `worker_app`), and their
    # metrics meet in prometheus-client's multiprocess folder.
    os.environ[WORKER_CONFIG_ENV] = str(path)
    os.environ[WORKER_COUNT_ENV] = str(workers)
    made = None if METRICS_ENV in os.environ else tempfile.mkdtemp(prefix="guardproxy-metrics-")
    if made is not None:
        os.environ[METRICS_ENV] = made
    try:
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **options)
    finally:
        if made is not None:  # ours, and the values in it died with the workers
            shutil.rmtree(made, ignore_errors=True)
    return 0


async def _migrate_audit(url: str) -> None:
    engine = open_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


WORKER_CONFIG_ENV = "GUARDPROXY_WORKER_CONFIG"
WORKER_COUNT_ENV = "GUARDPROXY_WORKER_COUNT"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it too


def worker_app() -> Any:
    """The app of one `--workers N` process."""
    path, workers = Path(os.environ[WORKER_CONFIG_ENV]), int(os.environ[WORKER_COUNT_ENV])
    return _app(path, workers, os.environ[METRICS_ENV])


def _app(path: Path, workers: int, metrics_dir: str | None = None) -> Any:
    from guardproxy.server.app import create_app

    env = dict(os.environ)
    settings, policies = _load_for_serving(path, workers)
    reload = lambda: load_policies(settings, env)  # noqa: E731
    return create_app(
        settings, policies, reload=reload, metrics_dir=metrics_dir, freeze_startup=True
    )


def _load_for_serving(path: Path, workers: int) -> tuple[Settings, PolicySet]:
    """Settings for one of `workers` processes: an embedded engine cannot be shared, and a
    guard's `max_concurrency` is split between the workers so their sum keeps the cap."""
    env = dict(os.environ)
    settings = load_settings(path, env)
    if workers > 1:
        embedded = [name for name, g in settings.guards.items() if g.engine is not None]
        if embedded:
            raise ConfigError(f"--workers > 1 cannot share the embedded engine of {embedded}")
        if settings.admin.port is not None:
            raise ConfigError(
                "admin.port needs --workers 1 (with more, use /admin on the main port)"
            )
        if settings.metrics.port is not None:
            raise ConfigError(
                "metrics.port needs --workers 1 (with more, scrape /metrics on the main port, "
                "where the workers' values are merged)"
            )
        settings = settings.per_worker(workers)
    return settings, load_policies(settings, env)


def _check(args: argparse.Namespace) -> int:
    settings, policies = _load(args.config)
    print(
        f"ok: {len(settings.guards)} guard(s), {len(settings.upstreams)} upstream(s), "
        f"{len(policies.tenants)} tenant(s): {', '.join(sorted(policies.tenants))}"
    )
    for name, guard in settings.guards.items():
        where = f"embedded {guard.engine} engine" if guard.engine else ", ".join(guard.urls)
        print(f"guard {name}: {guard.model} ({where})")
    return 0


def _load_tenant(args: argparse.Namespace) -> tuple[Settings, PolicySet, TenantPolicy]:
    settings, policies = _load(args.config)
    tenant = policies.tenants.get(args.tenant)
    if tenant is None:
        known = ", ".join(sorted(policies.tenants))
        raise UnknownTenant(f"unknown tenant {args.tenant!r}; known: {known}")
    return settings, policies, tenant


def _policy_show(args: argparse.Namespace) -> int:
    settings, policies, tenant = _load_tenant(args)
    if args.effective:
        print(yaml.safe_dump(tenant.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
        return 0
    print(show_guard_request(settings, tenant, policies, args.region, Direction(args.direction)))
    return 0


def _classify(args: argparse.Namespace) -> int:
    """TEXT (with --image, --tool and --response) as the proxy would judge the exchange: the
    prompt and tool results, then the answer in context if they pass, through the one judging
    core. The guards limited to turns it was not given are named as not run."""
    settings, policies, tenant = _load_tenant(args)
    case = _case(args)
    judgement = asyncio.run(_judge(settings, policies, tenant, case, args.image))
    errors = [r.result.error for r in (judgement.input, judgement.output) if r.result.error]
    if errors:
        print(f"guard error: {errors[0]}", file=sys.stderr)
        return 3
    print(_describe(judgement, tenant))
    not_run = guards_not_run(tenant, case.kinds)
    if not_run:
        print(f"not run:    {not_run_note(not_run)} (--tool gives tool results)")
    return 0


def _case(args: argparse.Namespace) -> Case:
    """The exchange the flags give, its image still to be prepared."""
    answers = (args.response,) if args.response is not None else ()
    return Case(args.text, turns=tool_turns(args.tool, "--tool"), answers=answers)


async def _judge(
    settings: Settings, policies: PolicySet, tenant: TenantPolicy, case: Case, path: str | None
) -> Judgement:
    """The tenant's guard and policy on the exchange, with the image at `path` (prepared as
    the proxy would)."""
    profile = build_profiles(tenant, policies.regions)[""]
    async with httpx.AsyncClient() as client, ImageFetcher() as fetcher:
        if path is not None:
            url = _image_url(path)
            image = (await prepare_image(url, "--image", tenant.images, fetcher)).guard_data_url()
            case = replace(case, images=(GuardImage("--image", image),), context_image=image)
        chain = chain_for(tenant, lambda name: runner(build_guard(client, settings.guards[name])))
        return await judge_exchange(
            chain, tenant, profile, case, Masker.for_policy(tenant.redaction)
        )


def _image_url(image: str) -> str:
    if image.startswith(("http://", "https://", "data:")):
        return image
    import base64
    import mimetypes

    mime = mimetypes.guess_type(image)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(image).read_bytes()).decode()}"


def _describe(judgement: Judgement, tenant: TenantPolicy) -> str:
    checked = judgement.checked
    verdicts = [v for r in (judgement.input, judgement.output) for v in r.result.verdicts]
    lines = [
        f"tenant:     {tenant.tenant} (guard {tenant.guard})",
        f"checked:    {'input, output' if checked is judgement.output else 'input'}",
        f"user:       {judgement.input.result.status.value}",
        f"response:   {_status(judgement.output)}",
        f"categories: {', '.join(judgement.categories) or '-'}",
        f"decision:   {judgement.outcome}",
    ]
    if judgement.monitor:
        lines.append(f"would:      {judgement.decided.value}")
    if any(r.result.policy_violation for r in (judgement.input, judgement.output)):
        lines.insert(-1, "policy:     violated (policy_action applies)")
    if any(v.reasoning_unavailable for v in verdicts):
        lines.append("reasoning:  unavailable (the guard returned no trace)")
    lines += [f"reasoning:  {v.reasoning.strip()}" for v in verdicts if v.reasoning]
    return "\n".join(lines)


def _status(ruling: Ruling) -> str:
    return "-" if ruling is NOT_JUDGED else ruling.result.status.value


if __name__ == "__main__":
    sys.exit(main())
