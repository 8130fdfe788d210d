"""The Anthropic stream translator: event order, when ``message_delta`` goes out, parallel tool
calls (in order and interleaved), upstream errors, and a property: however an answer is chunked and
its tool calls interleaved, the official SDK accumulates exactly the whole-answer translation."""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dialects.anthropic import (
    StreamTranslator,
    Usage,
    encode_event,
    to_anthropic_response,
)

from .golden import (
    answer,
    assert_strict_stream,
    chunk,
    fragment,
    sdk_message,
    sdk_stream,
    translate_stream,
    usage_chunk,
)

Events = list[tuple[str, dict[str, Any]]]


def names(events: Events) -> list[str]:
    return [name for name, _ in events]


def deltas(events: Events) -> list[tuple[int, str]]:
    """``(index, text or partial_json)`` of each content delta."""
    out = []
    for name, data in events:
        if name == "content_block_delta":
            delta = data["delta"]
            out.append(
                (data["index"], delta.get("text", delta.get("partial_json", delta.get("thinking"))))
            )
    return out


def test_text_stream_events_exactly() -> None:
    translator = StreamTranslator("claude-gw")
    first = translator.feed(chunk({"role": "assistant", "content": "Hi"}))
    assert first == [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_gold1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-gw",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        ),
    ]
    assert translator.feed(chunk({}, "stop")) == [
        ("content_block_stop", {"type": "content_block_stop", "index": 0})
    ]
    usage_before = translator.usage
    assert translator.feed(usage_chunk(7, 1)) == [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 1, "input_tokens": 7},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert (usage_before, translator.usage) == (None, Usage(prompt_tokens=7, completion_tokens=1))
    assert translator.finish() == [] and translator.feed(chunk({"content": "late"})) == []


def test_message_delta_waits_for_done_when_no_usage_comes() -> None:
    translator = StreamTranslator("m", "msg_given", input_tokens=42)
    events = translator.feed(chunk({"content": "x"})) + translator.feed(chunk({}, "length"))
    assert "message_delta" not in names(events)
    assert events[0][1]["message"]["id"] == "msg_given"
    assert events[0][1]["message"]["usage"]["input_tokens"] == 42
    end = translator.finish()
    assert names(end) == ["message_delta", "message_stop"]
    assert end[0][1]["usage"] == {"output_tokens": 0}
    assert end[0][1]["delta"]["stop_reason"] == "max_tokens"
    final = sdk_stream(events + end)
    assert (final.usage.input_tokens, final.stop_reason) == (42, "max_tokens")


def test_usage_on_the_finish_chunk_ends_at_once() -> None:
    """vLLM's continuous usage stats put usage on every chunk, the finish chunk included."""
    translator = StreamTranslator("m")
    usage = {"prompt_tokens": 3, "completion_tokens": 1}
    translator.feed(chunk({"content": "x"}) | {"usage": usage | {"completion_tokens": 0}})
    events = translator.feed(chunk({}, "stop") | {"usage": usage})
    assert names(events) == ["content_block_stop", "message_delta", "message_stop"]
    assert translator.feed(usage_chunk(3, 1)) == []


def test_stream_that_ends_before_any_chunk() -> None:
    events = StreamTranslator("m").finish()
    assert names(events) == ["message_start", "ping", "message_delta", "message_stop"]
    final = sdk_stream(events)
    assert (final.content, final.stop_reason) == ([], "end_turn")


def test_vllm_stop_string_in_stream() -> None:
    events = translate_stream([chunk({"content": "a"}), chunk({}, "stop", stop_reason="###")], "m")
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}
    assert sdk_stream(events).stop_sequence == "###"


def test_sequential_tool_calls_stream_live() -> None:
    """Calls sent one after the other (as OpenAI and vLLM do) are never held back."""
    translator = StreamTranslator("m")
    translator.feed(chunk(fragment(0, "", "call_a", "f")))
    assert deltas(translator.feed(chunk(fragment(0, '{"a":1}')))) == [(0, '{"a":1}')]
    events = translator.feed(chunk(fragment(1, '{"b"', "call_b", "g")))
    assert names(events) == ["content_block_stop", "content_block_start", "content_block_delta"]
    assert events[1][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_b",
        "name": "g",
        "input": {},
    }
    assert deltas(translator.feed(chunk(fragment(1, ":2}")))) == [(1, ":2}")]


def test_interleaved_call_is_held_until_the_open_one_is_complete() -> None:
    translator = StreamTranslator("m")
    events = translator.feed(chunk(fragment(0, '{"a":', "call_a", "f")))
    assert translator.feed(chunk(fragment(1, '{"b":2}', "call_b", "g"))) == []
    assert translator.feed(chunk({"content": "text meanwhile"})) == []
    released = translator.feed(chunk(fragment(0, "1}")))
    assert names(released) == [
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
    ]
    assert deltas(released) == [(0, "1}"), (1, '{"b":2}'), (2, "text meanwhile")]
    late_whitespace = translator.feed(chunk(fragment(0, "  \n")))
    assert late_whitespace == []
    events += released + translator.feed(chunk({}, "tool_calls")) + translator.finish()
    assert_strict_stream(events)
    final = sdk_stream(events)
    assert [block.type for block in final.content] == ["tool_use", "tool_use", "text"]
    assert [getattr(block, "input", None) for block in final.content] == [{"a": 1}, {"b": 2}, None]


def test_text_after_a_complete_call_opens_a_new_block() -> None:
    chunks = [chunk({"content": "a"}), chunk(fragment(0, "{}", "c", "f")), chunk({"content": "b"})]
    events = translate_stream(chunks, "m")
    assert_strict_stream(events)
    assert [block.type for block in sdk_stream(events).content] == ["text", "tool_use", "text"]


def test_blocks_opened_after_the_finish_chunk_are_still_closed() -> None:
    chunks = [chunk({}, "stop"), chunk(fragment(0, '{"a":', "c", "f")), usage_chunk(1, 1)]
    events = translate_stream(chunks, "m")
    assert_strict_stream(events)
    assert names(events)[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_calls_without_ids_and_all_in_one_delta() -> None:
    calls = [
        {"index": 0, "function": {"name": "f", "arguments": '{"x":1}'}},
        {"index": 1, "function": {"name": "g", "arguments": "{}"}},
    ]
    events = translate_stream([chunk({"tool_calls": calls}, "tool_calls")], "m")
    assert_strict_stream(events)
    final = sdk_stream(events)
    assert [(b.id, b.name, b.input) for b in final.content] == [  # type: ignore[union-attr]
        ("toolu_gold1_0", "f", {"x": 1}),
        ("toolu_gold1_1", "g", {}),
    ]


def test_other_choices_are_ignored() -> None:
    second = chunk({"content": "B"}) | {"choices": [{"index": 1, "delta": {"content": "B"}}]}
    events = translate_stream([chunk({"content": "A"}), second, chunk({}, "stop")], "m")
    assert deltas(events) == [(0, "A")]


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ({"message": "worker crashed", "type": "server_error"}, "worker crashed"),
        ("boom", "boom"),
        ({}, "The upstream failed mid-stream; retry the request."),
    ],
)
def test_upstream_error_chunk_becomes_an_error_event(error: object, message: str) -> None:
    translator = StreamTranslator("m")
    events = translator.feed(chunk({"content": "par"})) + translator.feed({"error": error})
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": message}},
    )
    assert translator.finish() == []
    with pytest.raises(anthropic.APIStatusError, match="api_error"):
        sdk_stream(events)


# --- the property ---------------------------------------------------------------------------------

# Integers within 64 bits: the SDK's stream accumulator (jiter) reads a larger one as a float
# while its whole-message model keeps the int, so the oracle, not the gateway, would differ (the
# gateway passes the model's argument text through byte for byte either way).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def pieces(draw: st.DrawFn, text: str) -> list[str]:
    """``text`` cut at arbitrary places (empty pieces included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=4)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def streamed_answers(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An OpenAI answer, and one of the many ways an upstream could stream it."""
    reasoning, text = draw(st.text(max_size=12)), draw(st.text(max_size=12))
    arguments = [
        json.dumps(
            draw(st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3)),
            indent=draw(st.sampled_from([None, 1])),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": f"tool_{i}", "arguments": a}}
        for i, a in enumerate(arguments)
    ]
    message = {"role": "assistant", "content": text, "reasoning_content": reasoning} | (
        {"tool_calls": calls} if calls else {}
    )
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
    deltas = [{"reasoning_content": p} for p in draw(pieces(reasoning))]
    deltas += [{"content": p} for p in draw(pieces(text))]
    deltas += draw(interleaved_fragments(arguments))
    chunks = [chunk(delta) for delta in deltas] + [chunk({}, finish)]
    if draw(st.booleans()):
        chunks.append(usage_chunk(11, 7))
    return answer(message, finish, (11, 7)), chunks


@st.composite
def interleaved_fragments(draw: st.DrawFn, arguments: list[str]) -> list[dict[str, Any]]:
    """Each call's fragments in order; calls interleaved, each starting after the one before."""
    queues = [draw(pieces(a)) for a in arguments]
    sent = [0] * len(queues)
    out = []
    while ready := [
        i for i, q in enumerate(queues) if sent[i] < len(q) and (i == 0 or sent[i - 1])
    ]:
        i = draw(st.sampled_from(ready))
        first = sent[i] == 0
        out.append(
            fragment(
                i, queues[i][sent[i]], f"call_{i}" if first else "", f"tool_{i}" if first else ""
            )
        )
        sent[i] += 1
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streamed_answers())
def test_any_chunking_accumulates_to_the_whole_answer(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    whole, chunks = case
    events = translate_stream(chunks, "m")
    assert_strict_stream(events)
    expected = sdk_message(to_anthropic_response(whole, "m")).model_dump()
    final = sdk_stream(events).model_dump()
    if not chunks[-1].get("usage"):  # no usage chunk: the counts stay unknown (zero)
        expected["usage"] = final["usage"]
    assert final == expected


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8))
def test_the_text_fast_path_is_byte_identical(texts: list[str]) -> None:
    """``text_event`` is an optimisation of ``feed`` + ``encode_event``, never a change: more
    text for the open block, or a block opened for it (here after the finish chunk closed one)."""
    fast, slow = StreamTranslator("m"), StreamTranslator("m")
    opening = {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "a"}}]}
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    fast.feed(opening)
    slow.feed(opening)
    for n, text in enumerate(texts):
        if n == len(texts) - 1 and n:
            assert fast.feed(finish) == slow.feed(finish)
        chunk = {
            "id": "chatcmpl-1",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
        expected = b"".join(encode_event(name, data) for name, data in slow.feed(chunk))
        assert fast.text_event(orjson.dumps(text)) == expected
