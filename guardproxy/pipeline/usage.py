"""The tokens an answer consumed, in one shape for every API (the names OpenTelemetry's GenAI
conventions and two of the three APIs use: `input_tokens`, `output_tokens`).

A stream the proxy cuts off is closed before the upstream's own final count arrives (Chat's
usage chunk, Responses' `response.completed`, Messages' last `message_delta`), and closing it
is what stops the generation being paid for. What it consumed is then what the proxy read:
the upstream's last reported counts (Messages reports the input in `message_start`, vLLM
every chunk with `continuous_usage_stats`), and at least one output token per event that
carried generated text. OpenAI and vLLM stream about one token per event and Anthropic
several, so that count is a floor, never an overcharge; the proxy has no tokenizer of the
upstream's model to do better. An input count the upstream never reported stays 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["upstream", "read"]  # the upstream's final count, or what the proxy read
INPUT_NAMES = ("input_tokens", "prompt_tokens")  # Responses and Messages, then Chat
OUTPUT_NAMES = ("output_tokens", "completion_tokens")


@dataclass(frozen=True)
class TokenUsage:
    input_tokens: int
    output_tokens: int
    source: Source = "upstream"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def counts(self, input_name: str, output_name: str) -> dict[str, int]:
        """The counts under an API's names, with their total."""
        return {
            input_name: self.input_tokens,
            output_name: self.output_tokens,
            "total_tokens": self.total_tokens,
        }

    def record(self) -> dict[str, Any]:
        """The audit record's `usage`."""
        return {**self.counts("input_tokens", "output_tokens"), "source": self.source}


def usage_of(usage: Any) -> TokenUsage | None:
    """An upstream's `usage` object, in any of the three APIs' names."""
    if not isinstance(usage, dict):
        return None
    return TokenUsage(_count(usage, INPUT_NAMES) or 0, _count(usage, OUTPUT_NAMES) or 0)


def _count(usage: dict[str, Any], names: tuple[str, ...], default: int | None = None) -> int | None:
    """The first of `names` that is a count, or `default`."""
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


@dataclass
class StreamUsage:
    """What one stream has told of its tokens so far, as the proxy reads it."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    final: bool = False  # the upstream's own final count has arrived
    text_events: int = 0

    def reported(self, usage: Any, final: bool = False) -> None:
        """A usage object the upstream sent; a later one replaces the counts it names."""
        if not isinstance(usage, dict):
            return
        self.input_tokens = _count(usage, INPUT_NAMES, self.input_tokens)
        self.output_tokens = _count(usage, OUTPUT_NAMES, self.output_tokens)
        self.final = self.final or final

    def generated(self, text: str) -> None:
        self.text_events += bool(text)

    def consumed(self) -> TokenUsage:
        if self.final:
            return TokenUsage(self.input_tokens or 0, self.output_tokens or 0)
        output = max(self.output_tokens or 0, self.text_events)
        return TokenUsage(self.input_tokens or 0, output, "read")
