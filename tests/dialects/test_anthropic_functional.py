"""Code written for Anthropic's API works against the gateway by changing only the base URL and
the key: the official ``anthropic`` SDK over real sockets, through the gateway, to the bundled mock
worker and to the independent fake upstream (which records what reached it)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from aiohttp import web
from anthropic.types import Message, ToolUseBlock

from gateway.server import Server
from tests.clients import AUTH, claude
from tests.fakes import FakeUpstream, chunk, completion, sse

WEATHER: Any = {
    "name": "get_weather",
    "description": "Current weather for a place",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
NO_CHOICES: Any = None  # tests.fakes.chunk: a chunk without choices
TIME: Any = {
    "name": "get_time",
    "description": "Local time in a timezone",
    "input_schema": {"type": "object", "properties": {"timezone": {"type": "string"}}},
}


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def tool_uses(message: Message) -> list[ToolUseBlock]:
    return [block for block in message.content if block.type == "tool_use"]


# --- messages.create ------------------------------------------------------------------------------


async def test_create_text_with_string_system(gateway: Server, fake: FakeUpstream) -> None:
    answer = await claude(gateway).messages.create(
        model="fake-model",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
        metadata={"user_id": "user-42"},
        # anthropic 2.x dropped the sampling parameters from create()'s signature; the API (and
        # older SDKs) still take them in the body
        extra_body={"temperature": 0.2, "top_p": 0.9},
    )
    assert answer.type == "message" and answer.role == "assistant"
    assert answer.id.startswith("msg_") and answer.model == "fake-model"
    assert text_of(answer) == "fake answer"
    assert answer.stop_reason == "end_turn" and answer.stop_sequence is None
    # the fake upstream reported 7 prompt and 3 completion tokens
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (7, 3)
    sent = fake.seen[-1].body
    assert sent["model"] == "org/fake-13b"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (100, 0.2, 0.9)
    assert sent["user"] == "user-42"
    assert "metadata" not in sent and "system" not in sent


async def test_create_with_system_blocks(gateway: Server, fake: FakeUpstream) -> None:
    answer = await claude(gateway).messages.create(
        model="fake-model",
        max_tokens=50,
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    )
    assert text_of(answer) == "fake answer"
    assert fake.seen[-1].body["messages"] == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": "Hi"},
    ]


async def test_usage_equals_the_mock_workers_report(gateway: Server) -> None:
    answer = await claude(gateway).messages.create(
        model="mock-model",
        max_tokens=100,
        system="Be brief.",  # 2 words + 3
        messages=[{"role": "user", "content": "echo: hello there"}],  # 3 words + 3
    )
    assert text_of(answer) == "hello there"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (11, 2)


async def test_stop_sequence(gateway: Server) -> None:
    client = claude(gateway)
    request: dict[str, Any] = {
        "model": "mock-model",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "echo: one two STOP three"}],
        "stop_sequences": ["STOP", "NEVER"],
    }
    answer = await client.messages.create(**request)
    assert answer.stop_reason == "stop_sequence" and answer.stop_sequence == "STOP"
    assert text_of(answer).strip() == "one two"
    async with client.messages.stream(**request) as stream:
        streamed = await stream.get_final_message()
    assert streamed.stop_reason == "stop_sequence" and streamed.stop_sequence == "STOP"
    assert text_of(streamed).strip() == "one two"


async def test_max_tokens_stop_reason(gateway: Server) -> None:
    client = claude(gateway)
    request: dict[str, Any] = {
        "model": "mock-model",
        "max_tokens": 3,
        "messages": [{"role": "user", "content": "say:10"}],
    }
    answer = await client.messages.create(**request)
    assert answer.stop_reason == "max_tokens" and answer.usage.output_tokens == 3
    assert text_of(answer) == "tok0 tok1 tok2"
    async with client.messages.stream(**request) as stream:
        streamed = await stream.get_final_message()
    assert streamed.stop_reason == "max_tokens" and streamed.usage.output_tokens == 3
    assert text_of(streamed) == "tok0 tok1 tok2"


async def test_answer_has_no_openai_only_fields_but_keeps_vendor_extras(
    gateway: Server, fake: FakeUpstream
) -> None:
    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        answer = completion("ok", reasoning_content="thought it over") | {
            "system_fingerprint": "fp_123",
            "service_tier": "default",
            "model_output_metadata": {"confidence": 0.9},
        }
        return web.json_response(answer)

    fake.script = script
    raw = await claude(gateway).messages.with_raw_response.create(
        model="fake-model", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    body = orjson.loads(await raw.read())
    for openai_only in ("system_fingerprint", "service_tier", "object", "created", "choices"):
        assert openai_only not in body
    assert body["model_output_metadata"] == {"confidence": 0.9}
    message = await raw.parse()
    assert (message.model_extra or {})["model_output_metadata"] == {"confidence": 0.9}
    assert message.content[0].type == "thinking"
    assert message.content[0].thinking == "thought it over"


# --- messages.stream ------------------------------------------------------------------------------


async def test_stream_text(gateway: Server) -> None:
    async with claude(gateway).messages.stream(
        model="mock-model", max_tokens=100, messages=[{"role": "user", "content": "say:6"}]
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) == 6
    assert "".join(pieces) == text_of(final) == "tok0 tok1 tok2 tok3 tok4 tok5"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 6)


async def test_stream_tool_use(gateway: Server) -> None:
    fragments: list[str] = []
    async with claude(gateway).messages.stream(
        model="mock-model",
        max_tokens=200,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "What is the weather in Athens?"}],
    ) as stream:
        async for event in stream:
            if event.type == "input_json":
                fragments.append(event.partial_json)
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (call,) = tool_uses(final)
    assert call.name == "get_weather" and call.id
    assert call.input == {"location": "Athens, Greece"}
    assert len(fragments) > 1 and orjson.loads("".join(fragments)) == call.input


async def test_stream_parallel_tool_calls(gateway: Server) -> None:
    async with claude(gateway).messages.stream(
        model="mock-model",
        max_tokens=200,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in two cities, in parallel"}],
    ) as stream:
        final = await stream.get_final_message()
    calls = tool_uses(final)
    assert [c.name for c in calls] == ["get_weather", "get_weather"]
    assert [c.input for c in calls] == [
        {"location": "Athens, Greece"},
        {"location": "Paris, France"},
    ]
    assert calls[0].id != calls[1].id
    assert final.stop_reason == "tool_use"


async def test_stream_interleaved_parallel_tool_calls(gateway: Server, fake: FakeUpstream) -> None:
    """An upstream that interleaves the fragments of two calls: each block still comes whole."""

    def call(index: int, arguments: str, head: bool = False) -> dict[str, Any]:
        opened = {"id": f"call_{index}", "type": "function"} if head else {}
        function = {"name": "get_weather", "arguments": arguments} if head else {}
        return {
            "tool_calls": [
                {"index": index, **opened, "function": function or {"arguments": arguments}}
            ]
        }

    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        events = [
            chunk({"role": "assistant", "content": ""}),
            chunk(call(0, '{"loca', head=True)),
            chunk(call(1, '{"location"', head=True)),
            chunk(call(0, 'tion": "Oslo"}')),
            chunk(call(1, ': "Rome"}')),
            chunk({}, finish="tool_calls"),
            chunk(
                NO_CHOICES, usage={"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17}
            ),
            b"data: [DONE]\n\n",
        ]
        return await sse(request, events)

    fake.script = script
    async with claude(gateway).messages.stream(
        model="fake-model",
        max_tokens=200,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "Oslo and Rome"}],
    ) as stream:
        final = await stream.get_final_message()
    calls = tool_uses(final)
    assert [(c.id, c.input) for c in calls] == [
        ("call_0", {"location": "Oslo"}),
        ("call_1", {"location": "Rome"}),
    ]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 8)


async def test_tool_result_round_trip_keeps_ids(gateway: Server, fake: FakeUpstream) -> None:
    client = claude(gateway)
    question: Any = {"role": "user", "content": "What is the weather in Athens?"}
    async with client.messages.stream(
        model="mock-model", max_tokens=200, tools=[WEATHER], messages=[question]
    ) as stream:
        first = await stream.get_final_message()
    (call,) = tool_uses(first)
    result = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "18 C and sunny"},
        ],
    }
    conversation: list[Any] = [question, {"role": "assistant", "content": first.content}, result]
    answered = await client.messages.create(
        model="mock-model", max_tokens=200, tools=[WEATHER], messages=conversation
    )
    assert text_of(answered) == "The tool said: 18 C and sunny"
    assert answered.stop_reason == "end_turn"

    # An id as Anthropic issues them, through the fake upstream that records what reached it.
    anthropic_id = "toolu_01A09q90qw90lq917835lq9"
    conversation[1] = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {
                "type": "tool_use",
                "id": anthropic_id,
                "name": "get_weather",
                "input": {"location": "Athens"},
            },
        ],
    }
    conversation[2] = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": anthropic_id,
                "content": [{"type": "text", "text": "18 C"}],
            },
            {"type": "text", "text": "And tomorrow?"},
        ],
    }
    await client.messages.create(
        model="fake-model", max_tokens=200, tools=[WEATHER], messages=conversation
    )
    sent = fake.seen[-1].body["messages"]
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert assistant["content"] == "Let me look."
    assert assistant["tool_calls"] == [
        {
            "id": anthropic_id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"Athens"}'},
        }
    ]
    tool = next(m for m in sent if m["role"] == "tool")
    assert tool == {"role": "tool", "tool_call_id": anthropic_id, "content": "18 C"}
    assert sent[-1] == {"role": "user", "content": "And tomorrow?"}
    assert fake.seen[-1].body["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]


# --- reasoning, models, token counting ------------------------------------------------------------


async def test_reasoner_answers_carry_a_thinking_block(gateway: Server) -> None:
    client = claude(gateway)
    request: dict[str, Any] = {
        "model": "mock-reasoner",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "echo: done"}],
    }
    whole = await client.messages.create(**request)
    assert [b.type for b in whole.content] == ["thinking", "text"]
    assert whole.content[0].type == "thinking" and whole.content[0].thinking == "Let me think."
    thoughts: list[str] = []
    async with client.messages.stream(**request) as stream:
        async for event in stream:
            if event.type == "thinking":
                thoughts.append(event.thinking)
        streamed = await stream.get_final_message()
    assert "".join(thoughts) == "Let me think."
    assert [b.type for b in streamed.content] == ["thinking", "text"]
    assert streamed.content[0].thinking == "Let me think."  # type: ignore[union-attr]
    assert text_of(streamed) == text_of(whole) == "done"
    assert streamed.usage.output_tokens == whole.usage.output_tokens == 4


async def test_models_list_in_the_anthropic_form(gateway: Server) -> None:
    page = await claude(gateway).models.list()
    ids = [model.id async for model in page]
    assert sorted(ids) == ["fake-model", "mock-model", "mock-reasoner"]
    assert all(model.type == "model" and model.created_at.year >= 2020 for model in page.data)


async def test_count_tokens(gateway: Server) -> None:
    counted = await claude(gateway).messages.count_tokens(
        model="mock-model",
        system="You are a weather bot.",
        tools=[WEATHER],
        messages=[{"role": "user", "content": "What is the weather in Athens?"}],
    )
    assert counted.input_tokens > 0
    bigger = await claude(gateway).messages.count_tokens(
        model="mock-model",
        messages=[{"role": "user", "content": "What is the weather in Athens? " * 50}],
    )
    assert bigger.input_tokens > counted.input_tokens


# --- one route, both dialects ---------------------------------------------------------------------


async def test_api_chat_completions_serves_both_dialects(gateway: Server) -> None:
    url = f"http://127.0.0.1:{gateway.port}/api/chat/completions"
    anthropic_body = {
        "model": "mock-model",
        "max_tokens": 50,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "echo: from claude"}],
    }
    openai_body = {
        "model": "mock-model",
        "messages": [{"role": "user", "content": "echo: from gpt"}],
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=anthropic_body, headers=AUTH) as r:
            assert r.status == 200
            as_claude = await r.json()
        async with http.post(url, json=openai_body, headers=AUTH) as r:
            assert r.status == 200
            as_gpt = await r.json()
        streamed = {**anthropic_body, "stream": True}
        async with http.post(url, json=streamed, headers=AUTH) as r:
            assert r.status == 200 and r.content_type == "text/event-stream"
            events = await r.read()
    assert as_claude["type"] == "message" and as_claude["content"] == [
        {"type": "text", "text": "from claude"}
    ]
    assert as_claude["stop_reason"] == "end_turn" and "choices" not in as_claude
    assert as_gpt["object"] == "chat.completion"
    assert as_gpt["choices"][0]["message"]["content"] == "from gpt"
    names = [line[7:] for line in events.decode().splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_delta" in names and "message_delta" in names
