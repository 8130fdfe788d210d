"""The Responses API through the gateway with the official ``openai`` SDK, translate mode, in
front of the bundled mock worker: text, streams (every event type the SDK parses), function
calls (parallel), a tool loop by ``previous_response_id`` and by the whole input, reasoning,
json_schema, stored responses (GET, DELETE, another owner's id), hosted tools dropped with the
header or refused, namespace tools flattened and restored."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.mock_worker import MockState
from gateway.server import Server
from tests.clients import sdk
from tests.fakes import FakeUpstream
from tests.proxy.responses_support import OTHER_KEY, bearer, call, responses_yaml

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
}
FILES = {
    "type": "namespace",
    "name": "mcp__files__",
    "description": "The files MCP server",
    "tools": [
        {
            "type": "function",
            "name": "read_file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        }
    ],
}
STREAM_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
async def served(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> tuple[Server, MockState]:
    return await gateway_factory(responses_yaml(mock[0], fake.url)), mock[1]


def last_chat(state: MockState) -> dict[str, Any]:
    return state.requests[-1][1]


async def test_text_answer_with_instructions(served: tuple[Server, MockState]) -> None:
    server, state = served
    client = sdk(server)
    response = await client.responses.create(
        model="gpt-4o-mini", input="echo: hello there", instructions="Be brief."
    )
    assert response.output_text == "hello there"
    assert response.model == "gpt-4o-mini" and response.status == "completed"
    assert response.id.startswith("resp_") and response.instructions == "Be brief."
    assert response.usage is not None and response.usage.output_tokens == 2
    assert response.usage.total_tokens == response.usage.input_tokens + 2
    sent = last_chat(state)
    assert sent["model"] == "mock-upstream"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "echo: hello there"},
    ]


async def test_an_anthropic_version_header_does_not_make_it_anthropic(
    served: tuple[Server, MockState],
) -> None:
    """A client (or a proxy set up for Claude Code) that sends ``anthropic-version`` on every
    call still gets the Responses API: before, the translated chat body was read as an
    Anthropic one and refused with 400 (found by review)."""
    server, _ = served
    headers = {**bearer(), "anthropic-version": "2023-06-01"}
    body = {"model": "gpt-4o-mini", "input": "echo: hello there", "tools": [WEATHER]}
    status, _, answer = await call(server, "POST", "/v1/responses", json=body, headers=headers)
    assert status == 200, answer
    assert answer["object"] == "response" and answer["status"] == "completed"
    status, _, refusal = await call(server, "GET", "/v1/responses/resp_unknown", headers=headers)
    assert status == 404 and "type" not in refusal, refusal  # OpenAI's form of a refusal


async def test_stream_events_in_order(served: tuple[Server, MockState]) -> None:
    server, _ = served
    client = sdk(server)
    async with client.responses.stream(model="mock-model", input="echo: one two three") as s:
        events = [event async for event in s]
        final = await s.get_final_response()
    kinds = [e.type for e in events]
    assert [k for i, k in enumerate(kinds) if k not in kinds[:i]] == STREAM_TYPES
    assert kinds.count("response.output_text.delta") == 3 and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "one two three"
    )
    assert final.output_text == "one two three" and final.usage is not None
    raw = await client.responses.create(model="mock-model", input="echo: x y", stream=True)
    assert [e.type async for e in raw][-1] == "response.completed"


async def test_parallel_function_calls_then_the_loop_by_previous_response_id(
    served: tuple[Server, MockState],
) -> None:
    server, state = served
    client = sdk(server)
    first = await client.responses.create(
        model="mock-model",
        input="use a tool in parallel for the weather and time",
        tools=[WEATHER, TIME],  # type: ignore[list-item]
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert last_chat(state)["tools"][0] == {
        "type": "function",
        "function": {k: v for k, v in WEATHER.items() if k != "type"},
    }
    second = await client.responses.create(
        model="mock-model",
        previous_response_id=first.id,
        input=[
            {"type": "function_call_output", "call_id": c.call_id, "output": f"{c.name}: ok"}
            for c in calls
        ],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
    )
    assert second.output_text == "The tool said: get_weather: ok get_time: ok"
    assert second.previous_response_id == first.id
    messages = last_chat(state)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == [c.call_id for c in calls]


async def test_streamed_tool_loop_with_the_whole_input(served: tuple[Server, MockState]) -> None:
    """As stateless agents run it (store false): each turn sends the whole conversation."""
    server, _ = served
    client = sdk(server)
    conversation: list[Any] = [{"role": "user", "content": "what is the weather? use a tool"}]
    async with client.responses.stream(
        model="mock-model",
        input=conversation,
        tools=[WEATHER],
        store=False,  # type: ignore[list-item]
    ) as s:
        kinds = [e.type async for e in s]
        first = await s.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    [weather] = first.output
    assert weather.type == "function_call" and weather.name == "get_weather"
    assert weather.arguments == '{"city":"Athens, Greece"}'
    conversation += [weather.model_dump(exclude_none=True)]
    conversation += [
        {"type": "function_call_output", "call_id": weather.call_id, "output": "sunny"}
    ]
    async with client.responses.stream(
        model="mock-model",
        input=conversation,
        tools=[WEATHER],
        store=False,  # type: ignore[list-item]
    ) as s:
        second = await s.get_final_response()
    assert second.output_text == "The tool said: sunny"
    with pytest.raises(openai.NotFoundError):  # store: false kept nothing
        await client.responses.retrieve(second.id)


async def test_reasoning_content_is_a_reasoning_item(served: tuple[Server, MockState]) -> None:
    server, state = served
    client = sdk(server)
    response = await client.responses.create(
        model="mock-reasoner", input="echo: four", reasoning={"effort": "high"}
    )
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "Let me think."
    assert message.type == "message" and response.output_text == "four"
    assert last_chat(state)["reasoning_effort"] == "high"
    async with client.responses.stream(model="mock-reasoner", input="echo: four") as s:
        kinds = [e.type async for e in s]
        streamed = await s.get_final_response()
    assert kinds.count("response.reasoning_text.delta") == 3
    assert [o.type for o in streamed.output] == ["reasoning", "message"]


async def test_json_schema_reaches_the_worker_as_response_format(
    served: tuple[Server, MockState],
) -> None:
    server, state = served
    client = sdk(server)
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}}
    response = await client.responses.create(
        model="mock-model",
        input='echo: {"colour": "red"}',
        text={"format": {"type": "json_schema", "name": "colour", "schema": schema}},
    )
    assert response.output_text == '{"colour": "red"}'
    assert last_chat(state)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "colour", "schema": schema},
    }


async def test_stored_responses_get_delete_and_owners(served: tuple[Server, MockState]) -> None:
    server, _ = served
    client, other = sdk(server), sdk(server, api_key=OTHER_KEY)
    made = await client.responses.create(model="mock-model", input="echo: keep me")
    got = await client.responses.retrieve(made.id)
    assert got.output_text == "keep me" and got.id == made.id and got.usage == made.usage
    for attempt in (
        other.responses.retrieve(made.id),
        other.responses.delete(made.id),
        other.responses.create(model="mock-model", input="x", previous_response_id=made.id),
    ):
        with pytest.raises(openai.NotFoundError):  # another owner's id is an unknown id
            await attempt
    for path in ("/v1/responses/", "/responses/", "/api/v1/responses/", "/v1/llm/responses/"):
        status, _, body = await call(server, "GET", path + made.id)
        assert status == 200 and body["id"] == made.id
    status, _, body = await call(server, "DELETE", "/v1/responses/" + made.id)
    assert (status, body) == (200, {"id": made.id, "object": "response", "deleted": True})
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.responses.create(model="mock-model", input="x", previous_response_id="nope")
    assert "nope" in str(unknown.value)
    status, _, _ = await call(server, "GET", "/v1/responses/a%20b")
    assert status == 404


async def test_a_streamed_response_is_stored_before_its_end(
    served: tuple[Server, MockState],
) -> None:
    server, _ = served
    client = sdk(server)
    async with client.responses.stream(model="mock-model", input="echo: a b") as s:
        async for event in s:
            if event.type == "response.completed":  # not one byte later: it is there now
                stored = await client.responses.retrieve(event.response.id)
                assert stored.output_text == "a b"


async def test_hosted_tools_are_dropped_and_named(served: tuple[Server, MockState]) -> None:
    server, state = served
    tools = [WEATHER, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["v"]}]
    body = {"model": "mock-model", "input": "echo: hi", "tools": tools}
    status, headers, answer = await call(server, "POST", "/v1/responses", json=body)
    assert status == 200, answer
    assert headers["x-gateway-dropped-tools"] == "web_search, file_search"
    assert [t["function"]["name"] for t in last_chat(state)["tools"]] == ["get_weather"]
    assert [t["type"] for t in answer["tools"]] == ["function"]
    status, headers, raw = await call(server, "POST", "/v1/responses", json=body | {"stream": True})
    assert status == 200 and headers["x-gateway-dropped-tools"] == "web_search, file_search"
    assert b"event: response.completed" in raw
    status, headers, _ = await call(
        server, "POST", "/v1/responses", json=body | {"tools": [WEATHER]}
    )
    assert "x-gateway-dropped-tools" not in headers


async def test_hosted_tools_refused_when_configured(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    server = await gateway_factory(
        responses_yaml(mock[0], fake.url, extra="responses: {hosted_tools: reject}\n")
    )
    before = mock[1].received
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk(server).responses.create(
            model="mock-model",
            input="hi",
            tools=[WEATHER, {"type": "web_search"}],  # type: ignore[list-item]
        )
    assert "web_search" in str(refused.value) and mock[1].received == before


async def test_namespace_tools_round_trip(served: tuple[Server, MockState]) -> None:
    server, state = served
    client = sdk(server)
    first = await client.responses.create(
        model="mock-model",
        input="read it with a tool",
        tools=[FILES],  # type: ignore[list-item]
    )
    [read] = first.output
    assert read.type == "function_call"
    assert (read.name, read.namespace) == ("read_file", "mcp__files__")
    assert last_chat(state)["tools"][0]["function"]["name"] == "mcp__files__read_file"
    second = await client.responses.create(
        model="mock-model",
        input=[
            read.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": read.call_id, "output": "notes"},
        ],
        tools=[FILES],  # type: ignore[list-item]
    )
    assert second.output_text == "The tool said: notes"
    assert last_chat(state)["messages"][0]["tool_calls"][0]["function"]["name"] == (
        "mcp__files__read_file"
    )


async def test_a_model_that_does_not_serve_responses(served: tuple[Server, MockState]) -> None:
    server, state = served
    before = state.received
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk(server).responses.create(model="chat-only", input="hi")
    assert refused.value.code == "model_not_supported" and state.received == before
    assert "responses" in str(refused.value)
