"""Failed authentications are limited per real client IP: beyond
auth.max_failures_per_minute, 429 with Retry-After before any key is looked at, and a spoofed
X-Forwarded-For from an untrusted peer does not escape the count."""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml


async def models(server: Server, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/v1/models", headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.json()


async def test_spoofed_forwarded_for_does_not_escape(gateway_factory: Any, mock: Any) -> None:
    server: Server = await gateway_factory(
        gateway_yaml(
            {"mock": f"http://127.0.0.1:{mock[0]}"}, extra="auth: {max_failures_per_minute: 3}\n"
        )
    )
    statuses = []
    for i in range(5):
        status, headers, body = await models(
            server,
            {
                "Authorization": f"Bearer not-a-real-key-{i}",
                "X-Forwarded-For": f"198.51.100.{i}",  # an untrusted peer's claim: ignored
            },
        )
        statuses.append(status)
    assert statuses == [401, 401, 401, 401, 429]
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert body["error"]["code"] == "too_many_auth_failures"
    status, _, body = await models(server, AUTH)  # even a good key: the address is blocked
    assert status == 429 and body["error"]["code"] == "too_many_auth_failures"


async def test_a_missing_key_is_not_a_failed_guess(gateway_factory: Any, mock: Any) -> None:
    server: Server = await gateway_factory(
        gateway_yaml(
            {"mock": f"http://127.0.0.1:{mock[0]}"}, extra="auth: {max_failures_per_minute: 2}\n"
        )
    )
    for _ in range(5):
        status, _, body = await models(server, {})
        assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    assert (await models(server, AUTH))[0] == 200
