"""The Anthropic Messages stream's events, as data and as bytes: encoding one event as the
Anthropic API writes it, and the two writers the stream translator emits into, ``EventWriter``
(``(name, data)`` pairs) and ``ByteWriter`` (the encoded bytes, constant events prebuilt). Pure.

Both writers take the same calls, so the translator's logic is written once and neither of its
methods changes what it returns on a flag; the tests hold the bytes of ``ByteWriter`` to what
``encode_event`` writes for ``EventWriter``'s events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import orjson

Event = tuple[str, dict[str, Any]]

# The signature of a thinking block the gateway passes on: the worker's reasoning is not signed
# by anyone, and the client's SDK wants a string (thinking blocks sent back are dropped unread).
SIGNATURE = "gateway-unsigned"

_EVENT_HEADS = {
    name: b"event: " + name.encode() + b"\ndata: "
    for name in (
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    )
}
# A text delta event is ``TEXT_DELTA % index`` + the text as a JSON string + ``TEXT_DELTA_END``
# (a thinking delta likewise with ``THINKING_DELTA``).
TEXT_DELTA = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":'
)
THINKING_DELTA = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":%d,"delta":{"type":"thinking_delta",'
    b'"thinking":'
)
TEXT_DELTA_END = b"}}\n\n"
# The events of a stream that (but for an index, or the start's id, model and token count) are
# always the same bytes, written as ``encode_event`` writes them (the tests hold them to it).
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
MESSAGE_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":%s,"type":"message",'
    b'"role":"assistant","model":%s,"content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":%s,"output_tokens":0}}}\n\n'
)
BLOCK_STARTS = {
    kind: b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":%d,"content_block":' + block + b"}\n\n"
    for kind, block in (
        ("text", b'{"type":"text","text":""}'),
        ("thinking", b'{"type":"thinking","thinking":"","signature":""}'),
    )
}
SIGNATURE_DELTA = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":%d,"delta":{"type":"signature_delta",'
    b'"signature":' + orjson.dumps(SIGNATURE) + b"}}\n\n"
)
BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'


def _event_head(name: str) -> bytes:
    head = _EVENT_HEADS.get(name)
    return head if head is not None else b"event: " + name.encode() + b"\ndata: "


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event, as the Anthropic API writes it."""
    return _event_head(name) + orjson.dumps(data) + b"\n\n"


def encode_events(events: Iterable[Event]) -> bytes:
    """The events one after the other, each as ``encode_event`` writes it."""
    parts: list[bytes] = []
    for name, data in events:
        parts += (_event_head(name), orjson.dumps(data), b"\n\n")
    return b"".join(parts)


def ping() -> Event:
    return "ping", {"type": "ping"}


def error_event(error_type: str, message: str) -> Event:
    return "error", {"type": "error", "error": {"type": error_type, "message": message}}


def anthropic_message(
    message_id: str,
    model: str,
    content: list[dict[str, Any]],
    reason: str | None,
    sequence: str | None,
    input_tokens: int,
    output_tokens: int,
) -> dict[str, Any]:
    """An Anthropic ``message``: a whole answer's, or the empty one ``message_start`` carries
    (its fields and their order written once)."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def message_start(message_id: str, model: str, input_tokens: int) -> Event:
    start = anthropic_message(message_id, model, [], None, None, input_tokens, 0)
    return "message_start", {"type": "message_start", "message": start}


def block_start(index: int, block: dict[str, Any]) -> Event:
    return "content_block_start", {
        "type": "content_block_start",
        "index": index,
        "content_block": block,
    }


def block_delta(index: int, delta: dict[str, Any]) -> Event:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


class Writer(Protocol):
    """Where the stream translator's events go, in order."""

    def start(self, message_id: str, model: str, input_tokens: int) -> None:
        """``message_start``, then a ``ping``."""

    def open_text(self, index: int, kind: str) -> None:
        """``content_block_start`` of an empty ``text`` or ``thinking`` block."""

    def open_block(self, index: int, block: dict[str, Any]) -> None:
        """``content_block_start`` of any other block (a ``tool_use``)."""

    def text(self, index: int, kind: str, text: str) -> None:
        """A ``text_delta`` or ``thinking_delta``."""

    def delta(self, index: int, delta: dict[str, Any]) -> None:
        """Any other ``content_block_delta`` (``input_json_delta``)."""

    def signature(self, index: int) -> None:
        """The ``signature_delta`` that ends a thinking block."""

    def close(self, index: int) -> None:
        """``content_block_stop``."""

    def end(self, delta: dict[str, Any], usage: dict[str, int]) -> None:
        """``message_delta``, then ``message_stop``."""

    def event(self, event: Event) -> None:
        """An event as it is (an ``error``)."""


class EventWriter:
    """Collects the events as ``(name, data)`` pairs."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Event] = []

    def start(self, message_id: str, model: str, input_tokens: int) -> None:
        self.events += (message_start(message_id, model, input_tokens), ping())

    def open_text(self, index: int, kind: str) -> None:
        block = {"type": "text", "text": ""} if kind == "text" else _empty_thinking()
        self.events.append(block_start(index, block))

    def open_block(self, index: int, block: dict[str, Any]) -> None:
        self.events.append(block_start(index, block))

    def text(self, index: int, kind: str, text: str) -> None:
        self.events.append(block_delta(index, {"type": f"{kind}_delta", kind: text}))

    def delta(self, index: int, delta: dict[str, Any]) -> None:
        self.events.append(block_delta(index, delta))

    def signature(self, index: int) -> None:
        self.events.append(block_delta(index, {"type": "signature_delta", "signature": SIGNATURE}))

    def close(self, index: int) -> None:
        self.events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))

    def end(self, delta: dict[str, Any], usage: dict[str, int]) -> None:
        data = {"type": "message_delta", "delta": delta, "usage": usage}
        self.events += (("message_delta", data), ("message_stop", {"type": "message_stop"}))

    def event(self, event: Event) -> None:
        self.events.append(event)


def _empty_thinking() -> dict[str, Any]:
    return {"type": "thinking", "thinking": "", "signature": ""}


class ByteWriter:
    """Writes the events' bytes, byte for byte what ``encode_event`` writes for the events
    ``EventWriter`` collects from the same calls, with less work: constant events prebuilt,
    ``message_start`` and text deltas from templates."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def joined(self) -> bytes:
        """The bytes written since the last call (and the writer emptied)."""
        parts = self.parts
        if not parts:
            return b""
        self.parts = []
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def start(self, message_id: str, model: str, input_tokens: int) -> None:
        dumps = orjson.dumps
        start = MESSAGE_START % (dumps(message_id), dumps(model), dumps(input_tokens))
        self.parts.append(start + PING)

    def open_text(self, index: int, kind: str) -> None:
        self.parts.append(BLOCK_STARTS[kind] % index)

    def open_block(self, index: int, block: dict[str, Any]) -> None:
        self.parts.append(encode_event(*block_start(index, block)))

    def text(self, index: int, kind: str, text: str) -> None:
        head = TEXT_DELTA if kind == "text" else THINKING_DELTA
        self.parts += (head % index, orjson.dumps(text), TEXT_DELTA_END)

    def delta(self, index: int, delta: dict[str, Any]) -> None:
        self.parts.append(encode_event(*block_delta(index, delta)))

    def signature(self, index: int) -> None:
        self.parts.append(SIGNATURE_DELTA % index)

    def close(self, index: int) -> None:
        self.parts.append(BLOCK_STOP % index)

    def end(self, delta: dict[str, Any], usage: dict[str, int]) -> None:
        data = {"type": "message_delta", "delta": delta, "usage": usage}
        self.parts += (encode_event("message_delta", data), MESSAGE_STOP)

    def event(self, event: Event) -> None:
        self.parts.append(encode_event(*event))
