"""The Responses API is governed as chat is: credentials, the ``vision`` permission for image
input, limits (the same admission, counting with chat), usage settled with ``api: responses``
(``byApi`` in the summary), the reservation of ``max_output_tokens``; and hostile input is a
4xx before any worker is called, never a 5xx."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.mock_worker import MockState
from gateway.server import Server
from tests.clients import sdk
from tests.fakes import FakeUpstream
from tests.proxy.responses_support import (
    NO_VISION_KEY,
    RPM2_KEY,
    bearer,
    call,
    responses_yaml,
    usage_by_api,
)

IMAGE = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}


@pytest.fixture
async def served(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> tuple[Server, MockState]:
    return await gateway_factory(responses_yaml(mock[0], fake.url)), mock[1]


async def test_usage_is_recorded_per_api(served: tuple[Server, MockState]) -> None:
    server, _ = served
    client = sdk(server)
    await client.responses.create(model="mock-model", input="say:3")
    async with client.responses.stream(model="mock-model", input="say:4") as s:
        await s.get_final_response()
    await client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "say:5"}]
    )
    by_api = await usage_by_api(server, 3)
    assert by_api["responses"]["requests"] == 2
    assert by_api["responses"]["outputTokens"] == 7
    assert by_api["chat"]["requests"] == 1 and by_api["chat"]["outputTokens"] == 5


async def test_limits_count_responses_with_chat(
    served: tuple[Server, MockState],
) -> None:
    server, state = served
    client = sdk(server, api_key=RPM2_KEY)
    await client.responses.create(model="mock-model", input="hi")
    await client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}]
    )
    before = state.received
    with pytest.raises(openai.RateLimitError) as limited:
        await client.responses.create(model="mock-model", input="hi")
    assert limited.value.code == "rate_limit_exceeded"
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert state.received == before


async def test_the_reservation_is_max_output_tokens(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    """A daily limit of 1,000 tokens admits a request reserving 500 but not one reserving
    5,000 (``max_output_tokens``) nor one without it (``default_max_tokens``: 4,096)."""
    limited = responses_yaml(mock[0], fake.url).replace(
        "permissions: ['chat'], rpm_limit: 2", "permissions: ['chat'], daily_limit: 1000"
    )
    server = await gateway_factory(limited)
    client = sdk(server, api_key=RPM2_KEY)
    await client.responses.create(model="mock-model", input="hi", max_output_tokens=500)
    for extra in ({"max_output_tokens": 5000}, {}):
        with pytest.raises(openai.RateLimitError) as refused:
            await client.responses.create(model="mock-model", input="hi", **extra)  # type: ignore[arg-type]
        assert refused.value.code == "daily_limit_exceeded"


async def test_an_image_needs_vision(served: tuple[Server, MockState]) -> None:
    server, state = served
    image_input = [{"role": "user", "content": [{"type": "input_text", "text": "what?"}, IMAGE]}]
    before = state.received
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await sdk(server, api_key=NO_VISION_KEY).responses.create(
            model="mock-model",
            input=image_input,  # type: ignore[arg-type]
        )
    assert "'vision'" in str(refused.value) and state.received == before
    answer = await sdk(server).responses.create(model="mock-model", input=image_input)  # type: ignore[arg-type]
    assert answer.status == "completed"
    part = state.requests[-1][1]["messages"][0]["content"][1]
    assert part == {"type": "image_url", "image_url": {"url": IMAGE["image_url"]}}
    # An image earlier in the conversation counts as much as a new one.
    with pytest.raises(openai.PermissionDeniedError):
        await sdk(server, api_key=NO_VISION_KEY).responses.create(
            model="mock-model", input="and now?", previous_response_id=answer.id
        )


def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"a": value}
    return value


HOSTILE: list[tuple[Any, int]] = [
    (b"", 400),
    (b"{not json", 400),
    (b"[]", 400),
    (b'"text"', 400),
    ({"model": 7, "input": "x"}, 400),
    ({"model": "mock-model"}, 400),
    ({"model": "mock-model", "input": {"a": 1}}, 400),
    ({"model": "mock-model", "input": [None]}, 400),
    ({"model": "mock-model", "input": [{"type": {"x": 1}}]}, 400),
    ({"model": "mock-model", "input": [{"role": ["user"], "content": "x"}]}, 400),
    ({"model": "mock-model", "input": "x", "tools": "all"}, 400),
    ({"model": "mock-model", "input": "x", "tools": [{"type": ["function"]}]}, 400),
    ({"model": "mock-model", "input": "x", "tool_choice": {"type": "function"}}, 400),
    ({"model": "mock-model", "input": "x", "tool_choice": ["auto"]}, 400),
    ({"model": "mock-model", "input": "x", "text": {"format": {"type": "xml"}}}, 400),
    ({"model": "mock-model", "input": "x", "max_output_tokens": True}, 400),
    ({"model": "mock-model", "input": "x", "previous_response_id": 5}, 400),
    ({"model": "mock-model", "input": "x", "conversation": "conv_1"}, 400),
    ({"model": "mock-model", "input": "x", "metadata": deep(250)}, 400),
    ({"model": "mock-model", "input": "x", "text": {"format": {
        "type": "json_schema", "name": "n", "schema": deep(248)}}}, 400),
    ({"model": "mock-model", "input": [{"role": "user", "content": "x", "junk": deep(252)}]}, 200),
    ({"model": "mock-model", "input": "x", "tools": [{"type": "function", "name": "f",
                                                       "parameters": deep(400)}]}, 400),
    ({"model": "nope", "input": "x"}, 404),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status"), HOSTILE)
async def test_hostile_bodies_are_4xx_before_any_worker(
    served: tuple[Server, MockState], body: Any, status: int
) -> None:
    server, state = served
    before = state.received
    raw = body if isinstance(body, bytes) else None
    got, _, answer = await call(
        server,
        "POST",
        "/v1/responses",
        json=None if raw is not None else body,
        data=raw,
        headers=bearer() | {"Content-Type": "application/json"},
    )
    assert got == status, answer
    if status != 200:
        assert answer["error"]["message"] and state.received == before


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer sk_gw_nope"}, 401), (bearer("x" * 40), 401)],
)
async def test_credentials(served: tuple[Server, MockState], headers: Any, status: int) -> None:
    server, _ = served
    for method, path in (("POST", "/v1/responses"), ("GET", "/v1/responses/resp_1"),
                         ("DELETE", "/v1/responses/resp_1")):  # fmt: skip
        got, _, answer = await call(
            server, method, path, json={"model": "mock-model", "input": "x"}, headers=headers
        )
        assert got == status and answer["error"]["message"], (method, path, answer)


async def test_a_worker_failing_mid_stream_fails_the_response(
    served: tuple[Server, MockState],
) -> None:
    server, _ = served
    client = sdk(server, default_headers={"x-mock-die-after": "2"})
    async with client.responses.stream(model="mock-model", input="say:10") as s:
        kinds = [e.type async for e in s]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            await s.get_final_response()
    assert kinds[-2:] == ["error", "response.failed"] and "response.completed" not in kinds
    with pytest.raises(openai.InternalServerError):
        await sdk(server, default_headers={"x-mock-status": "500"}).responses.create(
            model="mock-model", input="x"
        )


async def test_max_output_tokens_is_clamped_to_the_models(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    """A model whose workers generate at most 500 tokens: a request asking 5,000 is sent with
    500 and reserves 500 (a daily limit of 1,000 admits it)."""
    text = (
        responses_yaml(mock[0], fake.url)
        .replace('"upstream_model": "mock-upstream",', '"upstream_model": "mock-upstream", '
                 '"max_output_tokens": 500,')
        .replace("permissions: ['chat'], rpm_limit: 2", "permissions: ['chat'], daily_limit: 1000")
    )  # fmt: skip
    server = await gateway_factory(text)
    server_state = mock[1]
    answer = await sdk(server, api_key=RPM2_KEY).responses.create(
        model="mock-model", input="hi", max_output_tokens=5000
    )
    assert answer.max_output_tokens == 5000  # what was asked, as OpenAI repeats it
    assert server_state.requests[-1][1]["max_tokens"] == 500
