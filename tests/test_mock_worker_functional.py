"""Functional tests of the bundled mock worker over loopback sockets.

Most go through the official ``openai`` SDK, the way a real client would; the exact SSE framing,
pacing and bad-input answers are checked with a raw aiohttp client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from gateway.mock_worker import MOCK_STATE, MockOptions, MockState, start

ROOT = Path(__file__).resolve().parent.parent
REPLY = "Hello! I am the mock worker. How can I help you today?"
REPLY_TOKENS = ["Hello!", " I", " am", " the", " mock", " worker.", " How", " can", " I",
                " help", " you", " today?"]  # fmt: skip
USER: list[Any] = [{"role": "user", "content": "hi there"}]  # 2 words + 3 = 5 prompt tokens
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a place.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["location"],
        },
    },
}
CLOCK: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
    },
}


@dataclass
class Served:
    port: int
    state: MockState
    client: openai.AsyncOpenAI

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts mock workers with the given ``MockOptions`` fields, each with an SDK client."""
    started: list[Served] = []
    runners: list[Any] = []

    async def factory(**options: Any) -> Served:
        runner, port = await start(MockOptions(**options))
        runners.append(runner)
        key = options.get("api_key") or "x"
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=10
        )
        started.append(Served(port, runner.app[MOCK_STATE], client))
        return started[-1]

    yield factory
    for served in started:
        await served.client.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def worker(serve: Serve) -> Served:
    return await serve()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Polls ``condition`` until it holds, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def collect(worker: Served, **kwargs: Any) -> list[Any]:
    """Every chunk of a streamed chat completion, through the SDK."""
    stream = await worker.client.chat.completions.create(stream=True, **kwargs)
    async with stream:
        return [chunk async for chunk in stream]


def contents(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def sse_events(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\n\n")
    events = raw[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") for e in events)
    return [e[len(b"data: ") :] for e in events]


# --- plain text ----------------------------------------------------------------------------------


async def test_health_and_models(serve: Serve, session: aiohttp.ClientSession) -> None:
    worker = await serve(models=("alpha", "beta"))
    async with session.get(f"{worker.url}/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
    models = await worker.client.models.list()
    assert [m.id for m in models.data] == ["alpha", "beta"]
    assert {(m.object, m.owned_by) for m in models.data} == {("model", "mock")}


async def test_non_streaming_text(worker: Served) -> None:
    answer = await worker.client.chat.completions.create(model="any-model", messages=USER)
    assert answer.id.startswith("chatcmpl-")
    assert answer.object == "chat.completion"
    assert answer.model == "any-model"
    assert answer.system_fingerprint == "mock"
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == REPLY
    assert choice.message.tool_calls == []
    assert choice.message.model_extra is not None
    assert choice.message.model_extra["reasoning_content"] is None
    assert choice.finish_reason == "stop"
    assert choice.model_extra == {"stop_reason": None}
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 12)
    assert answer.usage.total_tokens == 17
    headers, body = worker.state.requests[-1]
    assert headers["authorization"] == "Bearer x"
    assert body["model"] == "any-model" and body["messages"] == USER
    assert (worker.state.received, worker.state.open, worker.state.aborted) == (1, 0, 0)


async def test_streaming_text_with_usage(worker: Served) -> None:
    chunks = await collect(worker, model="m", messages=USER, stream_options={"include_usage": True})
    first, finish, last = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert contents(chunks) == REPLY_TOKENS
    assert finish.choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (5, 12)
    assert {c.id for c in chunks} == {first.id}
    assert {c.model for c in chunks} == {"m"}


async def test_streaming_without_include_usage_has_no_usage(worker: Served) -> None:
    chunks = await collect(worker, model="m", messages=USER)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert "".join(contents(chunks)) == REPLY


async def test_echo_and_say(worker: Served) -> None:
    echo: Any = [{"role": "user", "content": "echo: the quick  brown\nfox"}]
    answer = await worker.client.chat.completions.create(model="m", messages=echo)
    assert answer.choices[0].message.content == "the quick  brown\nfox"
    chunks = await collect(
        worker,
        model="m",
        messages=[{"role": "user", "content": [{"type": "text", "text": "say:5"}]}],
        stream_options={"include_usage": True},
    )
    assert contents(chunks) == ["tok0", " tok1", " tok2", " tok3", " tok4"]
    assert chunks[-1].usage.completion_tokens == 5


# --- max_tokens and stop -------------------------------------------------------------------------


async def test_max_tokens_cuts_with_length(worker: Served) -> None:
    answer = await worker.client.chat.completions.create(model="m", messages=USER, max_tokens=3)
    assert answer.choices[0].message.content == "Hello! I am"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    chunks = await collect(worker, model="m", messages=USER, max_completion_tokens=2)
    assert contents(chunks) == ["Hello!", " I"]
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_reply_that_fits_max_tokens_stops(worker: Served) -> None:
    messages: Any = [{"role": "user", "content": "say:4"}]
    answer = await worker.client.chat.completions.create(model="m", messages=messages, max_tokens=4)
    assert answer.choices[0].message.content == "tok0 tok1 tok2 tok3"
    assert answer.choices[0].finish_reason == "stop"


async def test_stop_sequence_sets_stop_reason(worker: Served) -> None:
    answer = await worker.client.chat.completions.create(
        model="m", messages=USER, stop=["help", "mock"]
    )
    choice = answer.choices[0]
    assert choice.message.content == "Hello! I am the "
    assert choice.finish_reason == "stop"
    assert choice.model_extra == {"stop_reason": "mock"}
    chunks = await collect(worker, model="m", messages=USER, stop="How")
    assert "".join(contents(chunks)) == "Hello! I am the mock worker. "
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].model_extra == {"stop_reason": "How"}


# --- tools ---------------------------------------------------------------------------------------


async def test_tool_call_and_round_trip(worker: Served) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Athens?"}]
    answer = await worker.client.chat.completions.create(
        model="m", messages=messages, tools=[WEATHER]
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    expected = {"location": "Athens, Greece", "unit": "celsius", "days": 1}
    assert json.loads(call.function.arguments) == expected
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 30C"})
    follow = await worker.client.chat.completions.create(
        model="m", messages=messages, tools=[WEATHER]
    )
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content == "The tool said: sunny, 30C"


def reassemble(chunks: list[Any]) -> tuple[list[int], dict[int, dict[str, Any]]]:
    """The order of tool-call indexes as streamed, and each call put back together."""
    order: list[int] = []
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for part in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            order.append(part.index)
            if part.index not in calls:
                assert part.id and part.type == "function" and part.function.name
                assert part.function.arguments == ""
                calls[part.index] = {"id": part.id, "name": part.function.name, "pieces": []}
            else:
                assert part.id is None and part.function.name is None
                calls[part.index]["pieces"].append(part.function.arguments)
    return order, calls


@pytest.mark.parametrize(
    ("text", "tools", "names"),
    [
        ("weather in Paris?", [WEATHER, CLOCK], ["get_weather"]),
        ("use the tools in parallel", [WEATHER, CLOCK], ["get_weather", "get_time"]),
        ("weather, in parallel", [WEATHER], ["get_weather", "get_weather"]),
    ],
)
async def test_tool_calls_streamed_and_reassembled(
    worker: Served, text: str, tools: list[Any], names: list[str]
) -> None:
    messages = [{"role": "user", "content": text}]
    chunks = await collect(worker, model="m", messages=messages, tools=tools)
    order, calls = reassemble(chunks)
    assert order == sorted(order)  # call 0 is finished before call 1 starts, as vLLM does
    assert [calls[i]["name"] for i in sorted(calls)] == names
    assert len({c["id"] for c in calls.values()}) == len(names)
    arguments = [json.loads("".join(calls[i]["pieces"])) for i in sorted(calls)]
    assert all(3 <= len(c["pieces"]) <= 4 for c in calls.values())
    assert len({json.dumps(a, sort_keys=True) for a in arguments}) == len(names)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert contents(chunks) == []


async def test_tool_choice(worker: Served) -> None:
    weather: Any = [{"role": "user", "content": "weather?"}]
    create = worker.client.chat.completions.create
    none = await create(model="m", messages=weather, tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.content == REPLY
    required = await create(model="m", messages=USER, tools=[WEATHER], tool_choice="required")
    assert required.choices[0].finish_reason == "tool_calls"
    named_choice: Any = {"type": "function", "function": {"name": "get_time"}}
    named = await create(
        model="m", messages=weather, tools=[WEATHER, CLOCK], tool_choice=named_choice
    )
    calls: list[Any] = named.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"]
    missing: Any = {"type": "function", "function": {"name": "nope"}}
    with pytest.raises(openai.BadRequestError):
        await create(model="m", messages=weather, tools=[WEATHER], tool_choice=missing)


# --- reasoning -----------------------------------------------------------------------------------


async def test_reasoning_model(worker: Served) -> None:
    answer = await worker.client.chat.completions.create(model="mock-reasoner", messages=USER)
    message = answer.choices[0].message
    assert message.model_extra is not None
    assert message.model_extra["reasoning_content"] == "Let me think."
    assert message.content == REPLY
    assert answer.usage is not None and answer.usage.completion_tokens == 15
    chunks = await collect(worker, model="mock-reasoner", messages=USER)
    kinds = []
    for chunk in chunks[1:-1]:
        extra = chunk.choices[0].delta.model_extra or {}
        kinds.append("r" if extra.get("reasoning_content") else "c")
    assert kinds == ["r"] * 3 + ["c"] * len(REPLY_TOKENS)
    assert contents(chunks) == REPLY_TOKENS


# --- fault injection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
        (429, openai.RateLimitError),
        (400, openai.BadRequestError),
    ],
)
async def test_status_injection(worker: Served, status: int, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        await worker.client.chat.completions.create(
            model="m", messages=USER, extra_headers={"x-mock-status": str(status)}
        )
    assert isinstance(raised.value, openai.APIStatusError)
    assert raised.value.status_code == status
    assert "x-mock-status" in raised.value.message
    assert worker.state.received == 1


async def test_die_after_cuts_the_stream(worker: Served) -> None:
    seen: list[Any] = []
    stream = await worker.client.chat.completions.create(
        model="m", messages=USER, stream=True, extra_headers={"x-mock-die-after": "3"}
    )
    with pytest.raises(openai.APIConnectionError):
        async with stream:
            async for chunk in stream:
                seen.append(chunk)
    assert contents(seen) == REPLY_TOKENS[:3]
    assert all(c.choices[0].finish_reason is None for c in seen)
    with pytest.raises(openai.APIConnectionError):
        await worker.client.chat.completions.create(
            model="m", messages=USER, extra_headers={"x-mock-die-after": "0"}
        )
    await eventually(lambda: worker.state.open == 0)
    assert (worker.state.killed, worker.state.aborted) == (2, 0)


async def test_die_after_leaves_the_chunked_body_unterminated(
    worker: Served, session: aiohttp.ClientSession
) -> None:
    body = {"model": "m", "messages": USER, "stream": True}
    headers = {"x-mock-die-after": "2"}
    async with session.post(
        f"{worker.url}/v1/chat/completions", json=body, headers=headers
    ) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_delay_trips_a_first_byte_timeout_and_counts_the_abort(worker: Served) -> None:
    slow = worker.client.with_options(timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        await slow.chat.completions.create(
            model="m", messages=USER, extra_headers={"x-mock-delay": "2"}
        )
    await eventually(lambda: worker.state.aborted == 1 and worker.state.open == 0)
    assert worker.state.peak_open == 1


async def test_no_usage_header(worker: Served) -> None:
    quiet = {"x-mock-no-usage": "1"}
    answer = await worker.client.chat.completions.create(
        model="m", messages=USER, extra_headers=quiet
    )
    assert answer.usage is None
    chunks = await collect(
        worker,
        model="m",
        messages=USER,
        stream_options={"include_usage": True},
        extra_headers=quiet,
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


async def test_token_delay_paces_chunks(worker: Served, session: aiohttp.ClientSession) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "say:3"}], "stream": True}
    headers = {"x-mock-token-delay": "0.25"}
    arrivals: list[float] = []
    async with session.post(
        f"{worker.url}/v1/chat/completions", json=body, headers=headers
    ) as resp:
        async for line in resp.content:
            if b'"content":" tok' in line or b'"content":"tok' in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 3
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.2 for gap in gaps), gaps  # each chunk was flushed as it was produced


async def test_client_disconnect_counts_as_aborted(
    worker: Served, session: aiohttp.ClientSession
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "say:1000"}], "stream": True}
    headers = {"x-mock-token-delay": "0.05"}
    async with session.post(
        f"{worker.url}/v1/chat/completions", json=body, headers=headers
    ) as resp:
        await resp.content.readuntil(b"\n\n")
        await resp.content.readuntil(b"\n\n")
        assert worker.state.open == 1
        resp.close()
    await eventually(lambda: worker.state.aborted == 1 and worker.state.open == 0)
    assert worker.state.killed == 0


# --- auth and bad input --------------------------------------------------------------------------


async def test_api_key_is_enforced(serve: Serve, session: aiohttp.ClientSession) -> None:
    worker = await serve(api_key="sekrit")
    wrong = worker.client.with_options(api_key="nope")
    with pytest.raises(openai.AuthenticationError) as raised:
        await wrong.chat.completions.create(model="m", messages=USER)
    assert raised.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await wrong.models.list()
    answer = await worker.client.chat.completions.create(model="m", messages=USER)
    assert answer.choices[0].message.content == REPLY
    async with session.get(f"{worker.url}/health") as resp:
        assert resp.status == 200
    assert worker.state.received == 1


@pytest.mark.parametrize(
    ("raw", "headers"),
    [
        (b'{"model": "m", "messages": [', {}),
        (b'{"model": "m"}', {}),
        (b'["not", "an", "object"]', {}),
        (b'{"model": "m", "messages": "hi"}', {}),
        (b'{"model": "m", "messages": []}', {}),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', {}),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', {"x-mock-delay": "-1"}),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', {"x-mock-status": "7"}),
    ],
)
async def test_bad_input_is_an_openai_400(
    worker: Served, session: aiohttp.ClientSession, raw: bytes, headers: dict[str, str]
) -> None:
    headers = {"Content-Type": "application/json", **headers}
    async with session.post(f"{worker.url}/v1/chat/completions", data=raw, headers=headers) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/json"
        error = (await resp.json())["error"]
    assert isinstance(error.pop("message"), str)
    assert error == {"type": "invalid_request_error", "param": None, "code": None}


# --- exact SSE framing ---------------------------------------------------------------------------


async def test_sse_framing_with_usage(worker: Served, session: aiohttp.ClientSession) -> None:
    body = {
        "model": "m",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with session.post(f"{worker.url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        raw = await resp.read()
    events = sse_events(raw)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    first, finish, final = chunks[0], chunks[-2], chunks[-1]
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
         "finish_reason": None}
    ]  # fmt: skip
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert [c["choices"][0]["delta"] for c in chunks[1:-2]] == [
        {"content": t} for t in REPLY_TOKENS
    ]
    assert finish["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop", "stop_reason": None}
    ]
    assert final["choices"] == []
    assert final["usage"] == {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {
        (first["id"], first["created"], "m")
    }


async def test_sse_framing_without_usage(worker: Served, session: aiohttp.ClientSession) -> None:
    body = {"model": "m", "messages": USER, "stream": True}
    async with session.post(f"{worker.url}/v1/chat/completions", json=body) as resp:
        events = sse_events(await resp.read())
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert len(chunks) == 1 + len(REPLY_TOKENS) + 1
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_sse_tool_call_fragments(worker: Served, session: aiohttp.ClientSession) -> None:
    messages = [{"role": "user", "content": "weather in parallel"}]
    body = {"model": "m", "messages": messages, "stream": True, "tools": [WEATHER, CLOCK]}
    async with session.post(f"{worker.url}/v1/chat/completions", json=body) as resp:
        events = sse_events(await resp.read())
    deltas = [orjson.loads(e)["choices"][0]["delta"] for e in events[1:-2]]
    opened = [d["tool_calls"][0] for d in deltas if "id" in d["tool_calls"][0]]
    assert opened[0] == {
        "index": 0,
        "id": opened[0]["id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert [o["index"] for o in opened] == [0, 1]
    fragment = deltas[1]["tool_calls"][0]
    assert set(fragment) == {"index", "function"} and set(fragment["function"]) == {"arguments"}


# --- state ---------------------------------------------------------------------------------------


def test_state_keeps_about_the_last_requests() -> None:
    state = MockState(keep=10)
    for n in range(25):
        state.record({"n": str(n)}, {"n": n})
    assert state.received == 25
    assert 10 <= len(state.requests) <= 11
    assert state.requests[-1] == ({"n": "24"}, {"n": 24})
    assert [body["n"] for _, body in state.requests] == list(range(25 - len(state.requests), 25))


# --- lifecycle -----------------------------------------------------------------------------------


async def test_cleanup_cuts_live_streams_quickly_without_counting_aborts(
    session: aiohttp.ClientSession,
) -> None:
    runner, port = await start(MockOptions(token_delay=0.05))
    state = runner.app[MOCK_STATE]
    body = {"model": "m", "messages": [{"role": "user", "content": "say:1000"}], "stream": True}
    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as resp:
        await resp.content.readuntil(b"\n\n")
        began = time.monotonic()
        await runner.cleanup()
        assert time.monotonic() - began < 5
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert (state.open, state.aborted, state.killed) == (0, 0, 0)


async def test_run_serves_until_sigterm(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = f"from gateway.mock_worker import *; run('127.0.0.1', {port}, MockOptions())"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.returncode is None and time.monotonic() < deadline
            try:
                async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                    assert await resp.json() == {"status": "ok"}
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
