"""A worker's own Responses event stream, relayed (native mode): events pass as they came, the
relay only notes where the answer ends (``response.completed``, ``response.incomplete``,
``response.failed``, an ``error`` event, or ``[DONE]``), the final ``response`` and its usage
(as chat's ``prompt_tokens``/``completion_tokens``, which the settlement reads). Pure.

``relay`` returns a batch split at its terminal event, so the caller can keep the response
before the client reads its end.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.dialects.sse import DONE, event_data
from gateway.errors import GatewayError

TERMINAL = (b"response.completed", b"response.incomplete", b"response.failed")
TERMINAL_TYPES = frozenset(t.decode() for t in TERMINAL) | {"error"}


def chat_usage(usage: object) -> dict[str, int] | None:
    """A Responses ``usage`` as the chat usage a settlement reads."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    if type(prompt) is not int:
        return None
    completion = completion if type(completion) is int else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion}


def _may_end(event: bytes) -> bool:
    """Whether an event may be a terminal one (only those are parsed)."""
    return any(name in event for name in TERMINAL) or b"error" in event or DONE in event


class NativeRelay:
    """Relays a worker's Responses events to the client as they come."""

    __slots__ = ("deltas", "done", "events", "final", "usage")

    def __init__(self) -> None:
        self.usage: dict[str, int] | None = None
        self.final: dict[str, Any] | None = None  # the completed (or incomplete) response
        self.done = False
        self.events = 0  # relayed: the next sequence number, as workers count them
        self.deltas = 0

    def relay(self, events: list[bytes]) -> tuple[bytes, bytes]:
        """The batch as bytes for the client, split before its terminal event (the second part
        is empty when the answer goes on)."""
        head: list[bytes] = []
        for i, event in enumerate(events):
            if b".delta" in event:
                self.deltas += 1
            elif _may_end(event) and self._ends(event):
                tail = b"".join(e + b"\n\n" for e in events[i:])
                self.events += len(events) - i
                return b"".join(head), tail
            self.events += 1
            head.append(event + b"\n\n")
        return b"".join(head), b""

    def _ends(self, event: bytes) -> bool:
        data = event_data(event)
        if data is None:
            return False
        if data == DONE:
            self.done = True
            return True
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        if not isinstance(kind, str) or kind not in TERMINAL_TYPES:
            return False
        self.done = True
        response = parsed.get("response") if isinstance(parsed, dict) else None
        if isinstance(response, dict):
            self.usage = chat_usage(response.get("usage")) or self.usage
            if kind != "response.failed":
                self.final = response
        return True

    def error(self, error: GatewayError) -> bytes:
        data = {
            "type": "error",
            "code": error.code,
            "message": error.message,
            "param": None,
            "sequence_number": self.events,
        }
        return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"

    def estimated_completion_tokens(self) -> int:
        return self.deltas
