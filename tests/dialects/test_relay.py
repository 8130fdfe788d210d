"""The Anthropic relay, from upstream bytes to client bytes: the frame path (plain text chunks
translated from their bytes) gives exactly what parsing each chunk gives, for any text however the
upstream escapes it, any stream around it, any cut into reads, and any event that only looks like
a text chunk."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dialects import relay as relay_module
from gateway.dialects.anthropic import StreamTranslator, encode_event
from gateway.dialects.relay import AnthropicRelay
from gateway.dialects.sse import DONE, SSESplitter, event_data
from gateway.errors import UpstreamUnavailable

from .golden import chunk, usage_chunk
from .test_anthropic_stream import streamed_answers

Encoder = Callable[[Any], bytes]

ENCODERS: dict[str, Encoder] = {
    "orjson": orjson.dumps,  # UTF-8 as is, as vLLM writes it
    "ascii": lambda c: json.dumps(c, separators=(",", ":")).encode(),  # \uXXXX escapes
    "utf8": lambda c: json.dumps(c, separators=(",", ":"), ensure_ascii=False).encode(),
    "spaced": lambda c: json.dumps(c).encode(),  # ", " and ": " between tokens
}
TEXTS = st.text(
    st.characters(codec="utf-8") | st.sampled_from('"\\/\n\r\t\b\f\x00\x1f\x7f\u2028😀é'),
    max_size=12,
)


def pipe(stream: bytes, cuts: list[int]) -> tuple[bytes, AnthropicRelay]:
    """``stream`` read in pieces cut at ``cuts``, split and relayed as the handler does."""
    relay = AnthropicRelay("m", input_tokens=5)
    splitter, out = SSESplitter(), []
    for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(stream)], strict=True):
        events = splitter.feed(stream[a:b])
        if events:
            out.append(relay.relay(events))
    out.append(relay.finish())
    return b"".join(out), relay


def parsed(stream: bytes) -> bytes:
    """What the relay must give for ``stream``, every event parsed and fed to a translator (no
    fast path of any kind): the reference for streams that are not all JSON."""
    translator, out, chunks = StreamTranslator("m", input_tokens=5), [], 0
    for event in SSESplitter().feed(stream):
        data = event_data(event)
        if data is None or data == DONE:
            continue
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            out += translator.fail("The upstream sent a stream event that is not JSON.")
            continue
        if isinstance(value, dict):
            chunks += 1
            out += translator.feed(value)
    out += translator.finish(max(0, chunks - 2))
    return b"".join(encode_event(name, data) for name, data in out)


def translated(chunks: list[dict[str, Any]]) -> bytes:
    """What the translator alone gives for the chunks, then ``[DONE]``: the specification."""
    translator = StreamTranslator("m", input_tokens=5)
    events = [event for c in chunks for event in translator.feed(c)]
    events += translator.finish(max(0, len(chunks) - 2))
    return b"".join(encode_event(name, data) for name, data in events)


def sse(payloads: list[bytes], space: bool = True) -> bytes:
    prefix = b"data: " if space else b"data:"
    return b"".join(prefix + p + b"\n\n" for p in payloads) + prefix + b"[DONE]\n\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streamed_answers(),
    st.lists(st.sampled_from(sorted(ENCODERS)), min_size=1, max_size=3),
    st.booleans(),
    st.lists(st.integers(0, 4000), max_size=6),
)
def test_any_stream_relays_as_its_chunks_translate(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
    encoders: list[str],
    space: bool,
    cuts: list[int],
) -> None:
    _, chunks = case
    payloads = [ENCODERS[encoders[i % len(encoders)]](c) for i, c in enumerate(chunks)]
    stream = sse(payloads, space)
    got, relay = pipe(stream, [c for c in cuts if c <= len(stream)])
    assert got == translated(chunks)
    assert relay.chunks == len(chunks) and relay.done


@settings(max_examples=300, deadline=None)
@given(
    st.lists(TEXTS, min_size=1, max_size=10),
    st.sampled_from(sorted(ENCODERS)),
    st.sampled_from(["", ',"usage":null']),
    st.booleans(),
)
def test_any_text_relays_as_it_translates(
    texts: list[str], encoder: str, usage: str, usage_chunk_follows: bool
) -> None:
    """vLLM's own frame (``logprobs``, ``usage``) around any text, escaped as any upstream does."""
    head = b'{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    frame = head + b'[{"index":0,"delta":{"content":%s},"logprobs":null,"finish_reason":null}]'
    frame += usage.encode() + b"}"
    chunks = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": t}) for t in texts]
    chunks.append(chunk({}, "stop"))
    if usage_chunk_follows:
        chunks.append(usage_chunk(3, len(texts)))
    dump = ENCODERS[encoder]
    payloads = [dump(chunks[0])]
    payloads += [frame % dump(t) for t in texts]  # the text as the encoder writes it
    payloads += [dump(c) for c in chunks[len(texts) + 1 :]]
    got, _ = pipe(sse(payloads), [])
    assert got == translated(chunks)


def test_text_chunks_take_the_frame_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the frame is learned (from the first text chunk), text chunks are not parsed."""
    parsed: list[bytes] = []
    real = relay_module._loads

    def counting(data: bytes) -> Any:
        if data.startswith(b"{"):  # a whole chunk, not the text literal of one
            parsed.append(data)
        return real(data)

    monkeypatch.setattr(relay_module, "_loads", counting)
    texts = ["Hello", " wor", "ld", ' "quoted"', "\n", "é😀", "\\"]
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": t}) for t in texts] + [chunk({}, "stop"), usage_chunk(3, 7)]
    got, _ = pipe(sse([orjson.dumps(c) for c in chunks]), [])
    assert got == translated(chunks)
    # the role chunk, the first text chunk, the finish and usage chunks: nothing after the
    # first text names "content", so its frame needs no probe
    assert len(parsed) == 4


FRAME = (
    b'data: {"id":"chatcmpl-7","choices":[{"index":0,"delta":{"content":%s},'
    b'"logprobs":null,"finish_reason":null}]}'
)
LOOKALIKES = [
    b'"plain"',
    b'"\\u00e9\\/\\ud83d\\ude00"',
    b'""',  # empty text: no event
    b' "space before"',
    b'"space after" ',
    b'"newline after"\n',
    b'"raw\nnewline"',
    b'"raw\x01control"',
    b'"\xff invalid UTF-8"',
    b'"\xed\xa0\x80 encoded surrogate"',
    b'"\\ud800 lone surrogate"',
    b'"unterminated',
    b'"two","strings"',
    b'"a","content":"b"',
    b'"a"},"delta":{"content":"b"',
    b"null",
    b"42",
    b'["a"]',
]


@pytest.mark.parametrize("literal", LOOKALIKES)
def test_events_that_only_look_like_text_chunks_are_parsed(literal: bytes) -> None:
    opening = FRAME % b'"Hi"'
    events = [opening, opening, FRAME % literal, opening, b"data: [DONE]"]
    stream = b"\n\n".join(events) + b"\n\n"
    assert pipe(stream, [])[0] == parsed(stream)


@given(st.lists(st.sampled_from(LOOKALIKES) | TEXTS.map(orjson.dumps), max_size=8))
def test_any_run_of_lookalikes_relays_as_parsed(literals: list[bytes]) -> None:
    opening = FRAME % b'"Hi"'
    stream = b"\n\n".join([opening, opening, *(FRAME % x for x in literals), b"data: [DONE]"])
    stream += b"\n\n"
    assert pipe(stream, [])[0] == parsed(stream)


@pytest.mark.parametrize(
    "frame",
    [
        # a later duplicate key decides the text: the bytes in the frame's place do not
        b'{"choices":[{"index":0,"delta":{"content":%s,"content":"Hi"}}]}',
        b'{"choices":[{"index":0,"delta":{"content":%s}}],"choices":[{"delta":{"content":"Hi"}}]}',
        b'{"choices":[{"index":0,"delta":{"content":%s,"\\u0063ontent":"Hi"}}]}',  # escaped
        # not a plain text chunk at all
        b'{"choices":[{"index":0,"delta":{"content":%s},"finish_reason":"stop"}]}',
        b'{"choices":[{"index":1,"delta":{"content":%s}}]}',
        b'{"usage":{"prompt_tokens":1},"choices":[{"index":0,"delta":{"content":%s}}]}',
    ],
)
def test_frames_that_do_not_hold_are_not_learned(frame: bytes) -> None:
    opening = b'{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}'
    payloads = [opening, frame % b'"Hi"', frame % b'"Hi"', frame % b'"other"', opening]
    stream = sse(payloads)
    got, relay = pipe(stream, [])
    assert got == parsed(stream)
    assert relay._frame[3] == 0  # nothing learned


@pytest.mark.parametrize(
    "lines",
    [
        b"data: %(a)s\n%(a)s",  # a line that is not data: the data is the first line
        b"data: %(a)s\n: comment %(a)s",
        b"\ndata: %(a)s",
        b"event: x\ndata: %(a)s",
        b"data: %(a)s\ndata: %(a)s",  # two data lines: not JSON
    ],
)
def test_events_of_several_lines_are_parsed(lines: bytes) -> None:
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}'
    text = b'{"choices":[{"index":0,"delta":{"content":%s}}]}'
    events = [role] + [lines % {b"a": text % b'"Hi"'}] * 2
    events += [lines.replace(b"%(a)s", text % b'"Hi"', 1) % {b"a": text % b'"other"'}]
    events += [b"data: " + text % b'"end"', b"data: [DONE]"]
    stream = b"\n\n".join(events) + b"\n\n"
    assert pipe(stream, [])[0] == parsed(stream)


ERROR_CHUNK = b'{"error":{"message":"overloaded"}}'
FINISH_CHUNK = b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'


@pytest.mark.parametrize(
    "interruption",
    [[FINISH_CHUNK], [ERROR_CHUNK], [b"not json"], [FINISH_CHUNK, b'{"choices":[]}']],
)
def test_text_after_the_text_block_closed_is_parsed(interruption: list[bytes]) -> None:
    """Text after the finish chunk opens a new block (the stream waits for usage or [DONE]);
    after an error nothing more goes out."""
    text = FRAME.removeprefix(b"data: ")
    payloads = [text % b'"a"', text % b'"b"', *interruption, text % b'"c"', text % b'"d"']
    stream = sse(payloads)
    assert pipe(stream, [])[0] == parsed(stream)


def test_nothing_follows_a_gateway_error() -> None:
    text = FRAME.removeprefix(b"data: ")
    relay = AnthropicRelay("m")
    head = relay.relay([b"data: " + text % b'"a"', b"data: " + text % b'"b"'])
    assert head.count(b"text_delta") == 2
    assert b"event: error" in relay.error(UpstreamUnavailable("gone"))
    assert relay.relay([b"data: " + text % b'"c"']) == b""
    assert relay.finish() == b""
