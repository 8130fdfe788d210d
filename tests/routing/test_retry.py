"""Failure kinds, the workers' context-length refusals, and the retry budget's arithmetic."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import BadRequest, GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.routing.retry import (
    MIN_RETRIES,
    ContextLengthExceeded,
    RetryBudget,
    context_exceeded,
    failure_kind,
    refusal,
    with_model,
)


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (UpstreamUnavailable("refused"), None, "connect"),
        (UpstreamUnavailable("broken off"), 200, "connect"),
        (UpstreamUnavailable("answered 503"), 503, "5xx"),
        (UpstreamUnavailable("answered 500"), 500, "5xx"),
        (UpstreamUnavailable("answered 429"), 429, "429"),
        (UpstreamTimeout("nothing within 5 s"), None, "timeout"),
        (UpstreamTimeout("nothing within 5 s"), 200, "timeout"),
        (ContextLengthExceeded("too long", status=400), 400, "context_length"),
        (BadRequest("bad temperature", status=400), 400, None),
    ],
)
def test_failure_kinds(error: GatewayError, status: int | None, kind: str | None) -> None:
    assert failure_kind(error, status) == kind


VLLM = (
    "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
    "(4900 in the messages, 100 in the completion). Please reduce the length of the messages "
    "or completion."
)


@pytest.mark.parametrize(
    ("status", "body", "is_context"),
    [
        (400, {"object": "error", "message": VLLM, "type": "BadRequestError", "code": 400}, True),
        (400, {"error": {"message": VLLM, "type": "invalid_request_error"}}, True),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "the request exceeds the available context size, try increasing it",
                    "type": "exceed_context_size_error",
                }
            },
            True,
        ),  # llama.cpp
        (
            422,
            {
                "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be "
                "<= 4096. Given: 4000 `inputs` tokens and 200 `max_new_tokens`",
                "error_type": "validation",
            },
            True,
        ),  # TGI
        (400, {"error": {"message": "prompt is too long: 210000 tokens > 200000 maximum"}}, True),
        (400, {"error": {"message": "temperature must be at most 2"}}, False),
        (500, {"error": {"message": VLLM}}, False),  # a 5xx is a 5xx whatever it says
        (404, {"error": {"message": VLLM}}, False),
    ],
)
def test_context_length_refusals(status: int, body: object, is_context: bool) -> None:
    found = context_exceeded(status, orjson.dumps(body))
    assert (found is not None) == is_context
    if found is not None:
        assert found.status == status  # drawn as the worker's own refusal, its message kept
        assert found.message in orjson.dumps(body).decode().replace('\\"', '"')


def test_a_refusal_keeps_the_workers_status_and_message() -> None:
    err = refusal(422, b'{"detail": "bad field"}')
    assert (err.status, err.message) == (422, "bad field")
    assert refusal(400, b"").message == "The upstream refused the request (400)."
    assert refusal(400, b"plain text").message == "plain text"


def test_with_model_changes_only_the_model() -> None:
    payload = orjson.dumps({"model": "a", "messages": [{"role": "user", "content": "hi"}]})
    assert orjson.loads(with_model(payload, "b")) == {
        "model": "b",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_the_budget_is_a_share_of_requests_in_flight_with_a_floor() -> None:
    budget = RetryBudget()
    budget.retries = MIN_RETRIES - 1
    assert budget.allows(20, in_flight=1)  # a quiet gateway still retries
    budget.retries = MIN_RETRIES
    assert not budget.allows(20, in_flight=10)
    assert budget.allows(20, in_flight=100)  # 20 % of 100 = 20 > 10
    budget.retries = 20
    assert not budget.allows(20, in_flight=100)
    assert budget.allows(50, in_flight=100)
