"""Failed guesses of a guessable key are limited per client, and on IPv6 one client is a /64.

A subscriber, a VM or a phone is given a whole /64 (2**64 addresses) and can send each
request from another one of them: counted per address, ``auth.max_failures_per_minute`` never
stopped it guessing declared or imported keys. Counted per /64, as rate limiters do for IPv6;
IPv4 stays per address.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.server import Server
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

# The test's connections come from 127.0.0.1: a trusted proxy, so X-Forwarded-For names the
# client, as behind a load balancer.
TRUSTED = "network: {trusted_proxies: ['127.0.0.1/32']}\nauth: {max_failures_per_minute: 3}\n"


async def _guess(server: Server, client: str, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": client}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/v1/models", headers=headers) as r,
    ):
        return r.status


async def test_guesses_from_one_ipv6_64_are_counted_together(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """Attack: ten guesses, each from another address of 2001:db8:1:2::/64. Observed (before):
    ten 401s. Expected: three 401s, then 429 ``too_many_auth_failures``."""
    server: Server = await gateway_factory(gateway_yaml({"up": fake.url}, extra=TRUSTED))
    statuses = [
        await _guess(server, f"2001:db8:1:2::{i:x}", f"guess-{i}-xxxxxx") for i in range(10)
    ]
    assert statuses == [401] * 3 + [429] * 7, statuses


async def test_other_64s_and_ipv4_neighbours_are_apart(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    server: Server = await gateway_factory(gateway_yaml({"up": fake.url}, extra=TRUSTED))
    for i in range(4):
        await _guess(server, f"2001:db8:1:2::{i + 1:x}", f"guess-{i}-xxxxxx")
    assert await _guess(server, "2001:db8:1:3::1", "guess-x-xxxxxx") == 401  # another /64
    for i in range(4):
        await _guess(server, "203.0.113.7", f"guess-{i}-xxxxxx")
    assert await _guess(server, "203.0.113.8", "guess-y-xxxxxx") == 401  # IPv4: per address
