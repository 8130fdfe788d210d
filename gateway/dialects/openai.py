"""The OpenAI dialect: validating a chat request and relaying an upstream OpenAI stream. Pure.

The upstream always speaks OpenAI, so for an OpenAI client the relay passes each event through
as it came, only noting the usage and ``[DONE]`` and dropping the usage-only chunk the gateway
asked for on the client's behalf.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.dialects.inputs import MAX_N, MAX_OUTPUT_TOKENS, whole
from gateway.dialects.sse import DONE, encode_data, event_data
from gateway.errors import BadRequest, GatewayError

Usage = dict[str, Any]


def check_request(body: object) -> dict[str, Any]:
    """The body as a chat request, or ``BadRequest`` saying what is wrong with it."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object with 'model' and 'messages'.")
    model = body.get("model")
    if model is None:
        raise BadRequest("'model' is required: name the model to use.", param="model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string.", param="model")
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("'messages' is required: a list of chat messages.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of messages.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(
                f"messages[{i}] must be an object with a 'role'.", param=f"messages[{i}]"
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be true or false.", param="stream")
    max_output_tokens(body)
    whole(body, "n", 1, MAX_N)  # a worker reads "100" or 100.0 as 100: reserved as it reads it
    return body


def max_output_tokens(body: dict[str, Any]) -> int | None:
    """The most a worker may generate per choice by the body's limits: the larger of
    ``max_completion_tokens`` and ``max_tokens`` (vLLM reads the first unless it is null, TGI
    only the second; an Anthropic body's extra fields are forwarded), None when neither is set."""
    found = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{name}' must be a whole number ≥ 1.", param=name)
        if value > MAX_OUTPUT_TOKENS:
            raise BadRequest(f"'{name}' must be at most {MAX_OUTPUT_TOKENS}.", param=name)
        found = value if found is None else max(found, value)
    return found


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def usage_of(answer: object) -> Usage | None:
    """The ``usage`` object of a non-streamed answer, if it has a sane one."""
    if isinstance(answer, dict):
        usage = answer.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            return usage
    return None


class OpenAIRelay:
    """Relays upstream events to an OpenAI client, event by event."""

    __slots__ = ("chunks", "done", "include_usage", "usage")

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.done = False
        self.chunks = 0

    def relay(self, events: list[bytes]) -> bytes:
        out = []
        for event in events:
            data = event_data(event)
            if data is None:
                out.append(event + b"\n\n")  # comments and keep-alives pass as they are
                continue
            if data == DONE:
                self.done = True
            elif data.find(b'"usage":{') >= 0 or data.find(b'"usage": {') >= 0:  # (than `in`)
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    chunk = None  # not JSON: passed on as it came, like any other event
                self.usage = usage_of(chunk) or self.usage
                if not self.include_usage and type(chunk) is dict and not chunk.get("choices"):
                    continue
            else:
                self.chunks += 1
            out.append(event + b"\n\n")
        return b"".join(out)

    def error(self, error: GatewayError) -> bytes:
        return encode_data(error.render(anthropic=False))

    def finish(self) -> bytes:
        return b""

    def estimated_completion_tokens(self) -> int:
        """Without upstream usage: about one token per content chunk (as vLLM streams them)."""
        return max(0, self.chunks - 2)
