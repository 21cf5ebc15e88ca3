"""What the gateway judges, and what it does with the ruling: a server's text as the model's
next input (the tenant's input rules and chain, as a tool turn), a tool's arguments as the
agent's output; carried through masked, or blocked as the agent reads a block."""

from __future__ import annotations

from typing import Any

from guardproxy.api.mcp import jsonrpc
from guardproxy.api.mcp.call import McpCall
from guardproxy.api.mcp.jsonrpc import BLOCKED
from guardproxy.api.mcp.surfaces import STRUCTURAL, Surface, mask_tree
from guardproxy.core.actions import Action
from guardproxy.core.conversation import Turn
from guardproxy.media.images import prepare_image
from guardproxy.media.request import GuardImage
from guardproxy.pipeline.checks import SKIPPED, output_checks
from guardproxy.pipeline.judging import NOT_JUDGED, STOPS, Ruling, rule
from guardproxy.pipeline.replies import refusal_for


async def judge_inbound(call: McpCall, found: Surface) -> Ruling:
    """What the agent's model will read next, under the tenant's input rules, on its
    chain as a tool turn (so an injection classifier with `turns: [tool]` judges it)."""
    tenant, rules = call.route.tenant, call.profile.input
    if found.unjudged and tenant.input.unjudged_parts == "refuse":
        call.exchange.notes.append(f"parts no guard can judge: {', '.join(found.unjudged)}")
        return Ruling(SKIPPED, Action.BLOCK, Action.BLOCK)
    text, images = found.text(), await _images(call, found)
    if not tenant.input.enabled or (not text and not images):
        return NOT_JUDGED
    turns = [Turn("result", "tool", text)] if text else []
    chain = call.route.chain
    result = await chain.judge_input("", images, turns, rules, tenant.input)
    call.judged_in.append(result)
    masker, monitor = call.route.masker, tenant.mode == "monitor"
    return rule(result, tenant, rules, [text], masker, monitor)


async def judge_outbound(call: McpCall, text: str) -> Ruling:
    """The agent's tool arguments, as its output, under the tenant's output rules."""
    tenant, rules = call.route.tenant, call.profile.output
    if not tenant.output.enabled or not text.strip():
        return NOT_JUDGED
    checks = output_checks("", None, [text], rules, tenant.output.window_chars)
    result = await call.route.chain.judge_output(checks)
    call.judged_out.append(result)
    masker, monitor = call.route.masker, tenant.mode == "monitor"
    return rule(result, tenant, rules, [text], masker, monitor)


async def _images(call: McpCall, found: Surface) -> list[GuardImage]:
    images = []
    for piece in found.images():
        assert piece.image is not None
        # One that does not decode raises MediaError, and the message is withheld (withheld).
        prepared = await prepare_image(
            piece.image, piece.label, call.route.tenant.images, call.fetcher
        )
        images.append(GuardImage(piece.label, prepared.guard_data_url()))
    return images


def decided(call: McpCall, ruling: Ruling, direction: str) -> Action:
    exchange = call.exchange
    if ruling.monitored:
        exchange.monitor = True
        exchange.monitored(direction, ruling.decided.value)
    if ruling.action is Action.FLAG and direction not in exchange.flags:
        exchange.flag(direction)
    return ruling.action


def carry(call: McpCall, ruling: Ruling, value: Any, direction: str, free: bool = False) -> Any:
    """`value` as the ruling lets it through (masked), or None when it stops here. The
    tenant's always-on detectors mask every judged string, whatever the verdict."""
    action = decided(call, ruling, direction)
    if action in STOPS:
        call.exchange.action = "fail" if action is Action.FAIL else "block"
        return None
    types = ruling.redact if action is Action.REDACT else call.route.masker.always
    return masked(call, value, types, direction, free=free)


def masked(
    call: McpCall,
    value: Any,
    types: frozenset[str],
    direction: str,
    keep: frozenset[str] = STRUCTURAL,
    free: bool = False,
) -> Any:
    """`value` with the detectors `types` run on its strings, the masks counted; `free`:
    free-form data (a tool's arguments), where no value is structural."""
    if not types:
        return value
    counting = call.route.masker.counting(call.exchange.tally(direction))
    masked, count = mask_tree(value, lambda text: counting.mask(text, types), keep, free)
    if count:
        redacted = call.exchange.redacted
        redacted[direction] = redacted.get(direction, 0) + count
    return masked


def blocked(
    call: McpCall, id: Any, tool_result: bool, ruling: Ruling | None = None
) -> dict[str, Any]:
    """A blocked tool call or result as the agent reads it: a tool error it can tell the
    user about (`on_block: refusal`), or a JSON-RPC error."""
    exchange, tenant = call.exchange, call.route.tenant
    if exchange.action in ("allow", "flag", "redact"):
        exchange.action = "block"
    if ruling is not None and ruling.action is Action.FAIL:
        message = "The content-safety check could not run, so the message was withheld."
        return jsonrpc.error(id, BLOCKED, message, {"guardproxy": exchange.client_view()})
    refusal = refusal_for(exchange, tenant)
    if tool_result and tenant.on_block == "refusal":
        content = [{"type": "text", "text": refusal}]
        return jsonrpc.result(id, {"isError": True, "content": content})
    return jsonrpc.error(id, BLOCKED, refusal, {"guardproxy": exchange.client_view()})
