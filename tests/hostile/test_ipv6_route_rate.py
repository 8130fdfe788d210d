"""A pass-through route's ``ip_rpm`` counted each IPv6 address apart: a client holds a whole /64
(2**64 addresses: a subscriber, a VM, a phone) and sent each request from another of them, so
the route's per-client rate never stopped it, and every request made a counter of its own in
the store. Counted per /64, as failed authentications are (``tests/hostile/
test_ipv6_guessing``); IPv4 stays per address.

A real gateway (Redis store) before a real aiohttp backend; the test's connections come from a
trusted proxy, so ``X-Forwarded-For`` names the client, as behind a load balancer.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.server import Server
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

EXTRA = (
    "network: {trusted_proxies: ['127.0.0.1/32']}\n"
    "routes: [{prefix: /public/, upstream: portal, auth: none, ip_rpm: 3}]\n"
)


async def _get(http: aiohttp.ClientSession, server: Server, client: str) -> int:
    url = f"http://127.0.0.1:{server.port}/public/page"
    async with http.get(url, headers={"X-Forwarded-For": client}) as r:
        await r.read()
        return r.status


async def test_one_ipv6_64_is_one_client_of_a_routes_ip_rpm(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str
) -> None:
    """Attack: ten requests to an ``ip_rpm: 3`` route, each from another address of
    2001:db8:1:2::/64. Observed (before): ten 200s, the backend reached ten times. Expected:
    three, then 429; another /64 and IPv4 neighbours apart."""
    text = gateway_yaml(
        {"portal": fake.url},
        {"m": {"upstreams": ["portal"]}},
        extra=f"store: {{url: '{redis_url}'}}\n" + EXTRA,
    )
    server: Server = await gateway_factory(text)
    async with aiohttp.ClientSession() as http:
        statuses = [await _get(http, server, f"2001:db8:1:2::{i + 1:x}") for i in range(10)]
        assert await _get(http, server, "2001:db8:1:3::1") == 200  # another /64
        ipv4 = [await _get(http, server, "203.0.113.7") for _ in range(4)]
        assert await _get(http, server, "203.0.113.8") == 200  # IPv4: per address
    assert statuses == [200] * 3 + [429] * 7, statuses
    assert ipv4 == [200] * 3 + [429], ipv4
