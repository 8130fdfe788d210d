"""The translation's fast paths for the commonest shapes (``_plain_request``: string messages, a
string system prompt, sampling, ``stream``; ``plain_answer``: one text choice with usage) give
exactly what the general paths give — the same output, byte for byte once encoded, and the same
400 when the input is bad — for requests and answers near those shapes and off them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dialects import anthropic, anthropic_answer
from gateway.errors import BadRequest

from .golden import answer as golden_answer

ODD = st.none() | st.booleans() | st.integers(-2, 3) | st.text(max_size=3) | st.just([])
TEXTS = st.text(max_size=5) | st.sampled_from(["", "hi", '"\\\n', "é😀"])
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "developer"]) | ODD


@st.composite
def messages(draw: st.DrawFn) -> object:
    """A message of the plain shape most of the time; sometimes with an odd role, content or
    field, or not an object at all."""
    kind = draw(st.sampled_from(["plain"] * 6 + ["role", "content", "extra", "blocks", "odd"]))
    role = draw(st.sampled_from(["user", "assistant"]))
    message: dict[str, Any] = {"role": role, "content": draw(TEXTS)}
    if kind == "role":
        message["role"] = draw(ROLES)
    elif kind == "content":
        message["content"] = draw(ODD)
    elif kind == "extra":
        message[draw(st.sampled_from(["tool_calls", "tool_call_id", "name", "x"]))] = draw(ODD)
    elif kind == "blocks":
        message["content"] = [{"type": "text", "text": draw(TEXTS)}]
    elif kind == "odd":
        return draw(ODD)
    return message


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": draw(st.integers(1, 4096) | ODD),
        "messages": draw(st.lists(messages(), max_size=4) | ODD),
    }
    for field, values in (
        ("system", TEXTS | ODD | st.just([{"type": "text", "text": "be brief"}])),
        ("stream", st.booleans() | ODD),
        ("temperature", st.floats(0, 2) | ODD),
        ("top_p", st.floats(0, 1) | ODD),
        ("metadata", st.just({"user_id": "u1"}) | ODD),
        ("stop_sequences", st.just(["END"]) | ODD),
        ("top_k", st.integers(1, 5)),
        ("thinking", st.just({"type": "adaptive"}) | ODD),
        ("output_config", st.just({"effort": "high"}) | ODD),
        ("context_management", st.just({"edits": []})),
    ):
        if draw(st.integers(0, 3)) == 0:
            body[field] = draw(values)
    return body


def outcome(translate: Any, *args: Any) -> tuple[str, object]:
    try:
        return "ok", orjson.dumps(translate(*args))
    except BadRequest as err:
        return "400", (str(err), err.param)


@given(requests(), st.none() | st.integers(1, 4096))
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_a_request_translates_the_same_by_either_path(
    body: dict[str, Any], ceiling: int | None
) -> None:
    """With or without the model's ``max_output_tokens`` (``ceiling``)."""
    fast = outcome(anthropic.to_openai_request, body, "up", ceiling)
    assert fast == outcome(anthropic._translated_request, body, "up", ceiling)


USAGE = st.fixed_dictionaries(
    {"prompt_tokens": st.integers(0, 10**6) | ODD, "completion_tokens": st.integers(0, 10**6)}
)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": draw(TEXTS | ODD)}
    for field, values in (
        ("tool_calls", st.just([]) | st.none() | st.just([{"id": "c", "function": {}}])),
        ("function_call", st.none() | st.just({"name": "f", "arguments": "{}"})),
        ("reasoning_content", st.none() | TEXTS),
        ("reasoning", st.none() | TEXTS),
        ("refusal", st.none()),
    ):
        if draw(st.booleans()):
            message[field] = draw(values)
    choice: dict[str, Any] = {
        "index": 0,
        "message": draw(st.just(message) | ODD),
        "finish_reason": draw(st.sampled_from(["stop", "length", "tool_calls"]) | ODD),
    }
    if draw(st.booleans()):
        choice[draw(st.sampled_from(["stop_reason", "matched_stop"]))] = draw(
            st.none() | st.integers(0, 9) | TEXTS
        )
    answer: dict[str, Any] = {
        "id": draw(st.sampled_from(["chatcmpl-1a", "chatcmpl-", "cmpl-9", "x"]) | ODD),
        "object": "chat.completion",
        "model": "up",
        "choices": draw(st.just([choice]) | st.just([choice, choice]) | ODD),
        "usage": draw(USAGE | ODD),
    }
    if draw(st.integers(0, 3)) == 0:
        answer[draw(st.sampled_from(["system_fingerprint", "model_output_metadata"]))] = "v"
    return answer


@given(answers())
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_an_answer_translates_the_same_by_either_path(answer: dict[str, Any]) -> None:
    fast = orjson.dumps(anthropic_answer.to_anthropic_response(answer, "claude-gw"))
    assert fast == orjson.dumps(anthropic_answer.translated_answer(answer, "claude-gw"))


@pytest.mark.parametrize("stream", [None, False, True])
def test_the_commonest_request_takes_the_fast_path(stream: bool | None) -> None:
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": 16,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Say hello"}],
        "temperature": 0.2,
    }
    if stream is not None:
        body["stream"] = stream
    assert anthropic._plain_request(body, "up") == anthropic._translated_request(body, "up")


def test_the_commonest_answer_takes_the_fast_path() -> None:
    message = {"role": "assistant", "content": "Hello!", "tool_calls": []}
    answer = golden_answer(message, "stop", (9, 2), stop_reason=None)
    plain = anthropic_answer.plain_answer(answer, "claude-gw")
    assert plain is not None
    assert plain == anthropic_answer.translated_answer(answer, "claude-gw")
