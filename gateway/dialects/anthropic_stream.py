"""The answer direction of the Anthropic dialect: an upstream OpenAI chat completion, whole or
streamed chunk by chunk, turned into an Anthropic Messages answer or event stream. Pure.

Choices the Anthropic contract leaves open, made here:

- The message id is ``msg_`` + the OpenAI id without its ``chatcmpl-`` prefix, so the same answer
  always gets the same id; an answer without an id gets ``msg_`` + a hash of itself.
- ``reasoning_content`` (or vLLM's newer ``reasoning``) becomes a ``thinking`` block before the
  text, with an empty ``signature``: the reasoning reaches the client in the place Anthropic's own
  extended thinking uses, and nothing pretends to be signed.
- Tool ``arguments`` that are not a JSON object are kept, not dropped: ``input`` becomes
  ``{"_raw_arguments": "<what the model wrote>"}``; empty arguments become ``{}``. In a stream the
  fragments go out as ``partial_json`` exactly as they came.
- Stream blocks follow the Anthropic API strictly: one block open at a time, indices in order.
  Text and thinking can always be closed and a new block started. A tool call cannot be reopened,
  so when fragments of parallel calls interleave, only the open call streams live; the others are
  held and go out in order of their first fragment once the open call's arguments form a
  complete JSON object (or when the answer ends). Calls streamed one after the other, as OpenAI
  and vLLM send them, are never held.
- An upstream chunk carrying ``error`` becomes an ``error`` event and ends the stream.
- A whole answer keeps the upstream's vendor extras (``model_output_metadata``, ...) as top-level
  fields of the ``message``; the official SDKs ignore unknown fields and keep them reachable
  (Python: ``message.model_extra``). OpenAI's own answer fields (``system_fingerprint``,
  ``service_tier``, ``object``, ``created``, vLLM's ``prompt_logprobs`` and the like) are not
  carried: they describe the OpenAI exchange, not the Anthropic message. Reasoning travels as
  ``thinking`` blocks. Streams carry no extras (``message_start`` is Anthropic's shape only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import orjson

from gateway.dialects import MAX_DEPTH, loads_object

Event = tuple[str, dict[str, Any]]
# What the translator's methods collect: events, and (in the encoded methods only) constant
# events already encoded, exactly as ``encode_event`` writes them.
_Out = list[Event | bytes]

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "end_turn",
}
_ID_PREFIXES = ("chatcmpl-", "cmpl-", "msg_")
# Top-level keys of an upstream answer that never go into an Anthropic ``message``: the OpenAI
# envelope (translated or meaningless here), OpenAI/vLLM-only serving fields, and the names of
# ``Message`` fields this translation does not fill (an upstream value there would not match the
# SDK's type for them).
_NOT_CARRIED = frozenset(
    {"id", "object", "created", "model", "choices", "usage"}
    | {"system_fingerprint", "service_tier", "prompt_logprobs", "prompt_token_ids"}
    | {"kv_transfer_params"}
    | {"container", "diagnostics", "stop_details"}
)
_RAW_ARGUMENTS = "_raw_arguments"
# A text delta event is ``_TEXT_DELTA % index`` + the text as a JSON string + ``TEXT_DELTA_END``.
_TEXT_DELTA = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":'
)
TEXT_DELTA_END = b"}}\n\n"
# The events of a stream that (but for an index, or the start's id, model and token count) are
# always the same bytes, written as ``encode_event`` writes them (the tests hold them to it).
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_MESSAGE_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":%s,"type":"message",'
    b'"role":"assistant","model":%s,"content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":%s,"output_tokens":0}}}\n\n'
)
_BLOCK_STARTS = {
    kind: b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":%d,"content_block":' + block + b"}\n\n"
    for kind, block in (
        ("text", b'{"type":"text","text":""}'),
        ("thinking", b'{"type":"thinking","thinking":"","signature":""}'),
    )
}
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'


class Usage(NamedTuple):
    prompt_tokens: int
    completion_tokens: int


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


def _event_head(name: str) -> bytes:
    head = _EVENT_HEADS.get(name)
    return head if head is not None else b"event: " + name.encode() + b"\ndata: "


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event, as the Anthropic API writes it."""
    return _event_head(name) + orjson.dumps(data) + b"\n\n"


def encode_events(events: Iterable[Event | bytes]) -> bytes:
    """The events one after the other, each as ``encode_event`` writes it (an event already
    encoded, as bytes, as it is)."""
    parts: list[bytes] = []
    for event in events:
        if isinstance(event, bytes):
            parts.append(event)
        else:
            name, data = event
            parts += (_event_head(name), orjson.dumps(data), b"\n\n")
    return b"".join(parts)


def ping() -> Event:
    return "ping", {"type": "ping"}


def error_event(error_type: str, message: str) -> Event:
    return "error", {"type": "error", "error": {"type": error_type, "message": message}}


def _message_id(openai_id: object, seed: object) -> str:
    """``msg_`` + the tail of the upstream id; without one, ``msg_`` + a hash of ``seed``."""
    if not isinstance(openai_id, str) or not openai_id:
        canonical = json.dumps(seed, sort_keys=True, default=str).encode()
        return "msg_" + hashlib.sha256(canonical).hexdigest()[:24]
    for prefix in _ID_PREFIXES:
        if openai_id.startswith(prefix):
            return "msg_" + openai_id[len(prefix) :]
    return "msg_" + openai_id


def _stop_reason(choice: dict[str, Any]) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)`` of an OpenAI choice.

    vLLM names the stop string that ended the answer in ``stop_reason``, SGLang in ``matched_stop``
    (both give a token id instead when a stop token ended it, which is an ordinary end of turn).
    """
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason", choice.get("matched_stop"))
    if finish == "stop" and isinstance(matched, str):
        return "stop_sequence", matched
    return _STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn", None


def _usage_of(value: object) -> Usage | None:
    """The token counts of an OpenAI ``usage`` object, if it has any."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    return Usage(
        prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0
    )


def _reasoning_of(message: dict[str, Any]) -> str | None:
    reasoning = message.get("reasoning_content", message.get("reasoning"))
    return reasoning if isinstance(reasoning, str) and reasoning else None


def _tool_input(arguments: object) -> dict[str, Any]:
    """The ``input`` object of a tool call from its OpenAI ``arguments`` JSON string; kept raw
    when not an object, or nested deeper than an answer can be written with it (the 4th level)."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    parsed = loads_object(arguments, MAX_DEPTH - 3)
    return parsed if parsed is not None else {_RAW_ARGUMENTS: arguments}


def to_anthropic_response(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic Messages answer; vendor extras kept."""
    plain = _plain_answer(answer, model)
    return plain if plain is not None else _translated_answer(answer, model)


def _plain_answer(answer: dict[str, Any], model: str) -> dict[str, Any] | None:
    """``_translated_answer``'s result for the commonest answer, in one pass: one choice of
    text that stopped or ran out of tokens, with usage and a ``chatcmpl-`` id, no tool calls,
    reasoning or vendor extras. None for anything else (the general path). The property tests
    hold the two paths to the same output."""
    answer_id, choices, usage = answer.get("id"), answer.get("choices"), answer.get("usage")
    if (
        type(answer_id) is not str
        or not answer_id.startswith("chatcmpl-")
        or type(choices) is not list
        or not choices
        or type(usage) is not dict
        or not _NOT_CARRIED.issuperset(answer)
    ):
        return None
    choice = choices[0]
    if type(choice) is not dict:
        return None
    message, finish = choice.get("message"), choice.get("finish_reason")
    if (
        type(message) is not dict
        or (finish != "stop" and finish != "length")
        or choice.get("stop_reason", choice.get("matched_stop")) is not None
        or message.get("tool_calls")
        or message.get("function_call") is not None
        or message.get("reasoning_content", message.get("reasoning")) is not None
    ):
        return None
    text, prompt, completion = (
        message.get("content"),
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
    )
    if type(text) is not str or type(prompt) is not int or type(completion) is not int:
        return None
    return {
        "id": "msg_" + answer_id[9:],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": "end_turn" if finish == "stop" else "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }


def _translated_answer(answer: dict[str, Any], model: str) -> dict[str, Any]:
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    msg_id = _message_id(answer.get("id"), answer)
    reason, sequence = _stop_reason(choice if isinstance(choice, dict) else {})
    usage = _usage_of(answer.get("usage")) or Usage(0, 0)
    out: dict[str, Any] = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _answer_blocks(message if isinstance(message, dict) else {}, msg_id),
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    }
    for key, value in answer.items():
        if key not in _NOT_CARRIED:
            out.setdefault(key, value)  # model_output_metadata and other vendor extras
    return out


def _answer_blocks(message: dict[str, Any], msg_id: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    reasoning = _reasoning_of(message)
    if reasoning:
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        legacy = message.get("function_call")
        calls = [{"function": legacy}] if isinstance(legacy, dict) else []
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            call_id = _str(call.get("id")) or _tool_id(msg_id, i)
            arguments = _tool_input(function.get("arguments"))
            blocks.append(_tool_use(call_id, _str(function.get("name")), arguments))
    return blocks


def _tool_id(msg_id: str, index: int) -> str:
    return f"toolu_{msg_id.removeprefix('msg_')}_{index}"


def _tool_use(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _complete(arguments: str) -> bool:
    """Whether tool arguments already form a JSON object (nothing but whitespace can follow)."""
    text = arguments.rstrip()
    if not text.endswith("}"):
        return False
    try:
        return isinstance(orjson.loads(text), dict)
    except ValueError:
        return False


def plain_text(chunk: dict[str, Any]) -> str | None:
    """The text of the commonest chunk: nothing but more (non-empty) text for choice 0, no
    usage, no error, no finish. None for any other chunk."""
    if chunk.get("usage") is not None or "error" in chunk:
        return None
    choices = chunk.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason") is not None:
        return None
    delta = choice.get("delta")
    if type(delta) is not dict or len(delta) != 1 or choice.get("index", 0) != 0:
        return None
    text = delta.get("content")
    return text if type(text) is str and text else None


@dataclass(slots=True, eq=False)
class _ToolCall:
    id: str
    name: str
    arguments: str = ""
    sent: int = 0  # how much of ``arguments`` has gone out
    closed: bool = False


# An open or held block: a tool call, or "text"/"thinking"; held text carries its text along.
_Block = _ToolCall | str
_Held = _ToolCall | tuple[str, str]


class StreamTranslator:
    """Feed upstream ``chat.completion.chunk`` dicts in order; get back the Anthropic events.

    ``message_delta`` (stop reason and usage) waits for the usage-only chunk that follows the
    finish chunk, or for ``finish()``, called when the upstream sends ``[DONE]``.
    """

    __slots__ = (
        "_blocks",
        "_done",
        "_encoded",
        "_held",
        "_input_tokens",
        "_open",
        "_started",
        "_stop",
        "_tools",
        "_usage",
        "message_id",
        "model",
        "text_head",
    )

    def __init__(
        self, model: str, message_id: str | None = None, *, input_tokens: int | None = None
    ) -> None:
        self.model = model
        self.message_id = message_id
        self._input_tokens = input_tokens  # the gateway's estimate, for message_start
        self._usage: Usage | None = None
        self._stop: tuple[str, str | None] | None = None
        self._started = False
        self._done = False
        self._blocks = 0  # blocks opened so far; the open one is always the last
        self._open: _Block | None = None
        self._tools: dict[int, _ToolCall] = {}
        self._held: list[_Held] = []
        self._encoded = False  # while an encoded method runs: constant events go out as bytes
        # While a text block is open and the stream goes on: the bytes of a text delta event up
        # to its text (then the text as a JSON string, then TEXT_DELTA_END); else None.
        self.text_head: bytes | None = None

    @property
    def usage(self) -> Usage | None:
        """The upstream's token counts, once a chunk has carried them."""
        return self._usage

    @property
    def finished(self) -> bool:
        """Whether the stream has ended for the client (``message_stop`` or ``error`` sent)."""
        return self._done

    def fail(self, message: str, error_type: str = "api_error") -> list[Event]:
        """An ``error`` event that ends the stream (nothing if it has already ended)."""
        if self._done:
            return []
        self._done = True
        self.text_head = None
        return [error_event(error_type, message)]

    def text_event(self, literal: bytes) -> bytes | None:
        """The events of a plain text chunk (see ``plain_text``) whose text orjson writes as
        ``literal``: more text for the open text block, or a text block opened for it when no
        block is open. Byte for byte what ``feed_encoded`` would give; None when the stream is
        elsewhere (then ``feed_encoded`` handles the chunk)."""
        head = self.text_head
        if head is not None:
            return head + literal + TEXT_DELTA_END
        if self._open is not None or not self._started or self._done:
            return None
        # as ``_switch("text")`` does when no block is open
        self._open = "text"
        index = self._blocks
        self._blocks += 1
        self.text_head = head = _TEXT_DELTA % index
        return _BLOCK_STARTS["text"] % index + head + literal + TEXT_DELTA_END

    def feed_encoded(self, chunk: dict[str, Any]) -> bytes:
        """``encode_events(self.feed(chunk))``, byte for byte, for less work."""
        self._encoded = True
        try:
            return encode_events(self._feed(chunk))
        finally:
            self._encoded = False

    def finish_encoded(self, output_estimate: int | None = None) -> bytes:
        """``encode_events(self.finish(output_estimate))``, byte for byte, for less work."""
        if self._done:
            return b""
        self._encoded = True
        try:
            return encode_events(self._finish(output_estimate))
        finally:
            self._encoded = False

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        return cast("list[Event]", self._feed(chunk))  # no bytes outside the encoded methods

    def _feed(self, chunk: dict[str, Any]) -> _Out:
        usage = _usage_of(raw) if (raw := chunk.get("usage")) is not None else None
        if usage is not None:
            self._usage = usage
        if self._done:
            return []
        if chunk.get("error") is not None:
            return self._fail(chunk["error"])
        out: _Out = []
        if not self._started:
            self._start(chunk, usage, out)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        if self._stop is not None and usage is not None:
            self._end(out)
        return out

    def finish(self, output_estimate: int | None = None) -> list[Event]:
        """The closing events, once the upstream stream has ended (idempotent).

        ``output_estimate`` is the gateway's count of the tokens produced, reported in
        ``message_delta`` when the upstream sent no usage (else ``output_tokens`` would be 0).
        """
        return cast("list[Event]", self._finish(output_estimate))

    def _finish(self, output_estimate: int | None) -> _Out:
        if self._done:
            return []
        out: _Out = []
        if not self._started:
            self._start({}, None, out)
        self._end(out, output_estimate)
        return out

    def _start(self, chunk: dict[str, Any], known: Usage | None, out: _Out) -> None:
        """``message_start`` (with ``known``, the chunk's usage) and a ``ping``."""
        self._started = True
        if self.message_id is None:
            self.message_id = _message_id(chunk.get("id"), chunk)
        if self._encoded:
            tokens = known.prompt_tokens if known else self._input_tokens or 0
            dumps = orjson.dumps
            out.append(
                _MESSAGE_START % (dumps(self.message_id), dumps(self.model), dumps(tokens)) + _PING
            )
            return
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": known.prompt_tokens if known else self._input_tokens or 0,
                "output_tokens": 0,
            },
        }
        out.append(("message_start", {"type": "message_start", "message": message}))
        out.append(ping())

    def _fail(self, error: object) -> _Out:
        self._done = True
        self.text_head = None
        message = error.get("message") if isinstance(error, dict) else error
        if not isinstance(message, str) or not message:
            message = "The upstream failed mid-stream; retry the request."
        return [error_event("api_error", message)]

    def _choice(self, choice: dict[str, Any], out: _Out) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict) and delta:
            reasoning = _reasoning_of(delta)
            if reasoning:
                self._text("thinking", reasoning, out)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text("text", content, out)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._fragment(call, out)
        if choice.get("finish_reason") is not None:
            self._stop = _stop_reason(choice)
            self._close_all(out)

    def _text(self, kind: str, text: str, out: _Out) -> None:
        if self._open == kind or not self._holding():
            self._send_text(kind, text, out)
        elif self._held and isinstance(self._held[-1], tuple) and self._held[-1][0] == kind:
            self._held[-1] = (kind, self._held[-1][1] + text)
        else:
            self._held.append((kind, text))

    def _send_text(self, kind: str, text: str, out: _Out) -> None:
        if self._open != kind:
            self._switch(kind, out)
        out.append(self._delta({"type": f"{kind}_delta", kind: text}))

    def _fragment(self, call: dict[str, Any], out: _Out) -> None:
        index = call.get("index", 0)
        index = index if isinstance(index, int) else 0
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        tool = self._tools.get(index)
        if tool is None:
            self._tools[index] = tool = self._new_tool(index, call.get("id"), function.get("name"))
            tool.arguments = arguments
            self._place(tool, out)
        elif not tool.closed:  # after a complete object only whitespace (or bad JSON) can come
            tool.name = tool.name or _str(function.get("name"))
            tool.arguments += arguments
            if tool is self._open:
                self._send_arguments(tool, out)
                self._drain(out)

    def _new_tool(self, index: int, call_id: object, name: object) -> _ToolCall:
        if not isinstance(call_id, str) or not call_id:
            call_id = _tool_id(self.message_id or "", index)
        return _ToolCall(call_id, _str(name))

    def _holding(self) -> bool:
        """Whether the open block is a tool call that may still get more arguments."""
        return isinstance(self._open, _ToolCall) and not _complete(self._open.arguments)

    def _place(self, tool: _ToolCall, out: _Out) -> None:
        if self._holding():
            self._held.append(tool)
        else:
            self._switch(tool, out)

    def _drain(self, out: _Out, force: bool = False) -> None:
        while self._held and (force or not self._holding()):
            unit = self._held.pop(0)
            if isinstance(unit, _ToolCall):
                self._switch(unit, out)
            else:
                self._send_text(*unit, out)

    def _switch(self, block: _Block, out: _Out) -> None:
        self._close(out)
        self._open = block
        self._blocks += 1
        self.text_head = _TEXT_DELTA % (self._blocks - 1) if block == "text" else None
        if isinstance(block, _ToolCall):
            start = _tool_use(block.id, block.name, {})
        elif self._encoded:
            out.append(_BLOCK_STARTS[block] % (self._blocks - 1))
            return
        elif block == "text":
            start = {"type": "text", "text": ""}
        else:
            start = {"type": block, block: "", "signature": ""}
        event = {"type": "content_block_start", "index": self._blocks - 1, "content_block": start}
        out.append(("content_block_start", event))
        if isinstance(block, _ToolCall):
            self._send_arguments(block, out)

    def _send_arguments(self, tool: _ToolCall, out: _Out) -> None:
        piece = tool.arguments[tool.sent :]
        if piece:
            out.append(self._delta({"type": "input_json_delta", "partial_json": piece}))
            tool.sent = len(tool.arguments)

    def _delta(self, delta: dict[str, Any]) -> Event:
        event = {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta}
        return "content_block_delta", event

    def _close(self, out: _Out) -> None:
        if self._open is None:
            return
        if isinstance(self._open, _ToolCall):
            self._open.closed = True
        self._open = None
        self.text_head = None
        if self._encoded:
            out.append(_BLOCK_STOP % (self._blocks - 1))
        else:
            out.append(
                ("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})
            )

    def _close_all(self, out: _Out) -> None:
        self._drain(out, force=True)
        self._close(out)

    def _end(self, out: _Out, output_estimate: int | None = None) -> None:
        self._close_all(out)
        self._done = True
        reason, sequence = self._stop or ("end_turn", None)
        usage: dict[str, int] = {"output_tokens": max(0, output_estimate or 0)}
        if self._usage is not None:
            usage = {"output_tokens": self._usage.completion_tokens}
            usage["input_tokens"] = self._usage.prompt_tokens
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(_MESSAGE_STOP if self._encoded else ("message_stop", {"type": "message_stop"}))
