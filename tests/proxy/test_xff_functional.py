"""X-Forwarded-For sent as several field lines (issue 14, item 4): the lines are one list, joined
in order (RFC 9110 §5.3), read from the right past trusted proxies, for the key's IP allowlist,
the failed-auth blocking and what the pass-through tells its backend. Also X-Forwarded-Proto
and the hop-by-hop names of a second ``Connection`` line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.proxy.test_paths_hostile import Answer, ahttp

VICTIM, ATTACKER = "203.0.113.7", "198.51.100.5"
# The client wrote the victim's address; the trusted proxy (the test, on 127.0.0.1) added the
# address it really saw as a line of its own.
TWO_LINES = [("X-Forwarded-For", VICTIM), ("X-Forwarded-For", ATTACKER)]
KEY = list(AUTH.items())
BAD_KEY = [("Authorization", "Bearer not-a-key-at-all")]


def trusted_gateway(mock_port: int, extra: str = "") -> str:
    return gateway_yaml(
        {"mock": f"http://127.0.0.1:{mock_port}"},
        extra="network: {trusted_proxies: [127.0.0.1]}\n" + extra,
    )


async def test_the_allowlist_reads_every_line(gateway_factory: Any, mock: Any) -> None:
    """Was: 200, the first line (the client's own claim) was believed."""
    keys = (
        "keys: {static: [{id: test, owner: tests, sha256: '"
        + TEST_KEY_SHA
        + f"', ip_whitelist: ['{VICTIM}/32']}}]}}\n"
    )
    server: Server = await gateway_factory(trusted_gateway(mock[0], keys))

    async def models(forwarded: list[tuple[str, str]]) -> Answer:
        return await ahttp(server.port, "/v1/models", headers=KEY + forwarded)

    assert (await models([("X-Forwarded-For", VICTIM)])).status == 200
    joined = await models([("X-Forwarded-For", f"{VICTIM}, {ATTACKER}")])
    assert (joined.status, joined.json()["error"]["code"]) == (403, "ip_not_allowed")
    split = await models(TWO_LINES)
    assert (split.status, split.json()["error"]["code"]) == (403, "ip_not_allowed")


async def test_failed_auth_blames_the_real_client(gateway_factory: Any, mock: Any) -> None:
    """Was: the victim's address was counted, and locked out."""
    server: Server = await gateway_factory(
        trusted_gateway(mock[0], "auth: {max_failures_per_minute: 2}\n")
    )
    statuses = [
        (await ahttp(server.port, "/v1/models", headers=BAD_KEY + TWO_LINES)).status
        for _ in range(4)
    ]
    assert statuses[:2] == [401, 401] and statuses[-1] == 429  # blocked past the limit
    victim = await ahttp(server.port, "/v1/models", headers=[*KEY, ("X-Forwarded-For", VICTIM)])
    assert victim.status == 200
    attacker = await ahttp(server.port, "/v1/models", headers=[*KEY, ("X-Forwarded-For", ATTACKER)])
    assert (attacker.status, attacker.json()["error"]["code"]) == (429, "too_many_auth_failures")


@pytest.fixture
async def headers_seen() -> AsyncIterator[tuple[str, list[list[tuple[str, str]]]]]:
    """A backend that records every header line it got, repeated ones included."""
    seen: list[list[tuple[str, str]]] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(list(request.headers.items()))
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


def values(lines: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in lines if k.lower() == name.lower()]


async def passthrough(gateway_factory: Any, backend: str, trusted: bool) -> tuple[Server, str]:
    network = "network: {trusted_proxies: [127.0.0.1]}\n" if trusted else ""
    server: Server = await gateway_factory(
        gateway_yaml(
            {"portal": backend},
            {},
            extra="routes:\n  - {prefix: /api/auth/, upstream: portal, auth: none}\n" + network,
        )
    )
    return server, "/api/auth/login"


async def test_the_backend_gets_the_whole_list_and_the_peer(
    gateway_factory: Any, headers_seen: tuple[str, list[list[tuple[str, str]]]]
) -> None:
    """Was: ``203.0.113.7, 198.51.100.5`` minus the second line, plus the client it resolved
    instead of the peer that connected."""
    server, path = await passthrough(gateway_factory, headers_seen[0], trusted=True)
    sent = [
        *TWO_LINES,
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Proto", "http"),
        ("X-Note", "one"),
        ("X-Note", "two"),
        ("Connection", "X-Hop"),  # a second Connection line: X-Hop is hop-by-hop too
        ("X-Hop", "private"),
    ]
    assert (await ahttp(server.port, path, headers=sent)).status == 200
    got = headers_seen[1][-1]
    assert values(got, "X-Forwarded-For") == [f"{VICTIM}, {ATTACKER}, 127.0.0.1"]
    assert values(got, "X-Forwarded-Proto") == ["http"]  # the right-most: the nearest's word
    assert values(got, "X-Note") == ["one", "two"]
    assert values(got, "X-Hop") == []
    flipped = [("X-Forwarded-Proto", "http"), ("X-Forwarded-Proto", "https")]
    assert (await ahttp(server.port, path, headers=flipped)).status == 200
    assert values(headers_seen[1][-1], "X-Forwarded-Proto") == ["https"]
    assert values(headers_seen[1][-1], "X-Forwarded-For") == ["127.0.0.1"]


async def test_an_untrusted_peers_list_is_not_passed_on(
    gateway_factory: Any, headers_seen: tuple[str, list[list[tuple[str, str]]]]
) -> None:
    server, path = await passthrough(gateway_factory, headers_seen[0], trusted=False)
    sent = [*TWO_LINES, ("X-Forwarded-Proto", "https")]
    assert (await ahttp(server.port, path, headers=sent)).status == 200
    got = headers_seen[1][-1]
    assert values(got, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(got, "X-Forwarded-Proto") == ["http"]  # the connection's, not the claim
