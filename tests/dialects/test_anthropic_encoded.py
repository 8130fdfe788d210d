"""The translator's encoded methods, which the relay uses (``text_event``, ``feed_encoded``,
``finish_encoded``: prebuilt bytes for the constant events, ``message_start`` from a template), give
byte for byte what its events encode to, for any stream, model, message id and token count."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dialects import anthropic_events
from gateway.dialects.anthropic import StreamTranslator, encode_event, plain_text

from .golden import chunk, fragment, usage_chunk
from .test_anthropic_stream import streamed_answers

TEXTS = st.text(max_size=6) | st.sampled_from(['"', "\\", "\n", "\x00", "\u2028", "é😀"])
TOKENS = st.none() | st.integers(0, 2**63 - 1) | st.booleans() | st.text(max_size=2)
DELTAS = st.one_of(
    st.builds(lambda t: {"content": t}, TEXTS),
    st.builds(lambda t: {"reasoning_content": t}, TEXTS),
    st.builds(lambda t: {"role": "assistant", "content": t}, TEXTS),
    st.builds(lambda i, a: fragment(i, a, f"call_{i}", f"f{i}"), st.integers(0, 2), TEXTS),
    st.just({}),
)


@st.composite
def chunks(draw: st.DrawFn) -> dict[str, Any]:
    """A chunk of any kind: text, reasoning, role, tool call, finish, usage, error, or odd."""
    kind = draw(st.sampled_from(["delta"] * 6 + ["finish", "usage", "error", "id", "empty"]))
    if kind == "delta":
        return chunk(draw(DELTAS))
    if kind == "finish":
        return chunk(draw(DELTAS), draw(st.sampled_from(["stop", "length", "tool_calls"])))
    if kind == "usage":
        usage = {"prompt_tokens": draw(TOKENS), "completion_tokens": draw(TOKENS)}
        return usage_chunk(1, 1) | {"usage": usage}
    if kind == "error":
        return {"error": {"message": draw(TEXTS)}}
    if kind == "id":  # the first chunk names the message: any id, or none (then a hash)
        return chunk(draw(DELTAS)) | {"id": draw(st.none() | st.text(max_size=12))}
    return {}


def replay(
    upstream: list[dict[str, Any]], model: str, message_id: str | None, input_tokens: Any
) -> None:
    """Each chunk through the encoded methods (as the relay takes it) and through ``feed``."""
    fast = StreamTranslator(model, message_id, input_tokens=input_tokens)
    slow = StreamTranslator(model, message_id, input_tokens=input_tokens)
    for c in upstream:
        expected = b"".join(encode_event(name, data) for name, data in slow.feed(c))
        text = plain_text(c)
        got = fast.text_event(orjson.dumps(text)) if text is not None else None
        if got is None:
            got = fast.feed_encoded(c)
        assert got == expected
        assert fast.text_head == slow.text_head
    expected = b"".join(encode_event(name, data) for name, data in slow.finish(7))
    assert fast.finish_encoded(7) == expected
    assert fast.finish_encoded(7) == b"" == b"".join(encode_event(*e) for e in slow.finish(7))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(chunks(), max_size=14),
    st.text(max_size=6),
    st.none() | st.text(max_size=8),
    st.none() | st.integers(0, 2**63 - 1),
)
def test_any_chunks_encode_as_their_events(
    upstream: list[dict[str, Any]], model: str, message_id: str | None, input_tokens: int | None
) -> None:
    replay(upstream, model, message_id, input_tokens)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streamed_answers(), st.booleans())
def test_any_answer_encodes_as_its_events(
    case: tuple[dict[str, Any], list[dict[str, Any]]], role_first: bool
) -> None:
    _, upstream = case
    if role_first:
        upstream = [chunk({"role": "assistant", "content": ""}), *upstream]
    replay(upstream, "claude-gw", None, 12)


def test_many_blocks_encode_as_their_events() -> None:
    """Indices past one digit: thinking and text taking turns open a block each time."""
    turns = [chunk({"reasoning_content" if i % 2 else "content": f"t{i}"}) for i in range(25)]
    replay([*turns, chunk({}, "stop"), usage_chunk(3, 4)], "m", None, None)


@pytest.mark.parametrize("index", [0, 1, 9, 10, 99, 12345, 2**40])
def test_constant_events_are_what_encode_event_writes(index: int) -> None:
    events = anthropic_events
    stop = {"type": "content_block_stop", "index": index}
    assert events.BLOCK_STOP % index == encode_event("content_block_stop", stop)
    for kind, block in [
        ("text", {"type": "text", "text": ""}),
        ("thinking", {"type": "thinking", "thinking": "", "signature": ""}),
    ]:
        start = {"type": "content_block_start", "index": index, "content_block": block}
        expected = encode_event("content_block_start", start)
        assert events.BLOCK_STARTS[kind] % index == expected
    signature = {"type": "signature_delta", "signature": events.SIGNATURE}
    delta = {"type": "content_block_delta", "index": index, "delta": signature}
    assert events.SIGNATURE_DELTA % index == encode_event("content_block_delta", delta)
    assert encode_event("ping", {"type": "ping"}) == events.PING
    assert encode_event("message_stop", {"type": "message_stop"}) == events.MESSAGE_STOP


def test_the_two_writers_agree_call_for_call() -> None:
    """Every call a translator makes on its writer, on both writers: the same bytes."""
    as_events, as_bytes = anthropic_events.EventWriter(), anthropic_events.ByteWriter()
    for writer in (as_events, as_bytes):
        writer.start("msg_1", "m", 3)
        writer.open_text(0, "thinking")
        writer.text(0, "thinking", 'é"\n')
        writer.signature(0)
        writer.close(0)
        writer.open_text(1, "text")
        writer.text(1, "text", "\u2028")
        writer.close(1)
        writer.open_block(2, {"type": "tool_use", "id": "c", "name": "f", "input": {}})
        writer.delta(2, {"type": "input_json_delta", "partial_json": "{}"})
        writer.close(2)
        writer.end({"stop_reason": "tool_use", "stop_sequence": None}, {"output_tokens": 1})
        writer.event(anthropic_events.error_event("api_error", "x"))
    assert as_bytes.joined() == anthropic_events.encode_events(as_events.events)
