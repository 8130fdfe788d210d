"""Credentials sent more than once, on a real gateway: two different keys (in Authorization and
X-API-Key, or in repeated lines of one header) are a 401 that says the headers disagree, never
echoing a key; the same key repeated is accepted."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.server import Server
from tests.clients import TEST_KEY
from tests.conftest import GatewayFactory
from tests.web import admin, config

ROUTES = [("GET", "/v1/models"), ("GET", "/api/keys"), ("POST", "/v1/chat/completions")]
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}


@pytest.fixture
async def server(gateway_factory: GatewayFactory, mock: tuple[int, Any]) -> Server:
    return await gateway_factory(config(mock[0]))


async def send(
    server: Server, method: str, path: str, pairs: list[tuple[str, str]]
) -> tuple[int, Any]:
    """One request with exactly these header lines (a multidict is sent as it is)."""
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"http://127.0.0.1:{server.port}{path}",
            headers=CIMultiDict(pairs),
            json=CHAT if method == "POST" else None,
        ) as r,
    ):
        return r.status, await r.json()


async def other_key(server: Server) -> str:
    reply = await admin(server)("POST", "/admin/keys", {"owner": "tests", "name": "second"})
    assert reply.status == 201
    return str(reply.body["key"])


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_two_different_keys_say_the_headers_disagree(
    server: Server, method: str, path: str
) -> None:
    second = await other_key(server)
    for pairs in (
        [("Authorization", f"Bearer {TEST_KEY}"), ("X-API-Key", second)],
        [("Authorization", f"Bearer {TEST_KEY}"), ("Authorization", f"Bearer {second}")],
        [("X-API-Key", second), ("X-API-Key", TEST_KEY)],
        [("X-API-Key", second), ("X-API-Key", second), ("X-API-Key", TEST_KEY)],
        [("Authorization", f"Bearer {TEST_KEY}"), ("Authorization", "Basic dXNlcjpwYXNz")],
    ):
        status, body = await send(server, method, path, pairs)
        assert (status, body["error"]["code"]) == (401, "invalid_api_key"), pairs
        message = body["error"]["message"]
        assert "different" in message and "one key" in message, message
        assert TEST_KEY not in str(body) and second not in str(body)
        assert "Invalid API key. Check" not in message  # not the unknown-key answer


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_the_same_key_repeated_is_accepted(server: Server, method: str, path: str) -> None:
    second = await other_key(server)
    for pairs in (
        [("Authorization", f"Bearer {TEST_KEY}"), ("Authorization", f"Bearer {TEST_KEY}")],
        [("Authorization", f"Bearer {TEST_KEY}"), ("Authorization", f"bearer  {TEST_KEY} ")],
        [("X-API-Key", second), ("X-API-Key", second)],
        [("Authorization", f"Bearer {second}"), ("X-API-Key", second), ("X-API-Key", second)],
    ):
        status, body = await send(server, method, path, pairs)
        assert status == 200, (pairs, body)
