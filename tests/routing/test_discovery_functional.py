"""``discover: dns``: one upstream per address, probed before it takes traffic, drained when it
vanishes; through a real gateway with ``localhost`` and the system resolver, and with a
resolver the test controls."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.clock import FakeClock
from gateway.config.schema import Upstream
from gateway.routing.balancer import Balancer
from gateway.routing.discovery import Discovery, member
from tests.clients import AUTH, sdk
from tests.conftest import GatewayFactory
from tests.routing.support import Worker, config, stop_all, until


@pytest.fixture
async def pair() -> AsyncIterator[list[Worker]]:
    """Two workers on one port, at 127.0.0.1 and 127.0.0.2 (the whole of 127/8 is loopback)."""
    first = Worker(name="first")
    await first.start()
    second = Worker(name="second", host="127.0.0.2", port=first.port)
    await second.start()
    yield [first, second]
    await stop_all([first, second])


def test_a_member_is_named_for_its_address_and_keeps_the_entrys_settings() -> None:
    entry = Upstream(name="pool-b", url="http://vllm.ns.svc:8000/v1", discover="dns", weight=2)
    four, six = member(entry, "10.0.0.5"), member(entry, "fd00::5")
    assert (four.name, four.url) == ("pool-b@10.0.0.5:8000", "http://10.0.0.5:8000/v1")
    assert (six.name, six.url) == ("pool-b@[fd00::5]:8000", "http://[fd00::5]:8000/v1")
    assert four.weight == 2 and four.discover is None


async def test_localhost_resolves_to_one_upstream_per_address(
    gateway_factory: GatewayFactory, pair: list[Worker]
) -> None:
    first = pair[0]
    server = await gateway_factory(
        config(
            {"pool": {"url": f"http://localhost:{first.port}", "discover": "dns"}},
            {"m": {"upstreams": ["pool"]}},
            "routing: {expose_headers: true}",
        )
    )
    answer = await sdk(server).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.headers["x-gateway-upstream"].startswith("pool@")
    assert answer.headers["x-gateway-upstream"].endswith(f":{first.port}")
    assert first.chats == 1
    members = server.runtime.balancer.members("pool")
    assert members and f"pool@127.0.0.1:{first.port}" in {m.name for m in members}


class Names:
    """A resolver the test answers: the addresses it returns, and the lookups made."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        if not self.addresses:
            raise OSError("Name or service not known")
        return list(self.addresses)


async def test_addresses_come_and_go(pair: list[Worker]) -> None:
    first, second = pair
    clock = FakeClock()
    balancer = Balancer(clock, random.Random(1))
    entry = Upstream(name="pool", url=f"http://pool.test:{first.port}", discover="dns")
    names = Names("127.0.0.1")
    probed: list[str] = []

    async def check(upstream: Upstream) -> bool:
        probed.append(upstream.name)
        return upstream.name.startswith("pool@127.0.0.1") or second.status == 200

    discovery = Discovery(balancer, lambda: [entry], check, clock, names)
    await discovery.sweep()
    assert names.lookups == [("pool.test", first.port)]
    one, two = f"pool@127.0.0.1:{first.port}", f"pool@127.0.0.2:{first.port}"
    assert [m.name for m in balancer.expand([entry])] == [one]

    names.addresses = ["127.0.0.1", "127.0.0.2"]
    second.status = 503  # not answering its probe yet: joins ejected
    await discovery.sweep()
    assert names.lookups[1:] == []  # not due: the interval is 10 s
    clock.advance(10)
    await discovery.sweep()
    assert probed == [one, two]
    assert {balancer.pick([entry]).name for _ in range(20)} == {one}  # type: ignore[union-attr]
    balancer.succeeded(member(entry, "127.0.0.2"))  # the health checker saw it answer
    assert {balancer.pick([entry]).name for _ in range(40)} == {one, two}  # type: ignore[union-attr]

    held = member(entry, "127.0.0.1")
    balancer.acquire(held)  # a stream in flight to the address that vanishes
    names.addresses = ["127.0.0.2"]
    clock.advance(10)
    await discovery.sweep()
    assert {balancer.pick([entry]).name for _ in range(20)} == {two}  # type: ignore[union-attr]
    assert balancer.state(one).in_flight == 1  # drained: kept while in flight
    balancer.release(held)
    clock.advance(10)
    names.addresses = []  # DNS trouble keeps the last addresses
    await discovery.sweep()
    assert [m.name for m in balancer.expand([entry])] == [two]
    assert one not in balancer._state  # forgotten once its last request ended


async def test_members_take_traffic_through_the_gateway(
    gateway_factory: GatewayFactory, pair: list[Worker]
) -> None:
    """The gateway's own discovery (of localhost, as the system says) overruled by one with a
    resolver the test answers: both addresses serve."""
    first, second = pair
    text = config(
        {"pool": {"url": f"http://localhost:{first.port}", "discover": "dns"}},
        {"m": {"upstreams": ["pool"]}},
        "routing: {expose_headers: true}",
    )
    server = await gateway_factory(text)
    names = Names("127.0.0.1", "127.0.0.2")
    runtime = server.runtime
    discovery = Discovery(
        runtime.balancer,
        lambda: runtime.config.upstreams.values(),
        lambda u: asyncio.sleep(0, True),
        runtime.clock,
        names,
    )
    await discovery.sweep()
    async with aiohttp.ClientSession() as http:
        for _ in range(30):
            async with http.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers=AUTH,
            ) as r:
                assert r.status == 200
    assert first.chats > 0 and second.chats > 0
    await until(lambda: runtime.balancer.healthy(runtime.config.upstreams["pool"]))
