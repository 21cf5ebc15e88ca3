"""`/mcp/{name}`: the MCP gateway's endpoint. The tenant's key picks its policy and the MCP
servers it may reach; the server's credentials come from the config only. Every failure is
answered in JSON-RPC's shape with the right HTTP status, and every exchange is recorded."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from guardproxy.api.mcp.call import McpCall, passed_headers, problem_for, problem_response
from guardproxy.api.mcp.jsonrpc import INVALID_REQUEST, McpProblem
from guardproxy.api.mcp.sessions import SessionSeal
from guardproxy.errors import GuardproxyError
from guardproxy.pipeline.exchange import Exchange
from guardproxy.server.endpoints import audit_exchange, begin_exchange, read_body
from guardproxy.server.runtime import Runtime, app_state

REGION_HEADER = "x-guardproxy-region"


async def mcp_endpoint(request: Request) -> Response:
    runtime = app_state(request.app).runtime
    exchange, span = begin_exchange(runtime, request, "mcp")
    written = False

    async def done() -> None:
        nonlocal written
        if not written:
            written = True
            await audit_exchange(runtime, exchange, span)

    try:
        response = await _handle(runtime, request, exchange, done)
    except GuardproxyError as exc:
        problem = problem_for(exc)
        exchange.conclude(problem.status, error=problem.message)
        await done()
        return problem_response(problem, exchange)
    except BaseException as exc:
        exchange.conclude(500, error=f"internal error: {type(exc).__name__}")
        await done()
        raise
    return response


async def _handle(runtime: Runtime, request: Request, exchange: Exchange, done: Any) -> Response:
    tenant, exchange.key_id = runtime.policies.identify(request.headers.get("authorization"))
    exchange.tenant = tenant.tenant
    exchange.refusals = runtime.policies.refusals.get(tenant.tenant)
    exchange.accept_language = request.headers.get("accept-language")
    name = request.path_params["name"]
    gateway = runtime.mcp
    exchange.mcp = {"server": name}
    if gateway is None or name not in gateway.servers:
        raise McpProblem(404, INVALID_REQUEST, f"There is no MCP server {name!r}.")
    if name not in tenant.mcp.servers:
        raise McpProblem(403, INVALID_REQUEST, f"This key may not use the MCP server {name!r}.")
    route = runtime.route_for(tenant)
    seal = SessionSeal(request.headers.get("authorization", ""), name)
    call = McpCall(
        route,
        route.profile(request.headers.get(REGION_HEADER)),
        gateway.servers[name],
        exchange,
        runtime.fetcher,
        passed_headers(request.headers, seal),
        seal,
        done,
    )
    exchange.guard = tenant.guards[0].guard
    if request.method == "GET":
        return await gateway.get(call)
    if request.method == "DELETE":
        return await gateway.delete(call)
    body = await read_body(request, runtime.settings.max_body_bytes)
    return await gateway.post(call, body)
