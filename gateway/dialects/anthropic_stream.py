"""The Anthropic Messages event stream of an upstream OpenAI chat stream, chunk by chunk: the
``StreamTranslator``, whose events go to a writer (``anthropic_events``): as ``(name, data)``
pairs, or as their bytes for the relay. Pure.

Choices the Anthropic contract leaves open, made here:

- Reasoning (``reasoning_content``, or vLLM's newer ``reasoning``) streams as a ``thinking`` block
  of ``thinking_delta`` events, closed by a ``signature_delta`` (``gateway-unsigned``), as the
  Anthropic API closes its own; a thinking block can come back after text or tool calls
  (interleaved thinking).
- Tool-call fragments go out as ``partial_json`` exactly as they came; the ``input`` of a call
  whose arguments are not an object is what the whole answer gives (``anthropic_answer``).
- Stream blocks follow the Anthropic API strictly: one block open at a time, indices in order.
  Text and thinking can always be closed and a new block started. A tool call cannot be reopened,
  so when fragments of parallel calls interleave, only the open call streams live; the others are
  held and go out in order of their first fragment once the open call's arguments form a
  complete JSON object (or when the answer ends). Calls streamed one after the other, as OpenAI
  and vLLM send them, are never held.
- An upstream chunk carrying ``error`` becomes an ``error`` event and ends the stream.
- Streams carry no vendor extras (``message_start`` is Anthropic's shape only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.dialects.anthropic_answer import (
    Usage,
    message_id,
    reasoning_of,
    stop_reason,
    string,
    tool_id,
    tool_use,
    usage_of,
)
from gateway.dialects.anthropic_events import (
    BLOCK_STARTS,
    TEXT_DELTA,
    TEXT_DELTA_END,
    ByteWriter,
    Event,
    EventWriter,
    Writer,
    error_event,
)


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


def _complete(tool: _ToolCall) -> bool:
    """Whether a call's arguments already form a JSON object (nothing but whitespace can
    follow): parsed only when their last character that is not whitespace is a ``}``."""
    if tool.last != "}":
        return False
    try:
        return isinstance(orjson.loads("".join(tool.parts)), dict)
    except ValueError:
        return False


@dataclass(slots=True, eq=False)
class _ToolCall:
    """A tool call's arguments are kept as the fragments came and joined only to be sent or
    parsed: a string grown by ``+=`` on an attribute is copied whole at every fragment
    (quadratic: 1 MB of arguments in 4-character fragments took 52 s)."""

    id: str
    name: str
    parts: list[str] = field(default_factory=list)  # the arguments, fragment by fragment
    sent: int = 0  # how many of ``parts`` have gone out
    closed: bool = False
    last: str = ""  # the last character of the arguments that is not whitespace

    def add(self, fragment: str) -> None:
        if fragment:
            self.parts.append(fragment)
            end = fragment.rstrip()[-1:]
            if end:
                self.last = end


# An open or held block: a tool call, or "text"/"thinking"; held text carries its text along.
_Block = _ToolCall | str
_Held = _ToolCall | tuple[str, str]


class StreamTranslator:
    """Feed upstream ``chat.completion.chunk`` dicts in order; get back the Anthropic events
    (``feed``, ``finish``) or their bytes (``feed_encoded``, ``finish_encoded``, ``text_event``).

    ``message_delta`` (stop reason and usage) waits for the usage-only chunk that follows the
    finish chunk, or for ``finish()``, called when the upstream sends ``[DONE]``.
    """

    __slots__ = (
        "_blocks",
        "_done",
        "_held",
        "_input_tokens",
        "_open",
        "_started",
        "_stop",
        "_tools",
        "_usage",
        "_writer",
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
        self._writer = ByteWriter()  # the encoded methods' writer, emptied by each
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
        index = self._begin("text")  # as ``_switch`` opens it when no block is open
        return BLOCK_STARTS["text"] % index + (self.text_head or b"") + literal + TEXT_DELTA_END

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """The events of one upstream chunk."""
        out = EventWriter()
        self._feed(chunk, out)
        return out.events

    def feed_encoded(self, chunk: dict[str, Any]) -> bytes:
        """``encode_events(self.feed(chunk))``, byte for byte, for less work."""
        self._feed(chunk, self._writer)
        return self._writer.joined()

    def finish(self, output_estimate: int | None = None) -> list[Event]:
        """The closing events, once the upstream stream has ended (idempotent).

        ``output_estimate`` is the gateway's count of the tokens produced, reported in
        ``message_delta`` when the upstream sent no usage (else ``output_tokens`` would be 0).
        """
        out = EventWriter()
        self._finish(output_estimate, out)
        return out.events

    def finish_encoded(self, output_estimate: int | None = None) -> bytes:
        """``encode_events(self.finish(output_estimate))``, byte for byte, for less work."""
        self._finish(output_estimate, self._writer)
        return self._writer.joined()

    def _feed(self, chunk: dict[str, Any], out: Writer) -> None:
        usage = usage_of(raw) if (raw := chunk.get("usage")) is not None else None
        if usage is not None:
            self._usage = usage
        if self._done:
            return
        if chunk.get("error") is not None:
            self._fail(chunk["error"], out)
            return
        if not self._started:
            self._start(chunk, usage, out)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        if self._stop is not None and usage is not None:
            self._end(out)

    def _finish(self, output_estimate: int | None, out: Writer) -> None:
        if self._done:
            return
        if not self._started:
            self._start({}, None, out)
        self._end(out, output_estimate)

    def _start(self, chunk: dict[str, Any], known: Usage | None, out: Writer) -> None:
        """``message_start`` (with ``known``, the chunk's usage) and a ``ping``."""
        self._started = True
        if self.message_id is None:
            self.message_id = message_id(chunk.get("id"), chunk)
        tokens = known.prompt_tokens if known else self._input_tokens or 0
        out.start(self.message_id, self.model, tokens)

    def _fail(self, error: object, out: Writer) -> None:
        self._done = True
        self.text_head = None
        message = error.get("message") if isinstance(error, dict) else error
        if not isinstance(message, str) or not message:
            message = "The upstream failed mid-stream; retry the request."
        out.event(error_event("api_error", message))

    def _choice(self, choice: dict[str, Any], out: Writer) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict) and delta:
            reasoning = reasoning_of(delta)
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
            self._stop = stop_reason(choice)
            self._close_all(out)

    def _text(self, kind: str, text: str, out: Writer) -> None:
        if self._open == kind or not self._holding():
            self._send_text(kind, text, out)
        elif self._held and isinstance(self._held[-1], tuple) and self._held[-1][0] == kind:
            self._held[-1] = (kind, self._held[-1][1] + text)
        else:
            self._held.append((kind, text))

    def _send_text(self, kind: str, text: str, out: Writer) -> None:
        if self._open != kind:
            self._switch(kind, out)
        out.text(self._blocks - 1, kind, text)

    def _fragment(self, call: dict[str, Any], out: Writer) -> None:
        index = call.get("index", 0)
        index = index if isinstance(index, int) else 0
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        tool = self._tools.get(index)
        if tool is None:
            self._tools[index] = tool = self._new_tool(index, call.get("id"), function.get("name"))
            tool.add(arguments)
            self._place(tool, out)
        elif not tool.closed:  # after a complete object only whitespace (or bad JSON) can come
            tool.name = tool.name or string(function.get("name"))
            tool.add(arguments)
            if tool is self._open:
                self._send_arguments(tool, out)
                self._drain(out)

    def _new_tool(self, index: int, call_id: object, name: object) -> _ToolCall:
        if not isinstance(call_id, str) or not call_id:
            call_id = tool_id(self.message_id or "", index)
        return _ToolCall(call_id, string(name))

    def _holding(self) -> bool:
        """Whether the open block is a tool call that may still get more arguments."""
        return isinstance(self._open, _ToolCall) and not _complete(self._open)

    def _place(self, tool: _ToolCall, out: Writer) -> None:
        if self._holding():
            self._held.append(tool)
        else:
            self._switch(tool, out)

    def _drain(self, out: Writer, force: bool = False) -> None:
        while self._held and (force or not self._holding()):
            unit = self._held.pop(0)
            if isinstance(unit, _ToolCall):
                self._switch(unit, out)
            else:
                self._send_text(*unit, out)

    def _switch(self, block: _Block, out: Writer) -> None:
        self._close(out)
        index = self._begin(block)
        if isinstance(block, _ToolCall):
            out.open_block(index, tool_use(block.id, block.name, {}))
            self._send_arguments(block, out)
        else:
            out.open_text(index, block)

    def _begin(self, block: _Block) -> int:
        """``block`` as the open one, the next index (none may be open): its index."""
        self._open = block
        index = self._blocks
        self._blocks += 1
        self.text_head = TEXT_DELTA % index if block == "text" else None
        return index

    def _send_arguments(self, tool: _ToolCall, out: Writer) -> None:
        parts = tool.parts
        if tool.sent < len(parts):
            piece = parts[-1] if tool.sent == len(parts) - 1 else "".join(parts[tool.sent :])
            out.delta(self._blocks - 1, {"type": "input_json_delta", "partial_json": piece})
            tool.sent = len(parts)

    def _close(self, out: Writer) -> None:
        block = self._open
        if block is None:
            return
        if isinstance(block, _ToolCall):
            block.closed = True
        elif block == "thinking":
            out.signature(self._blocks - 1)
        self._open = None
        self.text_head = None
        out.close(self._blocks - 1)

    def _close_all(self, out: Writer) -> None:
        self._drain(out, force=True)
        self._close(out)

    def _end(self, out: Writer, output_estimate: int | None = None) -> None:
        self._close_all(out)
        self._done = True
        reason, sequence = self._stop or ("end_turn", None)
        usage: dict[str, int] = {"output_tokens": max(0, output_estimate or 0)}
        if self._usage is not None:
            usage = {"output_tokens": self._usage.completion_tokens}
            usage["input_tokens"] = self._usage.prompt_tokens
        out.end({"stop_reason": reason, "stop_sequence": sequence}, usage)
