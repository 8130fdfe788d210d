"""Relays turn upstream OpenAI stream events into the bytes the client gets, one batch of
events at a time: the OpenAI relay (``dialects.openai``) passes them through; the Anthropic relay
here translates them into the Messages event stream. Pure.

Once the Anthropic stream has ended for the client (``message_stop``, or an ``error`` event for an
upstream error chunk or an upstream event that is not JSON), nothing more is written: a failure
the gateway notices later (the upstream closing without ``[DONE]``) adds no second ending.
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
    """Translates an upstream OpenAI stream into Anthropic Messages events as it arrives.

    ``input_tokens`` (the gateway's estimate of the prompt) goes into ``message_start``; the
    upstream's own count follows in ``message_delta``. Without upstream usage, ``message_delta``
    reports the estimated output tokens (the count the gateway charges) instead of 0.
    """

    __slots__ = ("chunks", "done", "translator", "usage")

    def __init__(self, model: str, input_tokens: int | None = None) -> None:
        self.translator = anthropic.StreamTranslator(model, input_tokens=input_tokens)
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.chunks = 0

    def relay(self, events: list[bytes]) -> bytes:
        parts: list[bytes] = []
        translator = self.translator
        for event in events:
            data = event_data(event)
            if data is None:
                continue
            if data == DONE:
                self.done = True
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                parts.append(
                    _encode(translator.fail("The upstream sent a stream event that is not JSON."))
                )
                continue
            if not isinstance(chunk, dict):
                continue
            self.chunks += 1
            usage = chunk.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                self.usage = usage
            fast = translator.text_delta(chunk)
            parts.append(fast if fast is not None else _encode(translator.feed(chunk)))
        return b"".join(parts)

    def error(self, error: GatewayError) -> bytes:
        return _encode(self.translator.fail(error.message, error.anthropic_type))

    def finish(self) -> bytes:
        return _encode(self.translator.finish(self.estimated_completion_tokens()))

    def estimated_completion_tokens(self) -> int:
        return max(0, self.chunks - 2)


def _encode(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(anthropic.encode_event(name, data) for name, data in events)
