"""What a Responses stream has shown the client: the output items and content parts it saw
open, and their text as it arrived (masked, where the tenant redacts), so that a cut-off can
close them the way OpenAI ends an incomplete response:

    response.output_text.done ─ response.content_part.done ─ response.output_item.done
    (status: incomplete) ─ … ─ response.incomplete (output: every item the client saw)

The `*.done` events only repeat what the deltas released, which was judged: text the upstream
sent after the cut-off never reaches them. A reasoning item's summary parts are not followed:
an open reasoning item is closed as it was announced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Part = tuple[int, int]  # (output_index, content_index)
Emit = Callable[..., bytes]  # (event type, **fields) -> the framed event
# A content part's type: the delta event that adds to its text, its `*.done` event, and the
# field of both that holds the text.
PART_TEXT = {
    "output_text": ("response.output_text.delta", "response.output_text.done", "text"),
    "refusal": ("response.refusal.delta", "response.refusal.done", "refusal"),
    "reasoning_text": ("response.reasoning_text.delta", "response.reasoning_text.done", "text"),
}
DELTA_PARTS = {delta: kind for kind, (delta, _, _) in PART_TEXT.items()}


def _index(chunk: dict[str, Any], name: str) -> int | None:
    value = chunk.get(name)
    return value if isinstance(value, int) else None


class ReleasedOutput:
    """Fed every event the client receives, in its final (masked) form."""

    def __init__(self) -> None:
        self.sequence = -1  # the last sequence number the client saw
        self.items: dict[int, dict[str, Any]] = {}  # every item: as announced, or as done
        self.open: set[int] = set()  # items announced and not done
        self.parts: dict[Part, dict[str, Any]] = {}  # as announced, or as done
        self.open_parts: set[Part] = set()
        self.said: dict[Part, list[str]] = {}

    @property
    def count(self) -> int:
        """Output items released: a refusal item after them takes this index."""
        return len(self.items)

    def add(self, chunk: dict[str, Any]) -> None:
        sequence = chunk.get("sequence_number")
        if isinstance(sequence, int):
            self.sequence = max(self.sequence, sequence)
        kind, at = chunk.get("type"), _index(chunk, "output_index")
        if at is None:
            return
        if kind in ("response.output_item.added", "response.output_item.done"):
            self._item(chunk, at, opened=kind == "response.output_item.added")
        elif kind in ("response.content_part.added", "response.content_part.done"):
            self._part(chunk, at, opened=kind == "response.content_part.added")
        elif kind in DELTA_PARTS and isinstance(delta := chunk.get("delta"), str):
            self.said.setdefault((at, _index(chunk, "content_index") or 0), []).append(delta)

    def close(self, emit: Emit) -> list[bytes]:
        """The events that close every open part and item, each as far as it was released."""
        events: list[bytes] = []
        for at in sorted(self.open):
            item = self.items[at]
            parts = sorted(p for p in self.parts if p[0] == at)
            for part in parts:
                if part in self.open_parts:
                    events += self._close_part(emit, item, part)
            closed = {**item, "status": "incomplete"}
            if parts or item.get("type") == "message":
                closed["content"] = [self.parts[part] for part in parts]
            self.items[at] = closed
            events.append(emit("response.output_item.done", output_index=at, item=closed))
        self.open.clear()
        return events

    def output(self) -> list[dict[str, Any]]:
        return [self.items[at] for at in sorted(self.items)]

    def _item(self, chunk: dict[str, Any], at: int, opened: bool) -> None:
        item = chunk.get("item")
        if isinstance(item, dict):
            self.items[at] = item
            (self.open.add if opened else self.open.discard)(at)

    def _part(self, chunk: dict[str, Any], at: int, opened: bool) -> None:
        part, key = chunk.get("part"), (at, _index(chunk, "content_index") or 0)
        if isinstance(part, dict):
            self.parts[key] = part
            (self.open_parts.add if opened else self.open_parts.discard)(key)

    def _close_part(self, emit: Emit, item: dict[str, Any], key: Part) -> list[bytes]:
        at, index = key
        part = self.parts[key]
        where = {"item_id": item.get("id"), "output_index": at, "content_index": index}
        events = []
        if (known := PART_TEXT.get(str(part.get("type")))) is not None:
            _, done, field = known
            text = "".join(self.said.get(key, []))
            part = {**part, field: text}
            extra: dict[str, Any] = {"logprobs": []} if done == "response.output_text.done" else {}
            events.append(emit(done, **where, **{field: text}, **extra))
        self.parts[key] = part
        self.open_parts.discard(key)
        return [*events, emit("response.content_part.done", **where, part=part)]
