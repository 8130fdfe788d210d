"""The OpenAI Responses API's event stream, translated from a worker's OpenAI chat stream as it
arrives, and the relay (``dialects.relay.Relay``) that does it for the chat handler. Pure.

The events are those the official SDK accumulates (``client.responses.stream``) and Codex CLI
waits for, each ``event: <type>`` with its JSON ``data`` carrying ``type`` and a
``sequence_number`` that counts from 0::

    response.created, response.in_progress
    per output item, in order (reasoning, then the message, then each function call):
      response.output_item.added
      reasoning: response.content_part.added, response.reasoning_text.delta …,
                 response.reasoning_text.done, response.content_part.done
      message:   response.content_part.added, response.output_text.delta …,
                 response.output_text.done, response.content_part.done
      function call: response.function_call_arguments.delta …,
                 response.function_call_arguments.done
      response.output_item.done
    response.completed (response.incomplete when the worker stopped at its token limit)

A failure (the worker's error chunk, a stream cut short, a stall) is an ``error`` event and
``response.failed`` (its ``response.error`` saying what happened), and nothing after: never a
``response.completed``. Parallel tool calls may interleave their fragments: each call is its own
item, open until the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from orjson import JSONDecodeError

from gateway.dialects.responses_answer import (
    Shape,
    arguments_of,
    call_item,
    message_item,
    reasoning_item,
    reasoning_of,
    status_of,
    text_part,
    usage_of,
)
from gateway.dialects.sse import DONE, event_data
from gateway.errors import GatewayError

_dumps, _loads = orjson.dumps, orjson.loads
_DELTA = {"message": "response.output_text.delta", "reasoning": "response.reasoning_text.delta"}
_DONE = {"message": "response.output_text.done", "reasoning": "response.reasoning_text.done"}
_PREFIX = {"message": "msg", "reasoning": "rs"}


def encode(kind: str, data: dict[str, Any]) -> bytes:
    """One SSE event: its ``event:`` line is the data's ``type``."""
    return b"event: " + kind.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


@dataclass(slots=True, eq=False)
class _Open:
    """The reasoning or message item being written."""

    kind: str  # reasoning | message
    index: int
    id: str
    parts: list[str] = field(default_factory=list)
    head: bytes = b""  # its delta events' bytes up to the delta's text


@dataclass(slots=True, eq=False)
class _Call:
    index: int
    id: str
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class ResponsesStream:
    """Chat chunks in, Responses events out (as bytes); ``final`` is the last ``response``."""

    __slots__ = (
        "calls",
        "ended",
        "final",
        "finish_reason",
        "input_estimate",
        "items",
        "open",
        "out",
        "seq",
        "shape",
        "started",
        "usage",
    )

    def __init__(self, shape: Shape, input_estimate: int = 0) -> None:
        self.shape = shape
        self.input_estimate = input_estimate
        self.seq = 0
        self.started = self.ended = False
        self.items: list[dict[str, Any] | None] = []  # by output index, once done
        self.open: _Open | None = None
        self.calls: dict[int, _Call] = {}  # by the chat tool call's index
        self.finish_reason: object = None
        self.usage: dict[str, Any] | None = None  # the worker's (chat) usage
        self.final: dict[str, Any] | None = None
        self.out: list[bytes] = []

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        data["sequence_number"] = self.seq
        self.seq += 1
        self.out.append(encode(kind, {"type": kind, **data}))

    def _take(self) -> bytes:
        out, self.out = self.out, []
        return b"".join(out)

    def _start(self) -> None:
        self.started = True
        created = self.shape.response("in_progress", [])
        self._emit("response.created", {"response": created})
        self._emit("response.in_progress", {"response": created})

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The events one chat chunk makes."""
        if self.ended:
            return b""
        if not self.started:
            self._start()
        if chunk.get("error") is not None:
            return self.fail(_message_of(chunk["error"]), "upstream_error")
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            self.usage = usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice)
        return self._take()

    def text(self, text: str) -> bytes:
        """The events of more answer text (the commonest chunk's whole meaning)."""
        if self.ended:
            return b""
        if not self.started:
            self._start()
        self._text("message", text)
        return self._take()

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = reasoning_of(delta)
            if reasoning is not None:
                self._text("reasoning", reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text("message", content)
            calls = delta.get("tool_calls")
            for fragment in calls if isinstance(calls, list) else ():
                if isinstance(fragment, dict):
                    self._fragment(fragment)
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]

    def _text(self, kind: str, text: str) -> None:
        item = self.open
        if item is None or item.kind != kind:
            item = self._open(kind)
        item.parts.append(text)
        seq = self.seq
        self.seq += 1
        self.out.append(item.head + _dumps(text) + b',"sequence_number":%d}\n\n' % seq)

    def _open(self, kind: str) -> _Open:
        self._close()
        index = len(self.items)
        self.items.append(None)
        item = _Open(kind, index, self.shape.item_id(_PREFIX[kind], index))
        if kind == "message":
            added, part = message_item(item.id, None, "in_progress"), text_part("")
        else:
            added = reasoning_item(item.id, "", "in_progress")
            added["content"], part = [], {"type": "reasoning_text", "text": ""}
        self._emit("response.output_item.added", {"output_index": index, "item": added})
        self._emit(
            "response.content_part.added",
            {"item_id": item.id, "output_index": index, "content_index": 0, "part": part},
        )
        kind_name = _DELTA[kind]
        logprobs = ',"logprobs":[]' if kind == "message" else ""
        item.head = (
            b"event: %s\ndata: {"
            b'"type":"%s","item_id":"%s","output_index":%d,"content_index":0%s,"delta":'
            % (kind_name.encode(), kind_name.encode(), item.id.encode(), index, logprobs.encode())
        )
        self.open = item
        return item

    def _close(self) -> None:
        """The open reasoning or message item, done."""
        item, self.open = self.open, None
        if item is None:
            return
        text = "".join(item.parts)
        where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        if item.kind == "message":
            part = text_part(text)
            self._emit(_DONE["message"], {**where, "text": text, "logprobs": []})
            done = message_item(item.id, text)
        else:
            part = {"type": "reasoning_text", "text": text}
            self._emit(_DONE["reasoning"], {**where, "text": text})
            done = reasoning_item(item.id, text)
        self._emit("response.content_part.done", {**where, "part": part})
        self._done(item.index, done)

    def _done(self, index: int, item: dict[str, Any]) -> None:
        self.items[index] = item
        self._emit("response.output_item.done", {"output_index": index, "item": item})

    def _fragment(self, fragment: dict[str, Any]) -> None:
        function = fragment.get("function")
        function = function if isinstance(function, dict) else {}
        key = fragment.get("index")
        if type(key) is not int:  # a worker that sends each call whole, without an index
            key = max(self.calls, default=-1) + (1 if fragment.get("id") else 0)
        call = self.calls.get(key)
        if call is None:
            call = self._new_call(key, fragment.get("id"), function.get("name"))
        elif isinstance(function.get("name"), str) and not call.name:
            call.name = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.arguments.append(arguments)
            self._emit(
                "response.function_call_arguments.delta",
                {"item_id": call.id, "output_index": call.index, "delta": arguments},
            )

    def _new_call(self, key: int, call_id: object, name: object) -> _Call:
        if self.open is not None:
            self._close()
        index = len(self.items)
        self.items.append(None)
        call = _Call(
            index,
            self.shape.item_id("fc", index),
            call_id if isinstance(call_id, str) and call_id else self.shape.item_id("call", key),
            name if isinstance(name, str) else "",
        )
        self.calls[key] = call
        added = call_item(self.shape, call.id, call.call_id, call.name, "", "in_progress")
        self._emit("response.output_item.added", {"output_index": index, "item": added})
        return call

    def _close_call(self, call: _Call) -> None:
        arguments = arguments_of("".join(call.arguments))
        self._emit(
            "response.function_call_arguments.done",
            {"item_id": call.id, "output_index": call.index, "arguments": arguments},
        )
        self._done(call.index, call_item(self.shape, call.id, call.call_id, call.name, arguments))

    def finish(self, output_estimate: int = 0) -> bytes:
        """The end of a complete answer: every item done, then ``response.completed`` (or
        ``response.incomplete``)."""
        if self.ended:
            return b""
        if not self.started:
            self._start()
        self.ended = True
        if not self.items:  # nothing was said: an empty message, as OpenAI answers it
            self._open("message")
        self._close()
        for call in sorted(self.calls.values(), key=lambda c: c.index):
            self._close_call(call)
        status, details = status_of(self.finish_reason)
        usage = usage_of(self.usage, (self.input_estimate, output_estimate))
        final = self.shape.response(status, [i for i in self.items if i is not None], usage)
        final["incomplete_details"] = details
        self.final = final
        kind = "response.completed" if status == "completed" else "response.incomplete"
        self._emit(kind, {"response": final})
        return self._take()

    def fail(self, message: str, code: str = "server_error") -> bytes:
        """The end of a failed answer: an ``error`` event and ``response.failed``."""
        if self.ended:
            return b""
        if not self.started:
            self._start()
        self.ended = True
        self._emit("error", {"code": code, "message": message, "param": None})
        failed = self.shape.response("failed", [i for i in self.items if i is not None])
        failed["error"] = {"code": "server_error", "message": message}
        self._emit("response.failed", {"response": failed})
        return self._take()


def _message_of(error: object) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return message if isinstance(message, str) and message else "The upstream failed."


class ResponsesRelay:
    """Relays a worker's chat stream to a Responses client (``dialects.relay.Relay``)."""

    __slots__ = ("chunks", "done", "stream", "usage")

    def __init__(self, shape: Shape, input_estimate: int = 0) -> None:
        self.stream = ResponsesStream(shape, input_estimate)
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.chunks = 0

    @property
    def final(self) -> dict[str, Any] | None:
        """The completed ``response`` (None until the answer ended well)."""
        return self.stream.final

    def relay(self, events: list[bytes]) -> bytes:
        parts: list[bytes] = []
        stream = self.stream
        for event in events:
            data = event_data(event)
            if data is None:
                continue  # comments and keep-alives: the Responses stream has its own events
            if data == DONE:
                self.done = True
                continue
            try:
                chunk = _loads(data)
            except JSONDecodeError:
                parts.append(stream.fail("The upstream sent a stream event that is not JSON."))
                continue
            if type(chunk) is dict:
                self.chunks += 1
                parts.append(stream.feed(chunk))
        self.usage = stream.usage
        return b"".join(parts)

    def error(self, error: GatewayError) -> bytes:
        return self.stream.fail(error.message, error.code)

    def finish(self) -> bytes:
        return self.stream.finish(self.estimated_completion_tokens())

    def estimated_completion_tokens(self) -> int:
        return max(0, self.chunks - 2)
