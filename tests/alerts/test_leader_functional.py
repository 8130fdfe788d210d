"""Several gateways on one Redis: one sends the alerts, no event is sent twice, another takes
over when the sender stops or dies, and what was queued survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.alerts.thresholds import UsageSnapshot
from gateway.config.schema import Plan
from gateway.records import KeyRecord
from gateway.server import Server
from tests.alerts.conftest import (
    SECRET,
    Receiver,
    admin,
    alerts_of,
    alerts_yaml,
    new_key,
    revoke,
)
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream
from tests.redis_server import RedisServer, free_port


def config(redis_url: str, fake: FakeUpstream, receiver: Receiver) -> str:
    store = f"store: {{url: '{redis_url}', timeout_ms: 2000}}\n"
    return gateway_yaml({"fake": fake.url}, extra=store + alerts_yaml(receiver.url))


async def one_leader(*servers: Server) -> Server:
    """The one server that sends, once every one of them has sought the lease twice."""
    services = [alerts_of(s) for s in servers]
    async with asyncio.timeout(5):
        while True:
            ticked = all(a.ticks >= 2 for a in services)
            leading = [s for s, a in zip(servers, services, strict=True) if a.sender.leading]
            assert len(leading) < 2, "two senders"
            if ticked and len(leading) == 1:
                return leading[0]
            await asyncio.sleep(0.02)


async def sent(server: Server) -> float:
    """Deliveries this gateway sent, from its own /metrics."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.admin_port}/metrics") as answer,
    ):
        text = await answer.text()
    lines = [ln for ln in text.splitlines() if ln.startswith("gateway_alert_deliveries_total{")]
    return sum(float(ln.split()[-1]) for ln in lines if 'result="sent"' in ln)


async def settled(*servers: Server) -> None:
    """Every hook's event is in the store and the queue is empty (within 5 s)."""
    async with asyncio.timeout(5):
        while True:
            services = [alerts_of(s) for s in servers]
            drained = all(a._drained.is_set() for a in services)
            if drained and await services[0].events.depth() == 0:
                return
            await asyncio.sleep(0.02)


async def test_two_gateways_send_each_event_once(
    gateway_factory: GatewayFactory, redis_url: str, fake: FakeUpstream, receiver: Receiver
) -> None:
    a = await gateway_factory(config(redis_url, fake, receiver))
    b = await gateway_factory(config(redis_url, fake, receiver))
    await one_leader(a, b)
    keys = [await new_key(a) for _ in range(10)]
    for i, key in enumerate(keys):  # each change is broadcast to (and looked at by) both
        await revoke(a if i % 2 else b, key)
    record = KeyRecord(id="k-usage", owner="acme", key_hash="0" * 64, daily_limit=100)
    for server in (a, b):  # both processes admit past 50 % of the same limit
        alerts_of(server).observe_usage(record, Plan("p"), UsageSnapshot(20261206, 202612, 0, 60))
    await receiver.wait(lambda: len(receiver.posts) == 11)
    await settled(a, b)
    assert len(receiver.posts) == 11
    assert len({p.event_id for p in receiver.posts}) == 11
    revoked = sorted(p.body["data"]["keyId"] for p in receiver.of("key.revoked"))
    assert revoked == sorted(keys)
    assert all(p.signed_with(SECRET) for p in receiver.posts)
    assert sorted([await sent(a), await sent(b)]) == [0, 11]  # one process sent them all


async def test_another_gateway_takes_over_when_the_sender_stops(
    gateway_factory: GatewayFactory, redis_url: str, fake: FakeUpstream, receiver: Receiver
) -> None:
    a = await gateway_factory(config(redis_url, fake, receiver))
    b = await gateway_factory(config(redis_url, fake, receiver))
    leader = await one_leader(a, b)
    other = b if leader is a else a
    await leader.stop()  # gives its lease up
    assert await one_leader(other) is other
    await revoke(other, await new_key(other))
    await receiver.wait(lambda: len(receiver.posts) == 1, seconds=5)


async def test_queued_events_survive_a_restart(
    gateway_factory: GatewayFactory, redis_url: str, fake: FakeUpstream, receiver: Receiver
) -> None:
    first = await gateway_factory(config(redis_url, fake, receiver))
    receiver.failing = 500
    key = await new_key(first)
    await revoke(first, key)
    await receiver.wait(lambda: len(receiver.posts) == 1)  # tried once, failed: queued again
    await first.stop()
    receiver.failing = None
    second = await gateway_factory(config(redis_url, fake, receiver))
    await receiver.wait(lambda: len(receiver.posts) == 2)
    failed, delivered = receiver.posts
    assert delivered.event_id == failed.event_id and delivered.raw == failed.raw
    assert delivered.body["data"]["keyId"] == key
    await settled(second)
    # the history survived the restart too: the new process shows the first one's attempt
    status, event = await admin(second, "GET", f"/admin/alerts/events/{delivered.event_id}")
    assert status == 200 and event["data"]["keyId"] == key
    (delivery,) = event["deliveries"]
    assert (delivery["state"], delivery["attempts"], delivery["lastResult"]) == ("sent", 2, "200")


# -- real processes: a sender killed with SIGKILL -------------------------------------------------


async def run_gateway(
    tmp: pathlib.Path, text: str, started: list[asyncio.subprocess.Process]
) -> tuple[asyncio.subprocess.Process, int]:
    """A gateway process, in ``started`` from its spawn (a failed start elsewhere still stops
    it), and its admin port once it is ready."""
    port, admin_port = free_port(), free_port()
    head = (
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        f"admin: {{host: 127.0.0.1, port: {admin_port}}}\n"
    )
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(head + "log: {level: warning, access: false}\n" + text)
    log = (tmp / f"gateway-{port}.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "--config", str(path), stdout=log, stderr=log
    )
    log.close()  # the child has its own copy
    started.append(process)
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{admin_port}/readyz") as answer:
                    if answer.status == 200:
                        return process, admin_port
            except aiohttp.ClientError:
                pass
            assert process.returncode is None, (tmp / f"gateway-{port}.log").read_text()
            await asyncio.sleep(0.05)


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        with contextlib.suppress(ProcessLookupError):  # killed by the test already
            process.terminate()
        await process.wait()


async def test_a_killed_sender_is_replaced_within_seconds(
    tmp_path: pathlib.Path,
    redis_process: RedisServer,
    redis_url: str,
    fake: FakeUpstream,
    receiver: Receiver,
    processes: list[asyncio.subprocess.Process],
) -> None:
    text = (
        f"store: {{url: '{redis_url}'}}\n"
        f"upstreams: {{fake: {{url: '{fake.url}'}}}}\n"
        "models: {fake-model: {upstreams: [fake]}}\n" + alerts_yaml(receiver.url)
    )
    (one, one_admin), (two, two_admin) = await asyncio.gather(
        run_gateway(tmp_path, text, processes), run_gateway(tmp_path, text, processes)
    )
    async with asyncio.timeout(5):
        while True:  # the lease's holder: "host:pid:nonce"
            holder = redis_process.call("GET", "gw:{alerts}:leader")
            if holder.count(":") == 2:
                break
            await asyncio.sleep(0.05)
    watch_until = asyncio.get_running_loop().time() + 1.5  # both renew or seek every second
    while asyncio.get_running_loop().time() < watch_until:
        assert redis_process.call("GET", "gw:{alerts}:leader") == holder, "the lease moved"
        await asyncio.sleep(0.05)
    pid = int(holder.split(":")[1])
    assert pid in (one.pid, two.pid), holder
    os.kill(pid, signal.SIGKILL)  # no resignation: its lease must lapse
    survivor_admin = two_admin if pid == one.pid else one_admin
    killed_at = asyncio.get_running_loop().time()
    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{survivor_admin}/admin/keys"
        async with http.post(base, json={"owner": "acme"}) as answer:
            key = (await answer.json())["id"]
        async with http.post(f"{base}/{key}/revoke", json={"reason": "x"}) as answer:
            assert answer.status == 200
    await receiver.wait(lambda: len(receiver.posts) == 1, seconds=10)
    assert receiver.posts[0].body["data"]["keyId"] == key
    assert asyncio.get_running_loop().time() - killed_at < 8.0  # lease 5 s + one tick
    survivor = two.pid if pid == one.pid else one.pid
    assert redis_process.call("GET", "gw:{alerts}:leader").split(":")[1] == str(survivor)
