"""Every refusal in the dialect the client speaks (docs/api.md), over real sockets: the official
``anthropic`` SDK raises the exception it raises against Anthropic's own API, with the Anthropic
error body; raw requests show the exact bodies and headers; an upstream dying mid-stream is an
``event: error`` without ``message_stop``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from gateway.auth.keys import sha256_hex
from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA, claude, sdk
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream, chunk, sse

NARROW_KEY = "narrow-key-0123456789abcdef0123"  # may use mock-model only
METERED_KEY = "metered-key-0123456789abcdef012"  # 2 requests a minute
FENCED_KEY = "fenced-key-0123456789abcdef0123"  # only from 10.0.0.0/8
EXPIRED_KEY = "expired-key-0123456789abcdef012"  # expired in 2001
SMALL_BODY = 4000

HELLO: Any = [{"role": "user", "content": "say:2"}]


@pytest.fixture
async def strict(gateway_factory: GatewayFactory, mock: tuple[int, Any]) -> Server:
    """A gateway with keys that are each refused for one reason, and a small body limit."""
    keys = [
        f"{{id: test, owner: tests, sha256: '{TEST_KEY_SHA}'}}",
        f"{{id: narrow, owner: tests, sha256: '{sha256_hex(NARROW_KEY)}', models: [mock-model]}}",
        f"{{id: metered, owner: tests, sha256: '{sha256_hex(METERED_KEY)}', rpm_limit: 2}}",
        f"{{id: fenced, owner: tests, sha256: '{sha256_hex(FENCED_KEY)}',"
        " ip_whitelist: [10.0.0.0/8]}",
        f"{{id: expired, owner: tests, sha256: '{sha256_hex(EXPIRED_KEY)}',"
        " expires_at: '2001-01-01T00:00:00Z'}",
    ]
    text = gateway_yaml(
        {"mock": f"http://127.0.0.1:{mock[0]}"},
        {"mock-model": {"upstreams": ["mock"]}, "mock-reasoner": {"upstreams": ["mock"]}},
        extra=f"keys: {{static: [{', '.join(keys)}]}}\n"
        "plans: {free: {max_keys: 5, monthly_tokens: null, rpm: null}}\n"
        f"network: {{max_body_bytes: {SMALL_BODY}}}\n"
        "auth: {max_failures_per_minute: 3}\n",
    )
    return await gateway_factory(text)


def anthropic_error(info: pytest.ExceptionInfo[anthropic.APIStatusError]) -> dict[str, Any]:
    body = info.value.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    error = body["error"]
    assert set(error) == {"type", "message"}, error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def raw(
    server: Server, body: Any, headers: dict[str, str] | None = None, path: str = "/v1/messages"
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}",
            json=body if not isinstance(body, bytes) else None,
            data=body if isinstance(body, bytes) else None,
            headers={"Content-Type": "application/json", **(AUTH if headers is None else headers)},
        ) as r,
    ):
        return r.status, dict(r.headers), await r.read()


# --- refusals through the SDK ---------------------------------------------------------------------


async def test_401_unknown_key(gateway: Server) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        await claude(gateway, api_key="sk-ant-not-a-key").messages.create(
            model="mock-model", max_tokens=10, messages=HELLO
        )
    error = anthropic_error(info)
    assert error["type"] == "authentication_error"
    assert "sk-ant-not-a-key" not in error["message"]
    with pytest.raises(anthropic.AuthenticationError):
        await claude(gateway, api_key="sk-ant-not-a-key").models.list()
    with pytest.raises(anthropic.AuthenticationError):
        await claude(gateway, api_key="sk-ant-not-a-key").messages.count_tokens(
            model="mock-model", messages=HELLO
        )


async def test_401_expired_key(strict: Server) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        await claude(strict, api_key=EXPIRED_KEY).messages.create(
            model="mock-model", max_tokens=10, messages=HELLO
        )
    assert anthropic_error(info)["type"] == "authentication_error"


async def test_429_too_many_failed_auths(strict: Server) -> None:
    """max_failures_per_minute is 3: a few 401s, then 429 before any key lookup."""
    client = claude(strict, api_key="sk-ant-wrong")
    refused = 0
    with pytest.raises(anthropic.RateLimitError) as info:
        for _ in range(10):
            try:
                await client.messages.create(model="mock-model", max_tokens=10, messages=HELLO)
            except anthropic.AuthenticationError:
                refused += 1
    assert 3 <= refused <= 4
    assert anthropic_error(info)["type"] == "rate_limit_error"
    assert int(info.value.response.headers["retry-after"]) >= 1


async def test_403_model_not_allowed(strict: Server) -> None:
    client = claude(strict, api_key=NARROW_KEY)
    allowed = await client.messages.create(model="mock-model", max_tokens=10, messages=HELLO)
    assert allowed.content
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        await client.messages.create(model="mock-reasoner", max_tokens=10, messages=HELLO)
    error = anthropic_error(info)
    assert error["type"] == "permission_error" and "mock-reasoner" in error["message"]
    listed = [m.id async for m in await client.models.list()]
    assert listed == ["mock-model"]


async def test_403_ip_not_allowed(strict: Server) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        await claude(strict, api_key=FENCED_KEY).messages.create(
            model="mock-model", max_tokens=10, messages=HELLO
        )
    assert anthropic_error(info)["type"] == "permission_error"


async def test_404_unknown_model(gateway: Server) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        await claude(gateway).messages.create(
            model="claude-nonexistent", max_tokens=10, messages=HELLO
        )
    error = anthropic_error(info)
    assert error["type"] == "not_found_error" and "claude-nonexistent" in error["message"]
    with pytest.raises(anthropic.NotFoundError):
        async with claude(gateway).messages.stream(
            model="claude-nonexistent", max_tokens=10, messages=HELLO
        ) as stream:
            await stream.get_final_message()


async def test_400_bad_body(gateway: Server) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude(gateway).messages.create(model="mock-model", max_tokens=10, messages=[])
    error = anthropic_error(info)
    assert error["type"] == "invalid_request_error" and error["message"].startswith("messages:")
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude(gateway).messages.create(model="mock-model", max_tokens=0, messages=HELLO)
    assert anthropic_error(info)["message"].startswith("max_tokens:")


async def test_413_body_over_limit(strict: Server) -> None:
    huge: Any = [{"role": "user", "content": "x" * (SMALL_BODY * 2)}]
    with pytest.raises(anthropic.APIStatusError) as info:
        await claude(strict).messages.create(model="mock-model", max_tokens=10, messages=huge)
    assert info.value.status_code == 413
    assert anthropic_error(info)["type"] == "request_too_large"
    # the same on the shared route, where the header says Anthropic
    status, _, body = await raw(
        strict,
        {"model": "mock-model", "max_tokens": 10, "messages": huge},
        {**AUTH, "anthropic-version": "2023-06-01"},
        path="/api/chat/completions",
    )
    assert status == 413 and b'"type":"request_too_large"' in body and b'"code"' not in body


async def test_429_rpm_with_retry_after_and_anthropic_rate_headers(strict: Server) -> None:
    client = claude(strict, api_key=METERED_KEY)
    remaining = []
    for _ in range(2):
        answer = await client.messages.with_raw_response.create(
            model="mock-model", max_tokens=10, messages=HELLO
        )
        headers = answer.headers
        assert headers["anthropic-ratelimit-requests-limit"] == "2"
        assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert headers["x-ratelimit-limit-requests"] == "2"
        remaining.append(int(headers["anthropic-ratelimit-requests-remaining"]))
    assert remaining == [1, 0]
    with pytest.raises(anthropic.RateLimitError) as info:
        await client.messages.create(model="mock-model", max_tokens=10, messages=HELLO)
    assert anthropic_error(info)["type"] == "rate_limit_error"
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60


async def test_stream_head_carries_anthropic_rate_headers(strict: Server) -> None:
    async with claude(strict, api_key=METERED_KEY).messages.stream(
        model="mock-model", max_tokens=10, messages=HELLO
    ) as stream:
        headers = stream.response.headers
        await stream.get_final_message()
    assert headers["anthropic-ratelimit-requests-limit"] == "2"
    assert headers["anthropic-ratelimit-requests-remaining"] == "1"


@pytest.mark.parametrize("stream", [False, True])
async def test_502_upstream_failure_is_overloaded_error(gateway: Server, stream: bool) -> None:
    client = claude(gateway)
    request: dict[str, Any] = {
        "model": "mock-model",
        "max_tokens": 10,
        "messages": HELLO,
        "extra_headers": {"x-mock-status": "500"},
    }
    with pytest.raises(anthropic.InternalServerError) as info:
        if stream:
            async with client.messages.stream(**request) as s:
                await s.get_final_message()
        else:
            await client.messages.create(**request)
    assert info.value.status_code == 502
    assert anthropic_error(info)["type"] == "overloaded_error"


async def test_upstream_dying_mid_stream(gateway: Server) -> None:
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async with claude(gateway).messages.stream(
            model="mock-model",
            max_tokens=100,
            messages=[{"role": "user", "content": "say:20"}],
            extra_headers={"x-mock-die-after": "3"},
        ) as stream:
            async for text in stream.text_stream:
                texts.append(text)
    assert texts == ["tok0", " tok1", " tok2"]
    assert anthropic_error(info)["type"] == "overloaded_error"

    status, _, body = await raw(
        gateway,
        {"model": "mock-model", "max_tokens": 100, "stream": True, "messages": HELLO},
        {**AUTH, "x-mock-die-after": "1"},
    )
    assert status == 200
    events = body.decode().strip().split("\n\n")
    assert events[-1].startswith("event: error\n")
    assert '"type":"overloaded_error"' in events[-1]
    assert "message_stop" not in body.decode() and "[DONE]" not in body.decode()


# --- bad Anthropic input: a 400 in Anthropic form that says what is wrong -------------------------

BAD_INPUT: list[tuple[str, dict[str, Any], str]] = [
    (
        "openai developer role",
        {"messages": [{"role": "developer", "content": "Be brief."}, *HELLO]},
        "top-level 'system'",
    ),
    (
        "openai tool_calls",
        {
            "messages": [
                *HELLO,
                {
                    "role": "assistant",
                    "content": "x",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {}}],
                },
            ]
        },
        "tool_use blocks",
    ),
    (
        "openai tool message",
        {"messages": [*HELLO, {"role": "tool", "tool_call_id": "c1", "content": "18 C"}]},
        "tool_result blocks",
    ),
    (
        "openai function tool",
        {
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "messages": HELLO,
        },
        "input_schema",
    ),
    (
        "unknown content block type",
        {"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
        "unknown content block type 'video'",
    ),
    (
        "tool_result for an id never issued",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}],
                }
            ]
        },
        "'toolu_x' is not the id of a tool_use block",
    ),
    ("empty string content", {"messages": [{"role": "user", "content": ""}]}, "is empty"),
    ("empty block list", {"messages": [{"role": "user", "content": []}]}, "is empty"),
    ("missing max_tokens", {"max_tokens": None, "messages": HELLO}, "max_tokens: required"),
]


def _request(fields: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "mock-model", "max_tokens": 10} | fields
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("fields", "says"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
async def test_bad_anthropic_input(gateway: Server, fields: dict[str, Any], says: str) -> None:
    status, _, body = await raw(gateway, _request(fields))
    assert status == 400
    error = anthropic_error_of(body)
    assert error["type"] == "invalid_request_error"
    assert says in error["message"], error["message"]


def anthropic_error_of(raw_body: bytes) -> dict[str, Any]:
    body = orjson.loads(raw_body)
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return dict(body["error"])


async def test_bad_input_through_the_sdk_names_the_field(gateway: Server) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude(gateway).messages.create(
            model="mock-model",
            max_tokens=10,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_404", "content": "1"}
                    ],
                }
            ],
        )
    error = anthropic_error(info)
    assert error["message"].startswith("messages[0].content[0].tool_use_id:")


async def test_bad_json_on_the_messages_path(gateway: Server) -> None:
    status, _, body = await raw(gateway, b'{"model": "mock-model", "messages": [')
    assert status == 400
    assert "not valid JSON" in anthropic_error_of(body)["message"]


# --- the same refusals stay OpenAI-shaped for OpenAI clients -------------------------------------

OPENAI_REFUSALS: list[tuple[str, Callable[[Server], Awaitable[Any]], str]] = [
    (
        "401",
        lambda s: sdk(s, api_key="bad").chat.completions.create(model="mock-model", messages=HELLO),
        "invalid_api_key",
    ),
    (
        "404",
        lambda s: sdk(s).chat.completions.create(model="nope", messages=HELLO),
        "model_not_found",
    ),
]


@pytest.mark.parametrize(
    ("call", "code"), [c[1:] for c in OPENAI_REFUSALS], ids=[c[0] for c in OPENAI_REFUSALS]
)
async def test_openai_clients_keep_the_openai_form(
    gateway: Server, call: Callable[[Server], Awaitable[Any]], code: str
) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await call(gateway)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == code  # the SDK unwraps {"error": ...}


# --- how an Anthropic stream ends when the upstream misbehaves ------------------------------------

USAGE: Any = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
NO_CHOICES: Any = None  # tests.fakes.chunk: a chunk without choices


def event_names(body: bytes) -> list[str]:
    return [line[7:] for line in body.decode().splitlines() if line.startswith("event: ")]


async def scripted_stream(gateway: Server, fake: FakeUpstream, events: list[bytes]) -> bytes:
    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await sse(request, events)

    fake.script = script
    status, _, body = await raw(
        gateway, {"model": "fake-model", "max_tokens": 50, "stream": True, "messages": HELLO}
    )
    assert status == 200
    return body


async def test_upstream_error_chunk_ends_the_stream_once(
    gateway: Server, fake: FakeUpstream
) -> None:
    body = await scripted_stream(
        gateway,
        fake,
        [
            chunk({"role": "assistant", "content": "Hel"}),
            b'data: {"error": {"message": "CUDA out of memory", "type": "server_error"}}\n\n',
        ],  # and the upstream closes without [DONE]
    )
    names = event_names(body)
    assert names.count("error") == 1 and names[-1] == "error"
    assert "message_stop" not in names
    assert "CUDA out of memory" in body.decode().strip().split("\n\n")[-1]


async def test_upstream_event_that_is_not_json_is_an_error_event(
    gateway: Server, fake: FakeUpstream
) -> None:
    events = [chunk({"role": "assistant", "content": "Hel"}), b"data: {not json\n\n"]
    events += [chunk({"content": "lo"}), chunk({}, finish="stop"), b"data: [DONE]\n\n"]
    body = await scripted_stream(gateway, fake, events)
    names = event_names(body)
    assert names[-1] == "error" and names.count("error") == 1
    assert "message_stop" not in names and '"lo"' not in body.decode()


async def test_no_error_after_message_stop(gateway: Server, fake: FakeUpstream) -> None:
    """The answer was whole (finish and usage came); a missing [DONE] adds no error after it."""
    events = [chunk({"role": "assistant", "content": "Hi"}), chunk({}, finish="stop")]
    events.append(chunk(NO_CHOICES, usage=USAGE))  # and no [DONE]

    async def script(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await sse(request, events)

    fake.script = script
    async with claude(gateway).messages.stream(
        model="fake-model", max_tokens=50, messages=HELLO
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "Hi"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 2)
    body = await scripted_stream(gateway, fake, events)
    assert event_names(body)[-1] == "message_stop"


async def test_stream_without_upstream_usage_reports_the_estimate(gateway: Server) -> None:
    async with claude(gateway).messages.stream(
        model="mock-model",
        max_tokens=50,
        messages=[{"role": "user", "content": "say:5"}],
        extra_headers={"x-mock-no-usage": "1"},
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "tok0 tok1 tok2 tok3 tok4"
    assert final.usage.output_tokens == 5  # one per content chunk, as the gateway charges


# --- refusals answered before the handler knows the body ------------------------------------------


async def test_unknown_route_in_the_anthropic_dialect(gateway: Server) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        await claude(gateway).messages.batches.retrieve("msgbatch_1")
    assert anthropic_error(info)["type"] == "not_found_error"


async def test_missing_messages_is_400_before_unknown_model(gateway: Server) -> None:
    status, _, body = await raw(gateway, {"model": "claude-nonexistent", "max_tokens": 10})
    assert status == 400
    assert anthropic_error_of(body)["message"].startswith("messages:")
