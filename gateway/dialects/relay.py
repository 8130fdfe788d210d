"""Relays turn upstream OpenAI stream events into the bytes the client gets, one batch of
events at a time: the OpenAI relay (``dialects.openai``) passes them through; the Anthropic relay
here translates them into the Messages event stream. Pure.

Once the Anthropic stream has ended for the client (``message_stop``, or an ``error`` event for an
upstream error chunk or an upstream event that is not JSON), nothing more is written: a failure
the gateway notices later (the upstream closing without ``[DONE]``) adds no second ending.

The commonest upstream event, more text for choice 0, is translated from its bytes: an upstream
repeats the same bytes around the text of every such chunk (``{"id":…,"choices":[{"index":0,
"delta":{"content":`` before it, ``},"logprobs":null,"finish_reason":null}]}`` after it), so the
relay learns that frame from one chunk it has parsed, proves it (the frame around another string
parses to a plain text chunk), and then only decodes the string literal between the two. Any
event that does not fit the frame exactly takes the parsing path; either way the client gets the
same bytes. The Responses relay (``dialects.responses_stream``) learns frames the same way
(``learn_frame``).
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from orjson import JSONDecodeError

from gateway.dialects import anthropic
from gateway.dialects.anthropic import TEXT_DELTA_END, encode_events, plain_text
from gateway.dialects.sse import BACKSLASH, DONE, LF, event_data
from gateway.errors import GatewayError

_CONTENT = b'"delta":{"content":'
LEARN_ATTEMPTS = 3  # frames learned per stream at most (an upstream whose frame never repeats)
# A text to prove a frame with, as orjson writes it; the other for a frame learned on the first.
_PROBE, _OTHER_PROBE = ("x", b'"x"'), ("y", b'"y"')
_loads, _dumps = orjson.loads, orjson.dumps


class Relay(Protocol):
    usage: dict[str, Any] | None
    done: bool

    def relay(self, events: list[bytes]) -> bytes: ...

    def error(self, error: GatewayError) -> bytes: ...

    def finish(self) -> bytes: ...

    def estimated_completion_tokens(self) -> int: ...


Frame = tuple[bytes, bytes, int, int]  # before the text literal, after it, its start and stop
NO_FRAME: Frame = (b"", b"", 0, 0)  # none learned yet (stop 0)


def learn_frame(event: bytes, data: bytes, text: str, literal: bytes) -> Frame | None:
    """The frame of plain text chunks, learned from one (parsed) plain text chunk ``event``
    (its ``data``, its ``text``, ``literal`` as orjson writes it), if the frame is sound: the
    same bytes around any other string are a plain text chunk. A relay that knows the frame
    reads a text chunk's text from its bytes alone (``event[start:stop]``, one literal)."""
    at = data.find(_CONTENT)
    if at < 0 or LF in event:  # one line: the event is "data:" or "data: ", then data
        return None
    at += len(_CONTENT)
    # an upstream writing the text otherwise than orjson does is not learned from
    if not data.startswith(literal, at):
        return None
    head, tail = data[:at], data[at + len(literal) :]
    if not tail:
        return None
    # The frame holds if the text is read from the literal, whatever the literal: the chunk
    # parsed shows the rest is a plain text chunk's, and only a later duplicate key could make
    # the text come from elsewhere. Without "content" after the literal (nor a backslash: no
    # escaped key either) there is none; else another text in the frame must parse as this
    # one did (a second text: read from elsewhere, both would read the same).
    if BACKSLASH not in tail and tail.find(b"content") < 0:
        before = event[: len(event) - len(data)] + head
        return (before, tail, len(before), -len(tail))
    probe, probe_literal = _PROBE if text != _PROBE[0] else _OTHER_PROBE
    try:
        parsed = _loads(head + probe_literal + tail)
    except JSONDecodeError:
        return None
    if type(parsed) is not dict or plain_text(parsed) != probe:
        return None
    before = event[: len(event) - len(data)] + head
    return (before, tail, len(before), -len(tail))


class AnthropicRelay:
    """Translates an upstream OpenAI stream into Anthropic Messages events as it arrives.

    ``input_tokens`` (the gateway's estimate of the prompt) goes into ``message_start``; the
    upstream's own count follows in ``message_delta``. Without upstream usage, ``message_delta``
    reports the estimated output tokens (the count the gateway charges) instead of 0.
    """

    __slots__ = ("_frame", "_learn", "chunks", "done", "translator", "usage")

    def __init__(self, model: str, input_tokens: int | None = None) -> None:
        self.translator = anthropic.StreamTranslator(model, input_tokens=input_tokens)
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.chunks = 0
        # The frame of a plain text chunk: the event's bytes before and after the text literal
        # and where the literal starts and stops (stop is 0 until a frame is learned).
        self._frame = NO_FRAME
        self._learn = LEARN_ATTEMPTS

    def relay(self, events: list[bytes]) -> bytes:
        parts: list[bytes] = []
        translator = self.translator
        before, after, start, stop = self._frame
        # Set while a frame is learned and the text block is open: a text chunk's event up to its
        # text (read again after every event the translator takes).
        head = translator.text_head if stop else None
        texts = 0  # plain text chunks relayed by their frame
        for event in events:
            if head is not None and event.startswith(before) and event.endswith(after):
                literal = event[start:stop]
                # Exactly one non-empty string literal (quotes at both ends, so no whitespace
                # around it: a newline there would split the event into lines); without escapes
                # it is already what orjson writes.
                if len(literal) > 2 and literal[0] == 34 == literal[-1]:
                    try:
                        text = _loads(literal)
                    except JSONDecodeError:
                        pass
                    else:
                        texts += 1
                        if BACKSLASH in literal:
                            literal = _dumps(text)
                        parts.append(head + literal + TEXT_DELTA_END)
                        continue
            if event.startswith(b"data: ") and LF not in event:  # event_data's commonest
                data = event[6:]
            elif (found := event_data(event)) is not None:
                data = found
            else:
                continue
            if data == DONE:
                self.done = True
                continue
            try:
                chunk = _loads(data)
            except JSONDecodeError:
                message = "The upstream sent a stream event that is not JSON."
                parts.append(encode_events(translator.fail(message)))
                head = None
                continue
            if not isinstance(chunk, dict):
                continue
            self.chunks += 1
            usage = chunk.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                self.usage = usage
            text = plain_text(chunk)
            if text is None:
                parts.append(translator.feed_encoded(chunk))
            else:
                literal = _dumps(text)
                encoded = translator.text_event(literal)
                parts.append(encoded if encoded is not None else translator.feed_encoded(chunk))
                if (
                    self._learn
                    and translator.text_head is not None
                    and self._learn_frame(event, data, text, literal)
                ):
                    before, after, start, stop = self._frame
            head = translator.text_head if stop else None
        self.chunks += texts
        return b"".join(parts)

    def _learn_frame(self, event: bytes, data: bytes, text: str, literal: bytes) -> bool:
        """Learn the frame of plain text chunks (``learn_frame``) from one of them."""
        self._learn -= 1
        frame = learn_frame(event, data, text, literal)
        if frame is None:
            return False
        self._frame = frame
        return True

    def error(self, error: GatewayError) -> bytes:
        return encode_events(self.translator.fail(error.message, error.anthropic_type))

    def finish(self) -> bytes:
        return self.translator.finish_encoded(self.estimated_completion_tokens())

    def estimated_completion_tokens(self) -> int:
        return max(0, self.chunks - 2)
