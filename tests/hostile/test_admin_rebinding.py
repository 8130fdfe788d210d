"""An open admin API (loopback, no ``admin.token``: the embedded default, ``make run``) is
reachable only by the operator's own tools, never by a web page the operator visits.

A page can reach a loopback listener two ways: a "simple" cross-site POST (``Content-Type:
text/plain``, no preflight; the page cannot read the answer, but the key is made), and DNS
rebinding (the attacker's name resolves to 127.0.0.1 after the page loaded, so the page's
script is same-origin with ``http://attacker.example:9090`` and reads every answer: a new
key for any owner). Both carry a ``Host`` (and, for the first, an ``Origin``) that is not the
loopback listener's; the operator's curl, the CLI and the console carry its own.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway.server import Server
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream


@pytest.fixture
async def open_admin(gateway_factory: Any, fake: FakeUpstream) -> Server:
    server: Server = await gateway_factory(gateway_yaml({"up": fake.url}))
    return server


async def _call(
    server: Server, method: str, path: str, headers: dict[str, str], body: str | None = None
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"http://127.0.0.1:{server.admin_port}{path}",
            headers=headers,
            data=body,
        ) as r,
    ):
        return r.status, await r.read()


ATTACKS = {
    "rebound host lists keys": ("GET", "/admin/keys?owner=tests", {"Host": "attacker.example"}),
    "rebound host makes a key": (
        "POST",
        "/admin/keys",
        {"Host": "attacker.example:9090", "Content-Type": "application/json"},
    ),
    "cross-site simple post": (
        "POST",
        "/admin/keys",
        {"Origin": "http://attacker.example", "Content-Type": "text/plain"},
    ),
    "a null origin (sandboxed frame)": ("POST", "/admin/keys", {"Origin": "null"}),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_a_web_page_cannot_use_an_open_admin_api(open_admin: Server, attack: str) -> None:
    """Observed (before): 200/201, a key made for owner ``tests`` and shown whole.
    Expected: 403, nothing made."""
    method, path, headers = ATTACKS[attack]
    body = '{"owner": "tests", "name": "pwned"}' if method == "POST" else None
    status, answer = await _call(open_admin, method, path, headers, body)
    assert status == 403 and b"sk_" not in answer, (status, answer[:200])
    status, listed = await _call(open_admin, "GET", "/admin/keys?owner=tests", {})
    assert status == 200 and b"pwned" not in listed


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "localhost:9090", "127.0.0.1:9090", "[::1]:9090", None]
)
async def test_the_operators_own_calls_still_work(open_admin: Server, host: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if host is not None:
        headers["Host"] = host
    status, _ = await _call(
        open_admin, "POST", "/admin/keys", headers, '{"owner": "tests", "name": "ci"}'
    )
    assert status == 201
    origin = {"Origin": f"http://{host or '127.0.0.1'}", **headers}  # the console, same origin
    status, _ = await _call(
        open_admin, "POST", "/admin/keys", origin, '{"owner": "tests", "name": "ci2"}'
    )
    assert status == 201


async def test_with_a_token_any_host_is_served(gateway_factory: Any, fake: FakeUpstream) -> None:
    """A configured token is the gate; the Host of a proxy in front (admin.example) is fine."""
    server: Server = await gateway_factory(gateway_yaml({"up": fake.url}, admin_token="t0k"))
    headers = {"Host": "admin.example", "Authorization": "Bearer t0k"}
    assert (await _call(server, "GET", "/admin/keys?owner=tests", headers))[0] == 200
