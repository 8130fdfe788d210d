"""The translation's fast paths for the commonest shapes (``_plain_messages``: string messages, a
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
WORDS = st.text(min_size=1, max_size=5) | st.sampled_from(["hi", '"\\\n', "é😀"])
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "developer"]) | ODD
PLAIN_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]), "content": WORDS}
)


@st.composite
def odd_messages(draw: st.DrawFn) -> object:
    """A message off the plain shape: an odd role, content or field, blocks, or no object."""
    kind = draw(st.sampled_from(["role", "content", "extra", "blocks", "odd"]))
    message: dict[str, Any] = draw(PLAIN_MESSAGE)
    if kind == "role":
        message["role"] = draw(ROLES)
    elif kind == "content":
        message["content"] = draw(ODD | st.just(""))
    elif kind == "extra":
        message[draw(st.sampled_from(["tool_calls", "tool_call_id", "name", "x"]))] = draw(ODD)
    elif kind == "blocks":
        message["content"] = [{"type": "text", "text": draw(TEXTS)}]
    else:
        return draw(ODD)
    return message


# What takes a request off the plain shape, one way each.
REQUEST_DEVIATIONS: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": ODD,
    "messages": ODD,
    "system": ODD | st.just([{"type": "text", "text": "be brief"}]),
    "stream": ODD,
    "temperature": ODD,
    "top_p": ODD,
    "metadata": st.just({"user_id": "u1"}) | ODD,
    "stop_sequences": st.just(["END"]) | ODD,
    "top_k": st.integers(1, 5),
    "thinking": st.just({"type": "adaptive"}) | ODD,
    "output_config": st.just({"effort": "high"}) | ODD,
    "context_management": st.just({"edits": []}),
}


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request of the plain shape, then none, one or two deviations from it (a third of the
    requests keep the shape, so both paths are taken often)."""
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": draw(st.integers(1, 4096)),
        "messages": draw(st.lists(PLAIN_MESSAGE, min_size=1, max_size=4)),
    }
    for field, values in (
        ("system", TEXTS),
        ("stream", st.booleans()),
        ("temperature", st.floats(0, 2)),
        ("top_p", st.floats(0, 1)),
    ):
        if draw(st.booleans()):
            body[field] = draw(values)
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.sampled_from([*sorted(REQUEST_DEVIATIONS), "a message"]))
        if field == "a message":
            messages = body["messages"] if isinstance(body["messages"], list) else []
            body["messages"] = [*messages, draw(odd_messages())]
        else:
            body[field] = draw(REQUEST_DEVIATIONS[field])
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


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    """An answer of the plain shape, then none, one or two deviations from it."""
    message: dict[str, Any] = {"role": "assistant", "content": draw(TEXTS)}
    for field, values in (  # fields that keep the plain shape
        ("tool_calls", st.just([]) | st.none()),
        ("function_call", st.none()),
        ("reasoning_content", st.none()),
        ("refusal", st.none()),
    ):
        if draw(st.booleans()):
            message[field] = draw(values)
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": draw(st.sampled_from(["stop", "length"])),
    }
    usage = {"prompt_tokens": draw(st.integers(0, 10**6))}
    usage["completion_tokens"] = draw(st.integers(0, 10**6))
    answer: dict[str, Any] = {
        "id": "chatcmpl-" + draw(st.text("ab1", max_size=3)),
        "object": "chat.completion",
        "model": "up",
        "choices": [choice],
        "usage": usage,
    }
    for _ in range(draw(st.integers(0, 2))):
        _deviate(draw, answer, choice, message, usage)
    return answer


def _deviate(
    draw: st.DrawFn,
    answer: dict[str, Any],
    choice: dict[str, Any],
    message: dict[str, Any],
    usage: dict[str, Any],
) -> None:
    """Takes an answer off the plain shape, one way."""
    where, field, values = draw(
        st.sampled_from(
            [
                (answer, "id", st.sampled_from(["cmpl-9", "x", ""]) | ODD),
                (answer, "choices", ODD | st.just([choice, choice])),
                (answer, "usage", ODD),
                (answer, "system_fingerprint", st.just("v")),
                (answer, "model_output_metadata", st.just("v")),
                (usage, "prompt_tokens", ODD),
                (usage, "completion_tokens", ODD),
                (choice, "message", ODD),
                (choice, "finish_reason", st.just("tool_calls") | ODD),
                (choice, "stop_reason", st.integers(0, 9) | TEXTS),
                (choice, "matched_stop", st.integers(0, 9) | TEXTS),
                (message, "content", ODD),
                (message, "tool_calls", st.just([{"id": "c", "function": {}}])),
                (message, "function_call", st.just({"name": "f", "arguments": "{}"})),
                (message, "reasoning_content", TEXTS),
                (message, "reasoning", TEXTS),
            ]
        )
    )
    where[field] = draw(values)


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
    assert anthropic._plain_messages(body) is not None
    fast = orjson.dumps(anthropic.to_openai_request(body, "up"))
    assert fast == orjson.dumps(anthropic._translated_request(body, "up"))


def test_the_commonest_answer_takes_the_fast_path() -> None:
    message = {"role": "assistant", "content": "Hello!", "tool_calls": []}
    answer = golden_answer(message, "stop", (9, 2), stop_reason=None)
    plain = anthropic_answer.plain_answer(answer, "claude-gw")
    assert plain is not None
    assert plain == anthropic_answer.translated_answer(answer, "claude-gw")
