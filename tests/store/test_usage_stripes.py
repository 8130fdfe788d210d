"""Usage rows in stripes (``redis_codec.usage_keys``): a tenant's usage spread over a Cluster's
shards while its limits stay in its owner's slot, written exactly once in the Cluster's two
steps, and read together with the rows written in the owner's slot before the stripes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis as sync_redis
from redis.crc import key_slot

from gateway.clock import FakeClock
from gateway.records import Admission, Settlement, latency_bucket
from gateway.store.base import StoreError
from gateway.store.redis import RedisStore
from gateway.store.redis_codec import Row, legacy_usage_keys, stripe, stripe_tag, tag
from gateway.store.redis_usage import ClusterSettlement
from tests.conftest import gateway_yaml
from tests.redis_server import RedisClusterProcesses, RedisServer
from tests.store.test_contract import T0

DAY = 20231114  # T0's UTC day


def slots(nodes: list[RedisServer]) -> list[tuple[int, int, int]]:
    """(first slot, last slot, node index) of the Cluster's masters."""
    ports = [n.port for n in nodes]
    with sync_redis.Redis(port=ports[0]) as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    return [(int(r[0]), int(r[1]), ports.index(int(r[2][1]))) for r in ranges]


def node_of(nodes: list[RedisServer], name: str) -> int:
    slot = key_slot(name.encode())
    return next(n for first, last, n in slots(nodes) if first <= slot <= last)


def key_apart(nodes: list[RedisServer], owner: str) -> str:
    """A key id whose usage stripe is on another node than its owner's slot."""
    home = node_of(nodes, tag(owner))
    return next(f"k{i}" for i in range(100) if node_of(nodes, stripe_tag(stripe(f"k{i}"))) != home)


def settled(key: str, owner: str, n: int, **extra: Any) -> tuple[Admission, Settlement]:
    a = Admission(f"r{n}", key, owner, concurrency=1, daily=10**6, reserve=10)
    return a, Settlement(a, DAY, 202311, "m", 3, 4, 12.5, finished_at=T0, **extra)


# -- both layouts -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_rows_written_before_the_stripes_are_read_with_them(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A (key, day) with a row in the owner's slot (the layout before the stripes) and one in
    its stripe reads as one row: the sums of both."""
    url = request.getfixturevalue(f"{kind}_url")
    store = RedisStore(url, 5000, FakeClock(T0))
    prefix, index = legacy_usage_keys("acme", "k1")
    client = (
        sync_redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://").split(",")[0])
        if kind == "cluster"
        else sync_redis.Redis.from_url(url)
    )
    try:
        client.hset(f"{prefix}{DAY}", mapping={"r:m": 2, "p:m": 20, "c:m": 30, "l:m": 7.5})
        client.hset(f"{prefix}{DAY}", mapping={"b3:m": 2, "r:old": 1, "p:old": 1, "c:old": 1})
        client.zadd(index, {str(DAY): DAY})
        a = Admission("r1", "k1", "acme", daily=10**6, reserve=5)
        v = await store.admit(a)
        await store.settle(Settlement(a, v.day, v.month, "m", 3, 4, 12.5, finished_at=T0))
        rows = {r.model: r for r in await store.usage("acme", ["k1"], DAY, DAY)}
    finally:
        client.close()
        await store.close()
    m = rows["m"]
    assert (m.requests, m.prompt_tokens, m.completion_tokens) == (3, 23, 34)
    assert m.latency_ms_total == 20.0
    assert sum(m.latency_buckets) == 3
    assert rows["old"].requests == 1


# -- a Cluster's two steps ----------------------------------------------------------------------
async def test_a_usage_call_sent_again_writes_its_rows_once(cluster_url: str) -> None:
    """usage.lua skips the rows of this process under its floor in the stripe, or listed above
    it: a call whose reply was lost, sent again with the same numbers, writes nothing twice."""
    store = RedisStore(cluster_url, 5000, FakeClock(T0))
    try:
        two_steps = store._cluster
        assert isinstance(two_steps, ClusterSettlement)
        a, s = settled("k1", "acme", 1)
        await store.admit(a)
        await store.settle_many([s])
        [row] = await store.usage("acme", ["k1"], DAY, DAY)
        assert row.requests == 1
        # the same row sent again (as after a lost reply), then a new one
        usage = ("m", "3", "4", "0", "12.5", str(latency_bucket(12.5)), repr(T0))
        again = Row("r1", two_steps.process, 1, "k1", usage)
        two_steps.waiting[stripe("k1")] = {(again.process, 1): ("acme", again)}
        await two_steps.write()
        assert [r.requests for r in await store.usage("acme", ["k1"], DAY, DAY)] == [1]
        new = Row("r2", two_steps.process, two_steps._take_number(), "k1", usage)
        two_steps.waiting[stripe("k1")] = {
            (again.process, 1): ("acme", again),
            (new.process, new.number): ("acme", new),
        }
        await two_steps.write()
        assert [r.requests for r in await store.usage("acme", ["k1"], DAY, DAY)] == [2]
        assert two_steps.waiting == {}
    finally:
        await store.close()


async def test_rows_wait_for_an_unreachable_stripe_and_are_written_once(
    cluster_url: str, cluster_processes: RedisClusterProcesses
) -> None:
    """The stripe's node stopped: the settlement fails (the limiter keeps it and tries again),
    its lease is already released in the owner's slot (limits exact), and its row waits. Sent
    again once the node is back, the batch writes the row once, however often it is sent."""
    nodes = cluster_processes.nodes
    key = key_apart(nodes, "acme")
    stripe_node = nodes[node_of(nodes, stripe_tag(stripe(key)))]
    store = RedisStore(cluster_url, 300, FakeClock(T0))
    try:
        await _ping_when_up(store)  # the client's first call finds the Cluster's nodes (slow)
        a, s = settled(key, "acme", 1)
        assert (await store.admit(a)).admitted
        await store.ping()
        stripe_node.pause()
        try:
            with pytest.raises(StoreError):
                await store.settle_many([s])
        finally:
            stripe_node.resume()
        assert store._cluster is not None and len(store._cluster.waiting) == 1
        second = Admission("r2", key, "acme", concurrency=1, daily=10**6, reserve=10)
        assert (await _admit_when_back(store, second)).admitted  # the first lease was released
        for _ in range(3):  # the limiter's retries of the same batch
            await store.settle_many([s])
        [row] = await store.usage("acme", [key], DAY, DAY)
        assert (row.requests, row.prompt_tokens, row.completion_tokens) == (1, 3, 4)
    finally:
        await store.close()


async def test_rows_a_stripe_refused_wait_and_are_written_once(
    cluster_url: str, cluster_processes: RedisClusterProcesses
) -> None:
    """The stripe's node answers the usage call with an error (out of memory) while the owner's
    node settles: the batch fails, the row waits, and once the node takes writes again the
    batch sent again writes it once."""
    nodes = cluster_processes.nodes
    key = key_apart(nodes, "acme")
    stripe_node = nodes[node_of(nodes, stripe_tag(stripe(key)))]
    store = RedisStore(cluster_url, 5000, FakeClock(T0))
    try:
        a, s = settled(key, "acme", 1)
        assert (await store.admit(a)).admitted
        stripe_node.call("CONFIG", "SET", "maxmemory", "1")
        try:
            with pytest.raises(StoreError, match="maxmemory"):
                await store.settle_many([s])
        finally:
            stripe_node.call("CONFIG", "SET", "maxmemory", "0")
        assert await store.usage("acme", [key], DAY, DAY) == []
        for _ in range(2):
            await store.settle_many([s])
        [row] = await store.usage("acme", [key], DAY, DAY)
        assert (row.requests, row.prompt_tokens) == (1, 3)
    finally:
        await store.close()


async def _ping_when_up(store: RedisStore) -> None:
    """A ping answered within the store's budget (bounded): the client knows the Cluster, so
    the calls after it are timed on Redis, not on the client's discovery of the nodes."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            return await store.ping()
        except StoreError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _admit_when_back(store: RedisStore, a: Admission) -> Any:
    """The admission, once the Cluster client has found its way back (bounded)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            return await store.admit(a)
        except StoreError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


# -- one hot tenant through the gateway ---------------------------------------------------------
KEYS = 12  # random ids: all their stripes on one of 3 nodes has a chance of ~1e-5
PER_KEY = 30
ADMIN = "admin-token-0123456789"


def _gw_keys(nodes: list[RedisServer]) -> Iterator[tuple[int, str]]:
    for n, node in enumerate(nodes):
        with sync_redis.Redis(port=node.port) as client:
            for name in client.scan_iter(b"gw:*"):
                yield n, name.decode()


async def test_one_hot_tenant_on_three_nodes(
    gateway_factory: Any,
    mock: tuple[int, Any],
    cluster_url: str,
    cluster_processes: RedisClusterProcesses,
) -> None:
    """One owner with a plan rpm, its keys each with their own limits, sends many requests
    through the gateway to a real upstream: every limit key of the owner (rpm logs, leases,
    counters) is on one node, its usage rows on more than one, and the usage report's totals
    are exact."""
    text = gateway_yaml(
        {"mock": f"http://127.0.0.1:{mock[0]}"},
        {"mock-model": {"upstreams": ["mock"]}},
        extra="plans: {free: {max_keys: 20, rpm: 100000, monthly_tokens: 100000000}}\n"
        f"store: {{url: '{cluster_url}', timeout_ms: 2000}}\n",
        admin_token=ADMIN,
    )
    server = await gateway_factory(text)
    admin = f"http://127.0.0.1:{server.admin_port}"
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http:
        secrets = []
        for i in range(KEYS):
            body = {"owner": "acme", "name": f"k{i}", "rpmLimit": 10000, "maxConcurrency": 50}
            async with http.post(f"{admin}/admin/keys", json=body, headers=auth) as r:
                assert r.status == 201, await r.text()
                secrets.append((await r.json())["key"])

        async def chat(secret: str) -> tuple[int, int]:
            payload = {"model": "mock-model", "messages": [{"role": "user", "content": "say:4"}]}
            url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
            headers = {"Authorization": f"Bearer {secret}"}
            async with http.post(url, json=payload, headers=headers) as r:
                answer = await r.json()
                assert r.status == 200, answer
                return answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]

        gate = asyncio.Semaphore(32)

        async def bounded(secret: str) -> tuple[int, int]:
            async with gate:
                return await chat(secret)

        used = await asyncio.gather(*(bounded(s) for s in secrets for _ in range(PER_KEY)))
        want = (KEYS * PER_KEY, sum(p for p, _ in used), sum(c for _, c in used))
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the settlements are written just after the answers
            path = f"{admin}/admin/usage/summary?owner=acme&period=7d"
            async with http.get(path, headers=auth) as r:
                report = await r.json()
            got = (report["totalRequests"], report["inputTokens"], report["outputTokens"])
            if got == want or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
    assert got == want

    nodes = cluster_processes.nodes
    where: dict[str, set[int]] = {"limits": set(), "usage": set()}
    for n, name in _gw_keys(nodes):
        if name.startswith("gw:{acme}:") and not name.startswith("gw:{acme}:keys"):
            where["limits"].add(n)
        elif name.startswith("gw:{use:") and ":use:acme:" in name:
            where["usage"].add(n)
    assert len(where["limits"]) == 1, where  # rpm logs, leases, counters: the owner's slot
    assert len(where["usage"]) >= 2, where  # the owner's keys' rows in their stripes
    assert where["usage"] == {node_of(nodes, stripe_tag(stripe(k))) for k in _key_ids(nodes)}


def _key_ids(nodes: list[RedisServer]) -> set[str]:
    """The owner's key ids, as the store lists them."""
    name = "gw:{acme}:keys"
    with sync_redis.Redis(port=nodes[node_of(nodes, name)].port) as client:
        return {m.decode() for m in client.smembers(name)}
