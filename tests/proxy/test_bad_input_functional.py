"""Bad input gets a clear error in the right form, and nothing reaches the upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.server import Server
from tests.clients import AUTH, SECURITY
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream


@pytest.fixture
async def small(gateway_factory: Any, fake: FakeUpstream) -> Server:
    server: Server = await gateway_factory(
        gateway_yaml({"fake": fake.url}, extra="network: {max_body_bytes: 1000}\n")
    )
    return server


async def post(
    server: Server,
    data: Any,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}",
            data=data,
            headers=headers or {"Content-Type": "application/json", **AUTH},
        ) as r,
    ):
        return r.status, dict(r.headers), await r.json()


CASES = [
    ("malformed json", b'{"model": "fake-model", "messages": [', 400, "not valid JSON"),
    ("empty body", b"", 400, "The request body is empty"),
    ("array body", b"[1, 2]", 400, "must be a JSON object"),
    (
        "missing model",
        b'{"messages": [{"role": "user", "content": "x"}]}',
        400,
        "'model' is required",
    ),
    (
        "model not a string",
        b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}',
        400,
        "'model' must be a non-empty string",
    ),
    ("missing messages", b'{"model": "fake-model"}', 400, "'messages' is required"),
    (
        "messages not a list",
        b'{"model": "fake-model", "messages": "hi"}',
        400,
        "'messages' must be a non-empty list",
    ),
    (
        "message without role",
        b'{"model": "fake-model", "messages": [{"content": "x"}]}',
        400,
        "messages[0] must be an object with a 'role'",
    ),
    (
        "stream not a bool",
        b'{"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
        400,
        "'stream' must be true or false",
    ),
    (
        "unknown model",
        b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}',
        404,
        "The model 'gpt-9' does not exist",
    ),
    (
        "deeply nested",
        b'{"model": "fake-model", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        400,
        "not valid JSON",
    ),
    (
        "huge integer",
        b'{"model": "fake-model", "messages": [{"role": "user", "content": "x"}],'
        b' "max_tokens": 123456789012345678901234567890}',
        400,
        "'max_tokens' must be a whole number",
    ),
    (
        "negative max_tokens",
        b'{"model": "fake-model", "messages": [{"role": "user", '
        b'"content": "x"}], "max_tokens": -5}',
        400,
        "'max_tokens' must be a whole number",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_bodies(
    gateway_factory: Any, fake: FakeUpstream, body: bytes, status: int, says: str
) -> None:
    server = await gateway_factory(gateway_yaml({"fake": fake.url}))
    got, headers, answer = await post(server, body)
    assert got == status
    assert says in answer["error"]["message"]
    assert answer["error"]["code"] == ("model_not_found" if status == 404 else "invalid_request")
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    for name, value in SECURITY.items():
        assert headers[name] == value
    assert fake.seen == []


async def test_body_over_limit_by_content_length(small: Server, fake: FakeUpstream) -> None:
    status, _, answer = await post(small, b"x" * 1001)
    assert status == 413
    assert answer["error"]["code"] == "request_too_large"
    assert "1000 bytes" in answer["error"]["message"]
    assert fake.seen == []


async def test_body_over_limit_while_chunked(small: Server, fake: FakeUpstream) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 100

    status, _, answer = await post(small, body())
    assert status == 413
    assert answer["error"]["code"] == "request_too_large"
    assert fake.seen == []


async def test_body_at_the_limit_passes(small: Server, fake: FakeUpstream) -> None:
    padding = "p" * (1000 - len('{"model":"fake-model","messages":[{"role":"user","content":""}]}'))
    body = b'{"model":"fake-model","messages":[{"role":"user","content":"' + padding.encode()
    body += b'"}]}'
    assert len(body) == 1000
    status, _, _ = await post(small, body)
    assert status == 200


async def test_unknown_path_and_wrong_method(gateway: Server) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gateway.port}/v2/nothing") as r:
            assert r.status == 404
            body = await r.json()
            assert body["error"]["code"] == "not_found"
            assert "GET /v2/nothing" in body["error"]["message"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(f"http://127.0.0.1:{gateway.port}/v1/chat/completions") as r:
            assert r.status == 405
            assert r.headers["Allow"] == "POST"
            assert (await r.json())["error"]["code"] == "method_not_allowed"
        async with http.delete(f"http://127.0.0.1:{gateway.port}/v1/models") as r:
            assert r.status == 405


async def test_admin_routes_are_not_on_the_public_listener(gateway: Server) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(f"http://127.0.0.1:{gateway.port}{path}") as r:
                assert r.status == 404, path
            async with http.get(f"http://127.0.0.1:{gateway.admin_port}{path}") as r:
                assert r.status == 200, path
