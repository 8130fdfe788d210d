"""Relays turn upstream OpenAI stream events into the bytes the client gets, one batch of
events at a time: the OpenAI relay (``dialects.openai``) passes them through; the Anthropic relay
here translates them into the Messages event stream. Pure.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from gateway.dialects import anthropic
from gateway.dialects.sse import DONE, event_data
from gateway.errors import GatewayError


class Relay(Protocol):
    usage: dict[str, Any] | None
    done: bool

    def relay(self, events: list[bytes]) -> bytes: ...

    def error(self, error: GatewayError) -> bytes: ...

    def finish(self) -> bytes: ...

    def estimated_completion_tokens(self) -> int: ...


class AnthropicRelay:
    """Translates an upstream OpenAI stream into Anthropic Messages events as it arrives."""

    __slots__ = ("chunks", "done", "translator", "usage")

    def __init__(self, model: str) -> None:
        self.translator = anthropic.StreamTranslator(model)
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.chunks = 0

    def relay(self, events: list[bytes]) -> bytes:
        out: list[tuple[str, dict[str, Any]]] = []
        for event in events:
            data = event_data(event)
            if data is None:
                continue
            if data == DONE:
                self.done = True
                continue
            chunk = orjson.loads(data)
            if not isinstance(chunk, dict):
                continue
            self.chunks += 1
            usage = chunk.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                self.usage = usage
            out.extend(self.translator.feed(chunk))
        return b"".join(anthropic.encode_event(name, data) for name, data in out)

    def error(self, error: GatewayError) -> bytes:
        name, data = anthropic.error_event(error.anthropic_type, error.message)
        return anthropic.encode_event(name, data)

    def finish(self) -> bytes:
        return b"".join(anthropic.encode_event(n, d) for n, d in self.translator.finish())

    def estimated_completion_tokens(self) -> int:
        return max(0, self.chunks - 2)
