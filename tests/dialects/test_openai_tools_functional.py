"""Tool calling for OpenAI clients, over real sockets with the official ``openai`` SDK: every
``tool_choice``, parallel calls streamed and reassembled (by hand and by the SDK's own stream
helper), and ``stream_options.include_usage`` honoured either way."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web
from openai.types.chat import ChatCompletionChunk

from gateway.server import Server
from tests.clients import sdk
from tests.fakes import FakeUpstream, chunk, sse

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a place",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
NO_CHOICES: Any = None  # tests.fakes.chunk: a chunk without choices
TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a timezone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
    },
}


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


def reassemble(chunks: list[ChatCompletionChunk]) -> dict[int, dict[str, str]]:
    """Tool calls from streamed deltas, the way OpenAI's docs tell clients to do it."""
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for choice in c.choices:
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += tc.id or ""
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
    return calls


async def test_tool_choice_required_calls_a_tool(gateway: Server) -> None:
    answer = await sdk(gateway).chat.completions.create(
        model="mock-model",
        messages=user("Hello there"),  # asks for no tool by itself
        tools=[WEATHER],
        tool_choice="required",
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Athens, Greece"}


async def test_tool_choice_named_function(gateway: Server) -> None:
    answer = await sdk(gateway).chat.completions.create(
        model="mock-model",
        messages=user("What is the weather, and the time?"),
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = answer.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls if c.type == "function"] == ["get_time"]
    assert json.loads(calls[0].function.arguments) == {"timezone": "mock"}  # type: ignore[union-attr]


async def test_tool_choice_none_answers_in_text(gateway: Server) -> None:
    client = sdk(gateway)
    request: dict[str, Any] = {
        "model": "mock-model",
        "messages": [{"role": "user", "content": "What is the weather in Oslo? Use a tool."}],
        "tools": [WEATHER],
        "tool_choice": "none",
    }
    answer = await client.chat.completions.create(**request)
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "stop"
    assert message.content and not message.tool_calls
    chunks = [c async for c in await client.chat.completions.create(**request, stream=True)]
    assert not reassemble(chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == message.content


async def test_parallel_tool_calls_streamed_and_reassembled(gateway: Server) -> None:
    chunks = [
        c
        async for c in await sdk(gateway).chat.completions.create(
            model="mock-model",
            messages=user("Weather and time, in parallel please"),
            tools=[WEATHER, TIME],
            stream=True,
        )
    ]
    calls = reassemble(chunks)
    assert sorted(calls) == [0, 1]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"location": "Athens, Greece"}
    assert json.loads(calls[1]["arguments"]) == {"timezone": "mock"}
    assert calls[0]["id"] and calls[1]["id"] and calls[0]["id"] != calls[1]["id"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls"
    assert all(c.choices for c in chunks), "usage-only chunk sent without include_usage"


async def test_sdk_stream_helper_reassembles_parallel_calls(gateway: Server) -> None:
    async with sdk(gateway).chat.completions.stream(
        model="mock-model",
        messages=user("Weather in two cities, in parallel"),
        tools=[WEATHER],
        stream_options={"include_usage": True},
    ) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"location": "Athens, Greece"},
        {"location": "Paris, France"},
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    # the mock counts a call as 1 token plus one per streamed fragment (3 each here)
    assert final.usage is not None and final.usage.completion_tokens == 8


async def test_interleaved_parallel_fragments_pass_through(
    gateway: Server, fake: FakeUpstream
) -> None:
    """Fragments of two calls interleaved by the upstream reach the client as they came."""

    def call(index: int, arguments: str, name: str | None = None) -> dict[str, Any]:
        head = {"id": f"call_{index}", "type": "function"} if name else {}
        function = {"name": name, "arguments": arguments} if name else {"arguments": arguments}
        return {"tool_calls": [{"index": index, **head, "function": function}]}

    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await sse(
            request,
            [
                chunk({"role": "assistant", "content": None}),
                chunk(call(0, '{"location": ', "get_weather")),
                chunk(call(1, '{"timezone": ', "get_time")),
                chunk(call(1, '"CET"}')),
                chunk(call(0, '"Oslo"}')),
                chunk({}, finish="tool_calls"),
                chunk(
                    NO_CHOICES,
                    usage={"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
                ),
                b"data: [DONE]\n\n",
            ],
        )

    fake.script = script
    chunks = [
        c
        async for c in await sdk(gateway).chat.completions.create(
            model="fake-model",
            messages=user("Oslo weather and CET time"),
            tools=[WEATHER, TIME],
            tool_choice="auto",
            parallel_tool_calls=True,
            stream=True,
            stream_options={"include_usage": True},
        )
    ]
    calls = reassemble(chunks)
    assert orjson.loads(calls[0]["arguments"]) == {"location": "Oslo"}
    assert orjson.loads(calls[1]["arguments"]) == {"timezone": "CET"}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 11
    sent = fake.seen[-1].body
    assert sent["tools"] == [WEATHER, TIME]
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_include_usage_honoured(gateway: Server) -> None:
    client = sdk(gateway)
    request: dict[str, Any] = {
        "model": "mock-model",
        "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
        "tools": [WEATHER],
        "stream": True,
    }
    asked = [
        c
        async for c in await client.chat.completions.create(
            **request, stream_options={"include_usage": True}
        )
    ]
    last = asked[-1]
    assert last.choices == [] and last.usage is not None
    # one call: 1 token to open it, 3 fragments; prompt: 6 words + 3
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (9, 4)
    assert all(c.usage is None for c in asked[:-1])
    for options in (None, {"include_usage": False}):
        extra: dict[str, Any] = {} if options is None else {"stream_options": options}
        plain = [c async for c in await client.chat.completions.create(**request, **extra)]
        assert all(c.choices and c.usage is None for c in plain)
        (call,) = reassemble(plain).values()
        assert json.loads(call["arguments"]) == {"location": "Athens, Greece"}
