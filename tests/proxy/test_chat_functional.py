"""The chat path over real sockets: the official openai SDK through the gateway to the bundled
mock worker and to an independent fake upstream; what reaches the upstream; streaming."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH, KEYS_YAML, TEST_KEY, sdk
from tests.fakes import FakeUpstream, chunk, sse

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


async def test_async_sdk_non_streaming(gateway: Server) -> None:
    answer = await sdk(gateway).chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "echo: hi there"}]
    )
    assert answer.choices[0].message.content == "hi there"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 2


async def test_sync_sdk_streaming_and_not(gateway: Server) -> None:
    def call() -> tuple[str, str]:
        with openai.OpenAI(
            base_url=f"http://127.0.0.1:{gateway.port}/v1", api_key=TEST_KEY, max_retries=0
        ) as client:
            return ask(client)

    def ask(client: openai.OpenAI) -> tuple[str, str]:
        whole = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "say:5"}]
        )
        parts = [
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "say:5"}], stream=True
            )
            if c.choices
        ]
        return whole.choices[0].message.content or "", "".join(parts)

    whole, streamed = await asyncio.to_thread(call)
    assert whole == streamed == "tok0 tok1 tok2 tok3 tok4"


async def test_stream_usage_only_when_asked(gateway: Server) -> None:
    client = sdk(gateway)
    messages = [{"role": "user", "content": "say:3"}]
    plain = [
        c
        async for c in await client.chat.completions.create(
            model="mock-model", messages=messages, stream=True
        )
    ]
    assert all(c.choices for c in plain), "the usage-only chunk reached a client that did not ask"
    asked = [
        c
        async for c in await client.chat.completions.create(
            model="mock-model",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    ]
    assert not asked[-1].choices
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 3


async def test_streamed_parallel_tool_calls_reassemble(gateway: Server) -> None:
    stream = await sdk(gateway).chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": "weather in two cities, parallel please"}],
        tools=[WEATHER, {**WEATHER, "function": {**WEATHER["function"], "name": "get_time"}}],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for c in stream:
        if not c.choices:
            continue
        finish = c.choices[0].finish_reason or finish
        for tc in c.choices[0].delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
            slot["id"] += tc.id or ""
            slot["name"] += (tc.function.name or "") if tc.function else ""
            slot["args"] += (tc.function.arguments or "") if tc.function else ""
    assert finish == "tool_calls"
    assert len(calls) == 2
    for slot in calls.values():
        assert slot["id"] and slot["name"]
        assert "location" in orjson.loads(slot["args"])


async def test_non_streamed_tools_and_reasoning_extras(gateway: Server) -> None:
    client = sdk(gateway)
    answer = await client.chat.completions.create(
        model="mock-model",
        messages=[{"role": "user", "content": "what is the weather in Oslo?"}],
        tools=[WEATHER],
        tool_choice="required",
    )
    call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    reasoned = await client.chat.completions.create(
        model="mock-reasoner", messages=[{"role": "user", "content": "think"}]
    )
    extra = reasoned.choices[0].message.model_extra or {}
    assert extra.get("reasoning_content")


async def test_what_reaches_the_upstream(gateway: Server, fake: FakeUpstream) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{gateway.port}/api/chat/completions",
            json={
                "model": "fake-model",
                "messages": [{"role": "user", "content": "hi"}],
                "region": "oslo",
                "agent_id": "a-1",
                "vendor_x": {"k": 1},
            },
            headers={
                "Authorization": f"Bearer {TEST_KEY}",
                "X-API-Key": TEST_KEY,
                "Cookie": "session=s3cret",
                "X-Request-ID": "trace-123",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "drop me",
                "X-Custom": "keep me",
                "Keep-Alive": "timeout=5",
                "Proxy-Authorization": "Basic eA==",
            },
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["X-Request-ID"] == "trace-123"
        assert (await response.json())["choices"][0]["message"]["content"] == "fake answer"
    seen = fake.seen[-1]
    headers = {k.lower(): v for k, v in seen.headers.items()}
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "org/fake-13b"
    assert seen.body["region"] == "oslo" and seen.body["agent_id"] == "a-1"
    assert seen.body["vendor_x"] == {"k": 1}
    assert "stream_options" not in seen.body
    for secret in (
        "authorization",
        "x-api-key",
        "cookie",
        "x-hop",
        "keep-alive",
        "proxy-authorization",
    ):
        assert secret not in headers, secret
    assert headers["x-request-id"] == "trace-123"
    assert headers["x-custom"] == "keep me"
    assert TEST_KEY not in str(seen.headers)


async def test_upstream_api_key_is_injected(gateway_factory: Any, fake: FakeUpstream) -> None:
    server = await gateway_factory(
        "listen: {host: 127.0.0.1, port: 0}\nadmin: {host: 127.0.0.1, port: 0}\n"
        f"upstreams: {{f: {{url: '{fake.url}/v1', api_key: worker-key}}}}\n"
        "models: {m: {upstreams: [f]}}\n" + KEYS_YAML
    )
    await sdk(server).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert fake.seen[-1].headers["Authorization"] == "Bearer worker-key"
    assert fake.seen[-1].path == "/v1/chat/completions"


async def test_request_ids_are_made_when_missing_or_insane(gateway: Server) -> None:
    async with aiohttp.ClientSession() as http:
        ids = []
        for offered in (None, "bad id with spaces", "x" * 300):
            headers = {"X-Request-ID": offered, **AUTH} if offered else AUTH
            async with http.get(f"http://127.0.0.1:{gateway.port}/v1/models", headers=headers) as r:
                ids.append(r.headers["X-Request-ID"])
        assert len(set(ids)) == 3
        assert all(i.startswith("req_") for i in ids)


async def test_stream_passes_each_event_as_it_arrives(gateway: Server, fake: FakeUpstream) -> None:
    gate = asyncio.Event()

    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await sse(
            request,
            [
                chunk({"role": "assistant", "content": ""}),
                chunk({"content": "first"}),
                chunk({}, finish="stop"),
                chunk(None, usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
                b"data: [DONE]\n\n",
            ],
            gate=gate,
        )

    fake.script = script
    stream = await sdk(gateway).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "x"}], stream=True
    )
    first = await asyncio.wait_for(stream.__anext__(), 5)
    # The upstream is held after its first event: the client has it anyway.
    assert first.choices[0].delta.role == "assistant"
    gate.set()
    rest = [c async for c in stream]
    assert [c.choices[0].delta.content for c in rest if c.choices] == ["first", None]
    assert fake.seen[-1].body["stream_options"] == {"include_usage": True}


async def test_stream_head_is_not_held_for_a_whole_first_event(
    gateway: Server, fake: FakeUpstream
) -> None:
    """The head goes out with the first events; when the first piece from the upstream holds
    no whole event, it goes out alone at once, not when the upstream sends more."""
    gate = asyncio.Event()
    first = chunk({"role": "assistant", "content": "hi"})

    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        events = [first[:20], first[20:], b"data: [DONE]\n\n"]
        return await sse(request, events, gate=gate)

    fake.script = script
    async with aiohttp.ClientSession() as http:
        answer = http.post(
            f"http://127.0.0.1:{gateway.port}/v1/chat/completions",
            json={"model": "fake-model", "messages": [{"role": "user", "content": "x"}]}
            | {"stream": True},
            headers=AUTH,
        )
        async with await asyncio.wait_for(answer, 5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            gate.set()
            raw = await response.read()
    assert raw == first + b"data: [DONE]\n\n"


async def test_long_stream_outlives_every_timeout(gateway: Server, fake: FakeUpstream) -> None:
    """first_byte and idle are 5 s in the fixture; the stream runs past 6 s in total."""

    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        events = [chunk({"content": f"t{i} "}) for i in range(16)]
        return await sse(request, [*events, chunk({}, finish="stop"), b"data: [DONE]\n\n"], gap=0.4)

    fake.script = script
    stream = await sdk(gateway).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "x"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "".join(f"t{i} " for i in range(16))


async def raw_stream(
    server: Server, model: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": "say:40"}],
                "stream": True,
            },
            headers={**AUTH, **(headers or {})},
        ) as response,
    ):
        return response.status, await response.read()


async def test_upstream_dying_mid_stream_gives_an_error_event(gateway: Server) -> None:
    status, raw = await raw_stream(gateway, "mock-model", {"x-mock-die-after": "3"})
    assert status == 200
    assert b"[DONE]" not in raw
    last = raw.strip().split(b"\n\n")[-1]
    assert last.startswith(b"data: ")
    error = orjson.loads(last[6:])["error"]
    assert error["code"] == "upstream_unavailable"
    assert "mock" in error["message"]


async def test_client_leaving_closes_the_upstream_within_a_second(
    gateway: Server, fake: FakeUpstream
) -> None:
    never = asyncio.Event()

    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await sse(request, [chunk({"content": "a"}), chunk({"content": "b"})], gate=never)

    fake.script = script
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"http://127.0.0.1:{gateway.port}/v1/chat/completions",
            json={
                "model": "fake-model",
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
            },
            headers=AUTH,
        )
        assert b"data:" in await response.content.readany()
        response.close()
        left = asyncio.get_running_loop().time()
    await asyncio.wait_for(fake.closed.wait(), 1.0)
    assert asyncio.get_running_loop().time() - left < 1.0


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_5xx_before_first_byte_is_502(gateway: Server, stream: bool) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{gateway.port}/v1/chat/completions",
            json={
                "model": "mock-model",
                "messages": [{"role": "user", "content": "x"}],
                "stream": stream,
            },
            headers={"x-mock-status": "500", **AUTH},
        ) as response,
    ):
        assert response.status == 502
        body = await response.json()
    assert body["error"]["code"] == "upstream_unavailable"
    assert body["error"]["type"] == "server_error"


async def test_upstream_4xx_passes_through_with_its_message(gateway: Server) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk(gateway).chat.completions.create(
            model="mock-model",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": "400"},
        )
    assert info.value.status_code == 400


async def test_silent_upstream_is_504(gateway_factory: Any, fake: FakeUpstream) -> None:
    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError

    fake.script = script
    server = await gateway_factory(
        "listen: {host: 127.0.0.1, port: 0}\nadmin: {host: 127.0.0.1, port: 0}\n"
        f"upstreams: {{f: {{url: '{fake.url}', timeouts: {{first_byte: 0.3}}}}}}\n"
        "models: {m: {upstreams: [f]}}\n" + KEYS_YAML
    )
    with pytest.raises(openai.APIStatusError) as info:
        await sdk(server).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 504
    assert info.value.body["code"] == "upstream_timeout"  # type: ignore[index]


async def test_refused_connection_is_502(gateway_factory: Any) -> None:
    server = await gateway_factory(
        "listen: {host: 127.0.0.1, port: 0}\nadmin: {host: 127.0.0.1, port: 0}\n"
        "upstreams: {f: {url: 'http://127.0.0.1:9'}}\nmodels: {m: {upstreams: [f]}}\n" + KEYS_YAML
    )
    with pytest.raises(openai.APIStatusError) as info:
        await sdk(server).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 502
    assert "refused" in info.value.message


async def test_models_list(gateway: Server) -> None:
    listed = await sdk(gateway).models.list()
    ids = [m.id for m in listed.data]
    assert ids == ["mock-model", "gpt-4o-mini", "mock-reasoner", "fake-model"]  # aliases too
    assert all(m.object == "model" and m.owned_by == "gateway" for m in listed.data)
    async with aiohttp.ClientSession() as http:
        for path in ("/models", "/v1/llm/models", "/api/chat/models", "/api/models"):
            async with http.get(f"http://127.0.0.1:{gateway.port}{path}", headers=AUTH) as r:
                assert (await r.json())["data"][0]["id"] == "mock-model", path


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/llm/chat",
        "/v1/llm/chat/completions",
        "/api/chat/completions",
    ],
)
async def test_every_chat_alias(gateway: Server, path: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{gateway.port}{path}",
            json={"model": "mock-model", "messages": [{"role": "user", "content": "echo: ok"}]},
            headers=AUTH,
        ) as r,
    ):
        assert r.status == 200
        assert (await r.json())["choices"][0]["message"]["content"] == "ok"


async def test_a_client_that_leaves_is_a_499_not_a_500(gateway: Server, fake: FakeUpstream) -> None:
    """In the metrics (and the access line, from the same status): a client hanging up is not
    the gateway failing, and 5xx alerts must not fire on it."""
    never = asyncio.Event()

    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        await never.wait()
        return web.json_response({})

    fake.script = script
    async with aiohttp.ClientSession() as http:
        with contextlib.suppress(TimeoutError):
            await http.post(
                f"http://127.0.0.1:{gateway.port}/v1/chat/completions",
                json={"model": "fake-model", "messages": [{"role": "user", "content": "x"}]},
                headers=AUTH,
                timeout=aiohttp.ClientTimeout(total=0.3),
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            async with http.get(f"http://127.0.0.1:{gateway.admin_port}/metrics") as r:
                text = await r.text()
            if 'status="499"' in text:
                break
            assert loop.time() < deadline, "no request counted with status 499"
            await asyncio.sleep(0.02)
    assert 'status="500"' not in text
