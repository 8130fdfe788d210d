"""Hostile JSON bodies against a real gateway over a real socket, in both dialects: nesting at
every depth the parser takes (and past it) in every position the gateway forwards, sizes, wrong
types at every field the gateway reads, unicode and numbers at the edges of JSON. The upstream is
healthy, so every answer is < 500, and every refusal is the gateway's JSON error in the request's
dialect (docs/api.md). Also the regression test of issue 14 item 6 (nesting 255-1,024 deep was 500).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dialects import MAX_DEPTH, anthropic, within_depth
from gateway.dialects.openai import OpenAIRelay
from gateway.errors import BadRequest
from gateway.proxy.bodies import dump_upstream
from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream, chunk, completion, sse

MAX_BODY = 262_144
CHAT, MESSAGES, COUNT = "/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"
HOLE = b'"__HOLE__"'  # where a template takes the hostile bytes
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def healthy(request: web.Request, body: Any) -> web.StreamResponse:
    """A healthy upstream: a stream when one is asked for, else a whole answer."""
    if isinstance(body, dict) and body.get("stream") is True:
        usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        events = [chunk({"role": "assistant", "content": "ok"}), chunk({}, "stop")]
        return await sse(request, [*events, chunk(None, usage=usage), b"data: [DONE]\n\n"])
    return web.json_response(completion("ok"))


@pytest.fixture
async def edge(
    gateway_factory: GatewayFactory, fake: FakeUpstream, mock: tuple[int, Any]
) -> Server:
    """A gateway with a small body limit before the fake (healthy) upstream and the mock."""
    fake.script = healthy
    server: Server = await gateway_factory(
        gateway_yaml(
            {"fake": fake.url, "mock": f"http://127.0.0.1:{mock[0]}"},
            extra=f"network: {{max_body_bytes: {MAX_BODY}}}\n",
        )
    )
    return server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def send(
    http: aiohttp.ClientSession,
    server: Server,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """POST ``body`` as it is; the status and the whole answer (a stream read to its end)."""
    async with http.post(
        f"http://127.0.0.1:{server.port}{path}",
        data=body,
        headers={"Content-Type": "application/json", **AUTH, **(headers or {})},
        timeout=aiohttp.ClientTimeout(total=20),
    ) as response:
        return response.status, await response.read()


def speaks_anthropic(path: str, headers: dict[str, str] | None, body: bytes) -> bool:
    """The dialect docs/api.md gives the request (an unparseable body tells nothing); count_tokens
    is Anthropic's alone."""
    if path.endswith("/count_tokens"):
        return True
    try:
        parsed: object = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    return anthropic.is_anthropic(path, "anthropic-version" in (headers or {}), parsed)


def check_answer(
    status: int, answer: bytes, path: str, body: bytes, headers: dict[str, str] | None = None
) -> None:
    """Never a 5xx (the upstream is healthy); a refusal is the gateway's error, in the request's
    dialect (its two error shapes)."""
    assert status < 500, (status, answer[:300], body[:300])
    if status < 400:
        return
    error = orjson.loads(answer)
    if speaks_anthropic(path, headers, body):
        assert set(error) == {"type", "error"} and error["type"] == "error", error
        assert set(error["error"]) == {"type", "message"}, error
    else:
        assert set(error) == {"error"}, error
        assert set(error["error"]) == {"message", "type", "param", "code"}, error
        assert isinstance(error["error"]["code"], str)
    message = error["error"]["message"]
    assert isinstance(message, str) and message
    assert len(message) < 4096, f"the error echoes {len(message)} characters"


# --- bodies --------------------------------------------------------------------------------------

OPENAI_BASE: dict[str, Any] = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "hi"}],
}
ANTHROPIC_BASE: dict[str, Any] = {**OPENAI_BASE, "max_tokens": 16}
TOOL_TURNS: list[Any] = [
    {"role": "user", "content": "call f"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
]


def template(base: dict[str, Any], **fields: Any) -> bytes:
    return orjson.dumps({**base, **fields})


# Where a nested value goes: (name, path, template, how many levels the hole sits below the top,
# how many levels more it sits in the upstream's body, whether the gateway forwards it whole).
POSITIONS: list[tuple[str, str, bytes, int, int, bool]] = [
    ("openai extra field", CHAT, template(OPENAI_BASE, extra="__HOLE__"), 1, 0, True),
    (
        "openai message content",
        CHAT,
        template(OPENAI_BASE, messages=[{"role": "user", "content": "__HOLE__"}]),
        3,
        0,
        True,
    ),
    (
        "openai tool parameters",
        CHAT,
        template(
            OPENAI_BASE,
            tools=[{"type": "function", "function": {"name": "f", "parameters": "__HOLE__"}}],
        ),
        4,
        0,
        True,
    ),
    ("anthropic extra field", MESSAGES, template(ANTHROPIC_BASE, extra="__HOLE__"), 1, 0, True),
    (
        "anthropic input_schema",
        MESSAGES,
        template(ANTHROPIC_BASE, tools=[{"name": "f", "input_schema": "__HOLE__"}]),
        3,
        1,
        True,
    ),
    (
        "anthropic tool_use input",
        MESSAGES,
        template(ANTHROPIC_BASE, messages=TOOL_TURNS).replace(b'"input":{}', b'"input":' + HOLE),
        5,
        0,
        False,
    ),
    (
        "anthropic message content",
        MESSAGES,
        template(ANTHROPIC_BASE, messages=[{"role": "user", "content": "__HOLE__"}]),
        3,
        0,
        False,
    ),
    (
        "anthropic block type",
        MESSAGES,
        template(ANTHROPIC_BASE, messages=[{"role": "user", "content": [{"type": "__HOLE__"}]}]),
        5,
        0,
        False,
    ),
    (
        "anthropic role",
        MESSAGES,
        template(ANTHROPIC_BASE, messages=[{"role": "__HOLE__", "content": "hi"}]),
        3,
        0,
        False,
    ),
    (
        "anthropic max_tokens",
        MESSAGES,
        template(ANTHROPIC_BASE, max_tokens="__HOLE__"),
        1,
        0,
        False,
    ),
    (
        "anthropic tool type",
        MESSAGES,
        template(ANTHROPIC_BASE, tools=[{"type": "__HOLE__", "name": "f", "input_schema": {}}]),
        3,
        0,
        False,
    ),
    ("count_tokens model", COUNT, template(ANTHROPIC_BASE, model="__HOLE__"), 1, 0, False),
    ("count_tokens messages", COUNT, template(ANTHROPIC_BASE, messages="__HOLE__"), 1, 0, False),
]


def nested(levels: int, objects: bool = True) -> bytes:
    """A value ``levels`` deep (1: ``{"a":1}`` or ``[1]``), objects outside and arrays inside."""
    outer = max(1, levels // 2) if objects else 0
    inner = levels - outer
    return b'{"a":' * outer + b"[" * inner + b"1" + b"]" * inner + b"}" * outer


def fill(body: bytes, value: bytes) -> bytes:
    assert body.count(HOLE) == 1
    return body.replace(HOLE, value)


DEPTHS = [1, 100, 200, 250, 252, 253, 254, 255, 256, 300, 500, 1000, 1020, 1024, 1025, 1100]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("position", POSITIONS, ids=[p[0] for p in POSITIONS])
async def test_nesting_at_every_depth_is_never_a_500(
    edge: Server,
    http: aiohttp.ClientSession,
    position: tuple[str, str, bytes, int, int, bool],
    depth: int,
) -> None:
    """Issue 14 item 6: a body nested ``depth`` levels (counted from its top: the body itself is
    level 1) is served if the upstream's copy can be written (at most 254 levels), refused with
    a 400 saying so if the parser took it, and with a 400 "not valid JSON" past 1,024 levels."""
    _, path, body, above, more, whole = position
    raw = fill(body, nested(max(1, depth - above)))
    levels = above + max(1, depth - above)
    status, answer = await send(http, edge, path, raw)
    check_answer(status, answer, path, raw)
    if not whole:
        return
    if levels > 1024:
        assert status == 400 and b"not valid JSON" in answer, answer[:200]
    elif levels + more > MAX_DEPTH:
        assert status == 400 and b"nested too deeply" in answer, answer[:200]
    else:
        assert status == 200, answer[:200]


def test_dump_upstream_refuses_what_orjson_cannot_write() -> None:
    for depth in (1, 254):
        assert dump_upstream(orjson.loads(nested(depth, objects=False))) == nested(
            depth, objects=False
        )
    for depth in (255, 1024):
        with pytest.raises(BadRequest) as refused:
            dump_upstream(orjson.loads(nested(depth)))
        assert refused.value.code == "invalid_request"
        assert "nested too deeply (at most 254 levels" in refused.value.message


def test_within_depth_counts_levels_without_recursion() -> None:
    for depth in (0, 1, 2, 254, 255, 1024):
        value = orjson.loads(nested(depth)) if depth else 1
        assert within_depth(value, depth)
        assert within_depth(value, depth - 1) is (depth == 0)


def test_a_deep_tool_call_from_the_model_is_kept_raw_in_the_answer() -> None:
    """A model can be talked into writing deep tool arguments: the Anthropic answer keeps them as
    the raw string rather than an ``input`` too deep to write (or to parse: a RecursionError)."""
    for depth, kept in ((10, True), (251, True), (252, False), (1024, False), (5000, False)):
        arguments = nested(depth).decode()
        answer = completion(
            "", tool_calls=[{"id": "c1", "function": {"name": "f", "arguments": arguments}}]
        )
        message = anthropic.to_anthropic_response(answer, "m")
        orjson.dumps(message)  # always writable
        block = message["content"][-1]
        assert ("_raw_arguments" not in block["input"]) is kept, depth


def test_an_upstream_usage_event_that_is_not_an_object_passes_through() -> None:
    """The OpenAI relay parses only events that look like usage; one that is not JSON, or not an
    object, goes on as it came instead of breaking the stream."""
    relay = OpenAIRelay(include_usage=False)
    events = [b'data: {"usage":{"prompt_tokens":1', b'data: ["usage":{"a":1}]', b"data: [DONE]"]
    assert relay.relay(events) == b"".join(e + b"\n\n" for e in events)
    assert relay.usage is None and relay.done


# --- wrong types, unicode and numbers at every field the gateway reads ---------------------------

# JSON texts a client can send that sit at the edges of what parsers agree on: escapes of lone
# surrogates, raw bytes that are not UTF-8 (overlong, an encoded surrogate), NUL, direction
# overrides, numbers past 64 bits and past a double, and the words some parsers take as numbers.
EDGE_LITERALS = [
    b'"\\ud800"',
    b'"\\udc00x"',
    b'"\\ud83d\\ude00"',
    b'"\xc0\xaf"',
    b'"\xed\xa0\x80"',
    b'"\xff"',
    b'"a\x00b"',
    b'"\\u0000"',
    b'"\xe2\x80\xaeevil"',
    b'"\xef\xbb\xbf"',
    b"123456789012345678901234567890",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"-0",
    b"0.0000000000000000000000000001",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b'"NaN"',
    b'"Infinity"',
    b'"1e400"',
    b"0x10",
    b"01",
    b"",
    b"[",
    b'{"a":1,"a":2}',
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'"' + b"m" * 100_000 + b'"',  # echoed whole in a refusal, it would be a reflection amplifier
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["fake-model", "mock-model", "user", "assistant", "text", "tool_use"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# A content block with each field the translator reads, any of them replaced.
BLOCKS = [
    {"type": "text", "text": "x"},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
    {"type": "image", "source": {"type": "url", "url": "https://example.com/x.png"}},
    {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
    {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
    {"type": "thinking", "thinking": "hm", "signature": ""},
]


def encoded(value: Any, ascii_only: bool) -> bytes:
    """``value`` as JSON text; the stdlib writes integers of any size (orjson stops at 64 bits)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


hostile = st.one_of(
    st.builds(encoded, values, st.booleans()),
    st.sampled_from(EDGE_LITERALS),
)
TOP_FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "system",
    "metadata",
    "region",
    "agent_id",
    "stop_sequences",
    "temperature",
]


@st.composite
def places(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """A valid chat request of either dialect with a hole in one place the gateway reads."""
    anthropic_body = draw(st.booleans())
    paths = [MESSAGES, "/api/v1/messages", COUNT] if anthropic_body else [CHAT, "/v1/llm/chat"]
    path = draw(st.sampled_from(paths))
    headers = {"anthropic-version": "2023-06-01"} if draw(st.booleans()) else {}
    base = dict(ANTHROPIC_BASE if anthropic_body or headers else OPENAI_BASE)
    base["model"] = draw(st.sampled_from(["fake-model", "mock-model"]))
    if draw(st.booleans()):
        base["stream"] = True
    where = draw(st.sampled_from(["field", "message", "role", "content", "block", "block field"]))
    if where == "field":
        base[draw(st.sampled_from(TOP_FIELDS))] = "__HOLE__"
    elif where == "message":
        base["messages"] = [TOOL_TURNS[0], "__HOLE__"]
    elif where in ("role", "content"):
        base["messages"] = [{"role": "user", "content": "hi", where: "__HOLE__"}]
    elif where == "block":
        base["messages"] = [{"role": "user", "content": ["__HOLE__"]}]
    else:
        block = dict(draw(st.sampled_from(BLOCKS)))
        kind = block["type"]
        block[draw(st.sampled_from(sorted(block)))] = "__HOLE__"
        if kind in ("tool_use", "thinking"):
            base["messages"] = [TOOL_TURNS[0], {"role": "assistant", "content": [block]}]
        elif kind == "tool_result":
            base["messages"] = [*TOOL_TURNS[:2], {"role": "user", "content": [block]}]
        else:
            base["messages"] = [{"role": "user", "content": [block]}]
    return path, headers, orjson.dumps(base)


@PROPERTY
@given(case=places(), value=hostile)
async def test_hostile_values_anywhere_are_never_a_500(
    edge: Server, http: aiohttp.ClientSession, case: tuple[str, dict[str, str], bytes], value: bytes
) -> None:
    """Wrong types, edge unicode and edge numbers at every field the gateway reads."""
    path, headers, body = case
    body = fill(body, value)
    status, answer = await send(http, edge, path, body, headers)
    check_answer(status, answer, path, body, headers)


@PROPERTY
@given(case=places(), depth=st.integers(1, 1100), objects=st.booleans())
async def test_hostile_nesting_anywhere_is_never_a_500(
    edge: Server,
    http: aiohttp.ClientSession,
    case: tuple[str, dict[str, str], bytes],
    depth: int,
    objects: bool,
) -> None:
    """A value nested ``depth`` deep at every field the gateway reads."""
    path, headers, body = case
    body = fill(body, nested(depth, objects))
    status, answer = await send(http, edge, path, body, headers)
    check_answer(status, answer, path, body, headers)


# --- sizes ---------------------------------------------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    anthropic_body=st.booleans(),
    text_size=st.integers(0, MAX_BODY + 1000),
    messages=st.integers(1, 3000),
)
async def test_sizes_are_served_or_413(
    edge: Server, http: aiohttp.ClientSession, anthropic_body: bool, text_size: int, messages: int
) -> None:
    """Long texts and long conversations: served below the limit, 413 above it."""
    path = MESSAGES if anthropic_body else CHAT
    base = dict(ANTHROPIC_BASE if anthropic_body else OPENAI_BASE)
    turns = [{"role": ("user", "assistant")[i % 2], "content": "x"} for i in range(messages - 1)]
    base["messages"] = [*turns, {"role": "user", "content": "é" * (text_size // 2) + "?"}]
    body = orjson.dumps(base)
    status, answer = await send(http, edge, path, body)
    check_answer(status, answer, path, body)
    assert status == (413 if len(body) > MAX_BODY else 200), (status, answer[:200])
