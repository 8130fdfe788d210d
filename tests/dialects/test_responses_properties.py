"""Properties of the Responses translation, over requests and worker streams near the real
shapes and far off them: checking and translating a request raises nothing but a 400; a
translated request is plain JSON; whatever chunks a worker sends, the event stream is valid SSE
whose sequence numbers count from 0, begins with ``response.created``, ends once (completed,
incomplete or failed) and is accepted event by event by the official SDK's types."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.dialects.responses import check, translate
from gateway.dialects.responses_answer import (
    encode_response,
    shape,
    to_response,
    usage_json,
    usage_of,
)
from gateway.dialects.responses_stream import ResponsesRelay
from gateway.errors import BadRequest, UpstreamUnavailable

from .responses_golden import parse_events

ODD = (
    st.none()
    | st.booleans()
    | st.integers(-2, 3)
    | st.floats(allow_nan=False, allow_infinity=False)  # as JSON has them
    | st.text(max_size=3)
    | st.just([])
    | st.just({})
    | st.just([[1]])
    | st.just({"a": {"b": None}})
)
TEXTS = st.text(max_size=6) | st.sampled_from(["", "hi", '"\\\n', "é😀", "a\u2028b"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | TEXTS,  # as orjson reads
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
    max_leaves=8,
)
EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def odd_or(strategy: Any) -> Any:
    """``strategy``, and now and then (one in eight) a value of some odd type instead."""
    return st.integers(0, 7).flatmap(lambda n: ODD if n == 0 else strategy)


PARTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text", "refusal", "input_image", "x"])},
    optional={
        "text": odd_or(TEXTS),
        "refusal": TEXTS,
        "image_url": odd_or(st.just("data:image/png;base64,AA")),
    },
)
ITEMS = st.fixed_dictionaries(
    {},
    optional={
        "type": odd_or(
            st.sampled_from(["message", "function_call", "function_call_output", "reasoning"])
        ),
        "role": odd_or(st.sampled_from(["user", "assistant", "system", "developer"])),
        "content": odd_or(TEXTS | st.lists(PARTS, max_size=3)),
        "call_id": odd_or(TEXTS),
        "name": odd_or(TEXTS),
        "namespace": odd_or(TEXTS),
        "arguments": odd_or(st.just('{"a":1}')),
        "output": odd_or(TEXTS | st.lists(PARTS, max_size=2)),
    },
)
TOOLS = st.fixed_dictionaries(
    {
        "type": odd_or(st.sampled_from(["function", "namespace", "web_search", "custom"])),
        "name": odd_or(st.sampled_from(["f", "g", "ns", "ns__f"]) | TEXTS),
    },
    optional={
        "parameters": JSON,
        "tools": odd_or(st.lists(st.fixed_dictionaries({"type": st.just("function"),
                                                         "name": odd_or(TEXTS)}), max_size=2)),
    },
)  # fmt: skip
CHOICE = odd_or(
    st.sampled_from(["auto", "none", "required"])
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "allowed_tools", "web_search"])},
        optional={"name": TEXTS, "mode": ODD | st.just("auto"), "tools": st.just([{"name": "f"}])},
    )
)


@st.composite
def requests(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 15)) == 0:
        return draw(JSON)
    body: dict[str, Any] = {
        "model": draw(odd_or(st.just("m"))),
        "input": draw(odd_or(TEXTS | st.lists(ITEMS, max_size=4))),
    }
    for name, values in (
        ("instructions", TEXTS),
        ("tools", st.lists(TOOLS, max_size=3)),
        ("tool_choice", CHOICE),
        ("stream", st.booleans()),
        ("max_output_tokens", st.integers(1, 100)),
        ("temperature", st.floats(0, 2)),
        ("reasoning", st.just({"effort": "low"})),
        ("text", st.just({"format": {"type": "json_schema", "name": "n", "schema": {}}})),
        ("previous_response_id", TEXTS),
        ("metadata", st.just({"k": "v"})),
        ("background", st.just(False)),
        ("top_k", JSON),
    ):
        if draw(st.integers(0, 2)) == 0:
            body[name] = draw(odd_or(values))
    return body


@given(requests(), st.lists(ITEMS, max_size=2), st.sampled_from(["drop", "reject"]))
@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
def test_a_request_translates_or_is_a_400(body: Any, history: list[Any], hosted: str) -> None:
    try:
        plan = translate(check(body), history, hosted)
    except BadRequest as err:
        assert err.status == 400 and err.message
        return
    assert orjson.loads(orjson.dumps(plan.chat)) == plan.chat
    assert plan.chat["messages"] and all(isinstance(m["role"], str) for m in plan.chat["messages"])
    made = shape(body, "resp_" + "a" * 48, 1, "m", plan.names)
    assert orjson.dumps(made.response("in_progress", []))


DELTAS = st.fixed_dictionaries(
    {},
    optional={
        "role": odd_or(st.just("assistant")),
        "content": odd_or(TEXTS),
        "reasoning_content": odd_or(TEXTS),
        "tool_calls": odd_or(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "index": odd_or(st.integers(0, 2)),
                        "id": odd_or(st.sampled_from(["call_a", "call_b"])),
                        "function": odd_or(
                            st.fixed_dictionaries(
                                {},
                                optional={
                                    "name": odd_or(st.sampled_from(["f", "ns__g"])),
                                    "arguments": odd_or(TEXTS),
                                },
                            )
                        ),
                    },
                ),
                max_size=2,
            )
        ),
    },
)
CHUNKS = st.fixed_dictionaries(
    {},
    optional={
        "choices": odd_or(
            st.lists(
                st.fixed_dictionaries(
                    {"delta": odd_or(DELTAS)},
                    optional={
                        "index": odd_or(st.just(0)),
                        "finish_reason": odd_or(st.sampled_from(["stop", "length", "tool_calls"])),
                    },
                ),
                max_size=2,
            )
        ),
        "usage": odd_or(st.just({"prompt_tokens": 3, "completion_tokens": 2})),
        "error": st.none() | st.just({"message": "boom"}) | ODD,
    },
)
RAW = st.sampled_from([b"data: [DONE]", b"data: {nope", b": keep-alive", b"data: 7"])


@given(
    st.lists(CHUNKS.map(lambda c: b"data: " + orjson.dumps(c)) | RAW, max_size=8),
    st.sampled_from(["finish", "error"]),
)
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_any_worker_stream_gives_a_valid_event_stream(events: list[bytes], end: str) -> None:
    made = shape({"model": "m", "input": "x"}, "resp_" + "b" * 48, 1, "m", {"ns__g": ("ns", "g")})
    relay = ResponsesRelay(made, 3)
    raw = b"".join(relay.relay([event]) for event in events)
    raw += relay.finish() if end == "finish" else relay.error(UpstreamUnavailable("gone"))
    parsed = parse_events(raw)
    assert [e["sequence_number"] for e in parsed] == list(range(len(parsed)))
    assert parsed[0]["type"] == "response.created"
    ends = [e["type"] for e in parsed if e["type"] in ENDINGS]
    assert len(ends) == 1 and parsed[-1]["type"] == ends[0]
    for event in parsed:
        EVENTS.validate_python(event)
    assert (relay.final is not None) == (ends[0] != "response.failed")


ENDINGS = {"response.completed", "response.incomplete", "response.failed"}


@given(st.one_of(JSON, st.fixed_dictionaries({}, optional={"choices": odd_or(
    st.lists(st.fixed_dictionaries({}, optional={"message": odd_or(DELTAS),
                                                "finish_reason": ODD}), max_size=2)),
    "usage": JSON})))  # fmt: skip
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_any_whole_answer_gives_a_response(answer: Any) -> None:
    made = shape({"model": "m", "input": "x"}, "resp_" + "c" * 48, 1, "m")
    answer = answer if isinstance(answer, dict) else {}
    response = orjson.loads(orjson.dumps(to_response(answer, made, (1, 1))))
    assert response["output"]
    assert orjson.loads(encode_response(answer, made, (1, 1))[0]) == response


FRAMED_TEXTS = st.text(max_size=8) | st.sampled_from(['"', "\\", "\n", "é😀", "\u2028", 'a"b'])


@st.composite
def text_streams(draw: st.DrawFn) -> list[bytes]:
    """A worker's stream as vLLM writes it (one frame around every text), now and then
    another chunk: a reasoning delta, a tool call, text with a finish, a comment."""

    def framed(delta: dict[str, Any], finish: Any = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": "m", "choices": [choice]}  # fmt: skip
        return b"data: " + orjson.dumps(body)

    events = [framed({"role": "assistant", "content": ""})]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["text"] * 6 + ["reasoning", "call", "finish", "comment"]))
        if kind == "text":
            events.append(framed({"content": draw(FRAMED_TEXTS)}))
        elif kind == "reasoning":
            events.append(framed({"reasoning_content": draw(FRAMED_TEXTS)}))
        elif kind == "call":
            call = {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}
            events.append(framed({"tool_calls": [call]}))
        elif kind == "finish":
            events.append(framed({"content": draw(FRAMED_TEXTS)}, "stop"))
        else:
            events.append(b": keep-alive")
    return [*events, b"data: [DONE]"]


@given(text_streams(), st.integers(1, 3))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_framed_text_gives_the_bytes_of_the_parsing_path(events: list[bytes], batch: int) -> None:
    made = shape({"model": "m", "input": "x"}, "resp_" + "d" * 48, 1, "m")
    fast, slow = ResponsesRelay(made, 2), ResponsesRelay(made, 2)
    slow._learn = 0  # never learns a frame: every chunk is parsed
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    assert [fast.relay(b) for b in batches] == [slow.relay(b) for b in batches]
    assert fast.finish() == slow.finish() and fast.usage == slow.usage


@given(
    st.sampled_from(["in_progress", "completed", "incomplete", "failed"]),
    st.lists(st.dictionaries(TEXTS, JSON, max_size=2), max_size=2),
    JSON,
    st.none() | st.just({"reason": "max_output_tokens"}),
    st.none() | st.just({"code": "server_error", "message": "x"}),
)
def test_an_encoded_response_is_the_response(
    status: str, output: list[Any], usage: Any, details: Any, error: Any
) -> None:
    body = {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}],
            "metadata": {"k": "v"}, "instructions": "é"}  # fmt: skip
    made = shape(body, "resp_" + "e" * 48, 7, "pub")
    encoded = made.encode(status, orjson.dumps(output), usage, details, error)
    assert orjson.loads(encoded) == made.response(status, output, usage, details, error)


COUNTS = odd_or(st.integers(0, 2**40))
DETAILS = st.dictionaries(st.sampled_from(["cached_tokens", "reasoning_tokens"]), COUNTS)
USAGES = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": COUNTS,
        "completion_tokens": COUNTS,
        "prompt_tokens_details": odd_or(DETAILS),
        "completion_tokens_details": odd_or(DETAILS),
    },
)


@given(JSON | USAGES)
def test_the_usage_template_is_the_usage(usage: Any) -> None:
    """``usage_json`` writes what ``usage_of`` builds, for any usage a worker sends."""
    assert orjson.loads(usage_json(usage, (3, 4))) == usage_of(usage, (3, 4))


PLAIN_VALUES = {
    "instructions": st.none() | st.text(max_size=5),
    "max_output_tokens": st.none() | st.integers(1, 10**6),
    "stream": st.none() | st.booleans(),
    "store": st.none() | st.booleans(),
    "temperature": st.none() | st.floats(0, 2) | st.integers(0, 2),
    "top_p": st.none() | st.floats(0, 1),
    "metadata": st.none() | st.just({"a": "b"}),
    "include": st.none() | st.just([]),
    "parallel_tool_calls": st.none() | st.booleans(),
}


@given(
    st.fixed_dictionaries(
        {"model": st.text(min_size=1, max_size=3), "input": st.text(max_size=5)},
        optional=PLAIN_VALUES,
    )
)
def test_the_commonest_request_translates_as_any_other(body: dict[str, Any]) -> None:
    """The one-step translation of a plain request (``_plain``) is the general one's, to the
    order of the chat body's members (the bytes the worker gets)."""
    from gateway.dialects.responses import PLAIN, _general, _plain, items_of

    checked = check(body)
    assert PLAIN.issuperset(checked)
    fast, general = (
        _plain(checked, items_of(checked)),
        _general(checked, [], "drop", items_of(checked)),
    )
    assert orjson.dumps(fast.chat) == orjson.dumps(general.chat)
    assert (fast.names, fast.dropped, fast.items) == (general.names, general.dropped, general.items)
    assert orjson.dumps(translate(checked, [], "drop").chat) == orjson.dumps(general.chat)


@given(
    st.fixed_dictionaries(
        {"model": st.text(min_size=1, max_size=3), "input": st.text(max_size=5)},
        optional={**PLAIN_VALUES, "previous_response_id": st.none() | TEXTS},
    )
    | st.fixed_dictionaries(
        {"model": st.just("m"), "input": st.just("x")},
        optional=dict.fromkeys([*PLAIN_VALUES, "previous_response_id"], ODD),
    )
)
def test_the_commonest_request_echoes_as_any_other(body: dict[str, Any]) -> None:
    """The echo of a plain request written from its template is the general one's, to the
    order of its members (the bytes of every response and event that repeats it)."""
    from gateway.dialects.responses_answer import _PLAIN, _echo

    assert _PLAIN.issuperset(body)
    made = shape(body, "resp_" + "a" * 48, 1, "m")
    assert made.echo_json == orjson.dumps(_echo(body))[1:-1]
    assert orjson.loads(b"{" + made.echo_json + b"}") == made.echo
