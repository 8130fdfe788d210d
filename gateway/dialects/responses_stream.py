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
from typing import Any, cast

import orjson
from orjson import JSONDecodeError

from gateway.dialects.anthropic_stream import plain_text
from gateway.dialects.relay import LEARN_ATTEMPTS, NO_FRAME, Frame, learn_frame
from gateway.dialects.responses_answer import (
    IN_PROGRESS,
    MESSAGE_ITEM,
    TEXT_PART,
    Shape,
    arguments_of,
    call_item,
    reasoning_of,
    status_of,
    usage_json,
)
from gateway.dialects.sse import BACKSLASH, DONE, LF, event_data
from gateway.errors import GatewayError

_dumps, _loads = orjson.dumps, orjson.loads
_DONE = {"message": "response.output_text.done", "reasoning": "response.reasoning_text.done"}
# The bytes of each kind of item's events (the same JSON as ``responses_answer``'s dicts: the
# golden files and the SDK replays compare the stream's response with the whole answer's).
_ADDED = {
    "message": b'"output_index":%d,"item":{"id":"%s","type":"message","role":"assistant",'
    b'"status":"in_progress","content":[]}',
    "reasoning": b'"output_index":%d,"item":{"id":"%s","type":"reasoning","summary":[],'
    b'"content":[],"status":"in_progress"}',
}
_PART = {
    "message": TEXT_PART,
    "reasoning": b'{"type":"reasoning_text","text":%s}',
}
_PART_ADDED = {
    kind: b'"item_id":"%s","output_index":%d,"content_index":0,"part":' + part % b'""'
    for kind, part in _PART.items()
}
_DELTA_HEAD = {
    "message": b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    b'"item_id":"%s","output_index":%d,"content_index":0,"logprobs":[],"delta":',
    "reasoning": b"event: response.reasoning_text.delta\ndata: "
    b'{"type":"response.reasoning_text.delta","item_id":"%s","output_index":%d,'
    b'"content_index":0,"delta":',
}
_TEXT_DONE = {"message": b'"text":%s,"logprobs":[]', "reasoning": b'"text":%s'}
_ITEM = {
    "message": MESSAGE_ITEM,
    "reasoning": b'{"id":"%s","type":"reasoning","summary":[],"content":[%s],"status":"completed"}',
}
_PREFIX = {"message": "msg", "reasoning": "rs"}
_SEQ = b',"sequence_number":%d}\n\n'  # the end of every event
# The ends of the first events, made once: a delta's end is looked up, not formatted (``%d``
# costs as much as the rest of the event), while the stream is shorter (``_end``)
_KNOWN_ENDS = 1024
_SEQ_ENDS = tuple(_SEQ % seq for seq in range(_KNOWN_ENDS))


def _template(kind: str, members: bytes) -> bytes:
    """An event of ``kind`` whose data's members, between its type and its number, are
    ``members`` (a template: ``%s`` and ``%d`` fill in)."""
    return b'event: %s\ndata: {"type":"%s",%s,"sequence_number":%%d}\n\n' % (
        kind.encode(),
        kind.encode(),
        members,
    )


# ``_raw``'s events, and those carrying a whole response, by kind
_RAW = {
    kind: _template(kind, b"%s")
    for kind in (
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        *_DONE.values(),
    )
}
_WHOLE = {  # (what goes before the response in each event carrying one; ``_end`` ends it)
    kind: _template(kind, b'"response":%s').split(b"%s")[0]
    for kind in ("response.completed", "response.incomplete", "response.failed")
}
# The stream's first two events (numbered 0 and 1), each with the response in progress, in
# the pieces around its head, model and echo (gathered in ``out``, joined once by ``take``)
_S0, _S1, _S2, _S3, _S4, _S5, _S6 = (
    _template("response.created", b'"response":%s') % (IN_PROGRESS, 0)
    + _template("response.in_progress", b'"response":%s') % (IN_PROGRESS, 1)
).split(b"%s")
_WHERE = b'"item_id":"%s","output_index":%d,"content_index":0,'
# An item opened (its added events) and closed (its text done, its part done, the item done),
# each in one template: (index, id, seq, id, index, seq) and (id, index, text, seq, id, index,
# part, seq, index, item, seq).
_OPENED = {
    kind: _template("response.output_item.added", _ADDED[kind])
    + _template("response.content_part.added", _PART_ADDED[kind])
    for kind in _ADDED
}
_CLOSED = {
    kind: _template(_DONE[kind], _WHERE + _TEXT_DONE[kind])
    + _template("response.content_part.done", _WHERE + b'"part":%s')
    + _template("response.output_item.done", b'"output_index":%d,"item":%s')
    for kind in _DONE
}


def _end(seq: int) -> bytes:
    """The end of the event numbered ``seq``."""
    return _SEQ_ENDS[seq] if seq < _KNOWN_ENDS else _SEQ % seq


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
    """Chat chunks in, Responses events out (as bytes, gathered in ``out`` until ``take``);
    ``final`` is the last ``response``."""

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
        self.items: list[bytes | None] = []  # encoded, by output index, once done
        self.open: _Open | None = None
        self.calls: dict[int, _Call] = {}  # by the chat tool call's index
        self.finish_reason: object = None
        self.usage: dict[str, Any] | None = None  # the worker's (chat) usage
        self.final: bytes | None = None  # the last response, encoded, once it ended well
        self.out: list[bytes] = []

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        data["sequence_number"] = self.seq
        self.seq += 1
        self.out.append(encode(kind, {"type": kind, **data}))

    def _emit_response(self, kind: str, response: bytes) -> None:
        """An event carrying the whole ``response`` (given encoded)."""
        self.out += (_WHOLE[kind], response, _end(self.seq))  # (no copy of it made here)
        self.seq += 1

    def take(self) -> bytes:
        """The events made since the last ``take``."""
        out, self.out = self.out, []
        return b"".join(out)

    def _start(self) -> None:
        self.started = True  # (nothing goes before: the events numbered 0 and 1)
        head, model, echo = self.shape.head, self.shape.model_json, self.shape.echo_json
        self.out += (_S0, head, _S1, model, _S2, echo, _S3, head, _S4, model, _S5, echo, _S6)
        self.seq = 2

    def feed(self, chunk: dict[str, Any]) -> None:
        """The events one chat chunk makes."""
        if self.ended:
            return
        if not self.started:
            self._start()
        # (``in`` before a lookup, ``type() is``: a parsed chunk's members, with few calls)
        if "error" in chunk and chunk["error"] is not None:
            self.fail(_message_of(chunk["error"]), "upstream_error")
            return
        if "usage" in chunk:
            usage = chunk["usage"]
            if type(usage) is dict and isinstance(usage.get("prompt_tokens"), int):
                self.usage = usage
        choices = chunk.get("choices")
        if type(choices) is list:
            for choice in choices:
                if type(choice) is dict and choice.get("index", 0) == 0:
                    self._choice(choice)

    def writing(self) -> _Open | None:
        """The message being written (more text goes to it as it is), if any."""
        item = self.open
        return item if item is not None and item.kind == "message" and not self.ended else None

    def text(self, text: str) -> None:
        """A chunk of nothing but more answer text (``plain_text``): ``feed``'s events, sooner."""
        if self.ended:
            return
        if not self.started:
            self._start()
        self._text("message", text)

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if type(delta) is dict and delta:
            if "reasoning_content" in delta or "reasoning" in delta:
                reasoning = reasoning_of(delta)
                if reasoning is not None:
                    self._text("reasoning", reasoning)
            content = delta.get("content")
            if type(content) is str and content:
                self._text("message", content)
            calls = delta.get("tool_calls")
            if type(calls) is list:
                for fragment in calls:
                    if type(fragment) is dict:
                        self._fragment(fragment)
        finish = choice.get("finish_reason")
        if finish is not None:
            self.finish_reason = finish

    def _text(self, kind: str, text: str) -> None:
        item = self.open
        if item is None or item.kind != kind:
            item = self._open(kind)
        item.parts.append(text)
        seq = self.seq
        self.seq += 1
        self.out.append(item.head + _dumps(text) + _end(seq))

    def _open(self, kind: str) -> _Open:
        self._close()
        index = len(self.items)
        self.items.append(None)
        item = _Open(kind, index, self.shape.item_id(_PREFIX[kind], index))
        iid, seq = item.id.encode(), self.seq
        self.out.append(_OPENED[kind] % (index, iid, seq, iid, index, seq + 1))
        self.seq = seq + 2
        item.head = _DELTA_HEAD[kind] % (iid, index)
        self.open = item
        return item

    def _close(self) -> None:
        """The open reasoning or message item, done (its text encoded once)."""
        item, self.open = self.open, None
        if item is None:
            return
        text = _dumps("".join(item.parts))
        iid, kind, index, seq = item.id.encode(), item.kind, item.index, self.seq
        part = _PART[kind] % text
        done = self.items[index] = _ITEM[kind] % (iid, part)
        self.out.append(
            _CLOSED[kind] % (iid, index, text, seq, iid, index, part, seq + 1, index, done, seq + 2)
        )
        self.seq = seq + 3

    def _raw(self, kind: str, members: bytes) -> None:
        """An event whose data's members (besides its type and number) are ``members``."""
        self.out.append(_RAW[kind] % (members, self.seq))
        self.seq += 1

    def _done(self, index: int, item: bytes) -> None:
        self.items[index] = item
        self._raw("response.output_item.done", b'"output_index":%d,"item":%s' % (index, item))

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
        item = call_item(self.shape, call.id, call.call_id, call.name, arguments)
        self._done(call.index, _dumps(item))

    def finish(self, output_estimate: int = 0) -> None:
        """The end of a complete answer: every item done, then ``response.completed`` (or
        ``response.incomplete``)."""
        if self.ended:
            return
        if not self.started:
            self._start()
        self.ended = True
        if not self.items:  # nothing was said: an empty message, as OpenAI answers it
            self._open("message")
        self._close()
        if self.calls:
            for call in sorted(self.calls.values(), key=lambda c: c.index):
                self._close_call(call)
        status, details = status_of(self.finish_reason)
        usage = usage_json(self.usage, (self.input_estimate, output_estimate))
        done = cast(list[bytes], self.items)  # every item is, after the closes above
        output = b"[" + b",".join(done) + b"]"
        self.final = self.shape.encode(status, output, usage, details)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        self._emit_response(kind, self.final)

    def fail(self, message: str, code: str = "server_error") -> None:
        """The end of a failed answer: an ``error`` event and ``response.failed``."""
        if self.ended:
            return
        if not self.started:
            self._start()
        self.ended = True
        self._emit("error", {"code": code, "message": message, "param": None})
        error = {"code": "server_error", "message": message}
        output = b"[" + b",".join(i for i in self.items if i is not None) + b"]"  # those done
        failed = self.shape.encode("failed", output, None, None, error)
        self._emit_response("response.failed", failed)


def _message_of(error: object) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return message if isinstance(message, str) and message else "The upstream failed."


class ResponsesRelay:
    """Relays a worker's chat stream to a Responses client (``dialects.relay.Relay``).

    More text for the message being written, the commonest chunk, is translated from its bytes
    once the frame around its text is learned and proven (``dialects.relay.learn_frame``, as the
    Anthropic relay does): only the string literal is decoded, and the client gets the bytes the
    parsing path would give."""

    __slots__ = ("_frame", "_learn", "chunks", "done", "stream", "usage")

    def __init__(self, shape: Shape, input_estimate: int = 0) -> None:
        self.stream = ResponsesStream(shape, input_estimate)
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.chunks = 0
        self._frame: Frame = NO_FRAME  # stop is 0 until a frame is learned
        self._learn = LEARN_ATTEMPTS

    @property
    def final(self) -> bytes | None:
        """The completed (or incomplete) ``response``, encoded; None until the answer ended
        well."""
        return self.stream.final

    def relay(self, events: list[bytes]) -> bytes:
        stream = self.stream
        parts = stream.out  # (the parsed path's events join them there, in order)
        before, after, start, stop = self._frame
        item = stream.writing() if stop else None  # the message, while a frame is known
        seq = stream.seq  # (kept here while text chunks come; the stream's own around others)
        ends = _SEQ_ENDS  # (``_end``, inline)
        texts = 0  # text chunks taken from their bytes
        for event in events:
            if item is not None and event.startswith(before) and event.endswith(after):
                literal = event[start:stop]
                # Exactly one non-empty string literal (quotes at both ends, nothing around
                # them); without escapes it is already what orjson writes.
                if len(literal) > 2 and literal[0] == 34 == literal[-1]:
                    try:
                        text = _loads(literal)
                    except JSONDecodeError:
                        pass
                    else:
                        item.parts.append(text)
                        if BACKSLASH in literal:
                            literal = _dumps(text)
                        end = ends[seq] if seq < _KNOWN_ENDS else _end(seq)
                        parts.append(item.head + literal + end)
                        seq += 1
                        texts += 1
                        continue
            # a one-line event is "data: " and its data (event_data's commonest case, inline)
            data = event[6:] if event.startswith(b"data: ") and LF not in event else None
            data = data if data is not None else event_data(event)
            if data is None:
                continue  # comments and keep-alives: the Responses stream has its own events
            if data == DONE:
                self.done = True
                continue
            stream.seq = seq
            self._parsed(event, data)
            seq = stream.seq
            before, after, start, stop = self._frame
            item = stream.open if stop and not stream.ended else None  # (``writing``, inline)
            if item is not None and item.kind != "message":
                item = None
        stream.seq = seq
        self.chunks += texts
        self.usage = stream.usage
        return stream.take()

    def _parsed(self, event: bytes, data: bytes) -> None:
        stream = self.stream
        try:
            chunk = _loads(data)
        except JSONDecodeError:
            stream.fail("The upstream sent a stream event that is not JSON.")
            return
        if type(chunk) is not dict:
            return
        self.chunks += 1
        # Nothing more to learn, or a chunk with a role (the stream's first): as it is. (A
        # "role" key can be in no plain text chunk: feed gives any chunk the same events.)
        learnt = self._frame[3] or not self._learn or data.find(b'"role"') >= 0
        if learnt or (text := plain_text(chunk)) is None:
            stream.feed(chunk)
            return
        self._learn -= 1
        self._frame = learn_frame(event, data, text, _dumps(text)) or self._frame
        stream.text(text)

    def error(self, error: GatewayError) -> bytes:
        self.stream.fail(error.message, error.code)
        return self.stream.take()

    def finish(self) -> bytes:
        self.stream.finish(self.estimated_completion_tokens())
        return self.stream.take()

    def estimated_completion_tokens(self) -> int:
        return max(0, self.chunks - 2)
