"""The stored Responses' contract (``store.responses_store``), one suite over ``memory``, ``redis``
(a real server) and ``cluster`` (a real 3-master Redis Cluster): a record is the owner's alone,
expires after its TTL, is deleted once; owners with odd characters (hash tags, separators) stay
apart. On Redis Cluster one owner's records spread over the nodes (keyed by their ids), and records
of the earlier layout (under the owner's hash tag) are still found. In memory the TTL follows a
``FakeClock``; in Redis it is Redis' own (real milliseconds), so that test polls with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.clock import FakeClock
from gateway.config.schema import Store
from gateway.store.base import StoreError
from gateway.store.responses_store import (
    ResponsesStore,
    create_responses_store,
    new_id,
    valid_id,
)
from gateway.store.responses_store_memory import MemoryResponses
from gateway.store.responses_store_redis import key, legacy_key
from tests.redis_server import RedisClusterProcesses, RedisServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def stored(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[ResponsesStore]:
    url = (
        "memory://"
        if request.param == "memory"
        else request.getfixturevalue(f"{request.param}_url")
    )
    made = create_responses_store(Store(url=str(url), timeout_ms=2000), clock)
    yield made
    await made.close()


async def test_put_get_delete_per_owner(stored: ResponsesStore) -> None:
    rid = new_id()
    await stored.put("acme", rid, b'{"a":1}', ttl=60)
    assert await stored.get("acme", rid) == b'{"a":1}'
    assert await stored.get("other", rid) is None  # another owner's id is unknown
    assert await stored.delete("other", rid) is False
    assert await stored.delete("acme", rid) is True
    assert await stored.get("acme", rid) is None
    assert await stored.delete("acme", rid) is False


@pytest.mark.parametrize("owner", ["a{b}c", "x:y", "%7B", "", "ünï"])
async def test_odd_owners_stay_apart(stored: ResponsesStore, owner: str) -> None:
    rid = new_id()
    await stored.put(owner, rid, b"mine", ttl=60)
    await stored.put(owner + "x", rid, b"theirs", ttl=60)
    assert await stored.get(owner, rid) == b"mine"
    assert await stored.get(owner + "x", rid) == b"theirs"


async def test_a_record_expires(stored: ResponsesStore, clock: FakeClock) -> None:
    rid = new_id()
    await stored.put("acme", rid, b"x", ttl=0.05)
    clock.advance(0.1)
    deadline = asyncio.get_running_loop().time() + 3.0
    while await stored.get("acme", rid) is not None:
        assert asyncio.get_running_loop().time() < deadline, "never expired"
        await asyncio.sleep(0.02)


def test_ids() -> None:
    rid = new_id()
    assert rid.startswith("resp_") and len(rid) == 53 and valid_id(rid)
    assert new_id() != rid
    assert not valid_id("") and not valid_id("a/b") and not valid_id("x" * 129)


async def test_memory_drops_the_oldest_past_its_capacity(clock: FakeClock) -> None:
    memory = MemoryResponses(clock, capacity=10)
    await memory.put("o", "a", b"123456", ttl=60)
    await memory.put("o", "b", b"123456", ttl=60)
    assert await memory.get("o", "a") is None and await memory.get("o", "b") == b"123456"


async def test_an_unreachable_redis_is_a_store_error() -> None:
    from tests.redis_server import free_port

    made = create_responses_store(
        Store(url=f"redis://127.0.0.1:{free_port()}", timeout_ms=200), FakeClock()
    )
    with pytest.raises(StoreError):
        await made.get("acme", new_id())
    await made.close()


async def test_one_owners_responses_spread_over_the_cluster(
    cluster_processes: RedisClusterProcesses, cluster_url: str
) -> None:
    """Keyed by their own ids, not their owner's hash tag: one busy owner's stored responses
    land on every node of a 3-master Cluster, and are each read back by that owner alone."""
    made = create_responses_store(Store(url=cluster_url, timeout_ms=2000), FakeClock())
    ids = [new_id() for _ in range(30)]
    for rid in ids:
        await made.put("hot", rid, rid.encode(), ttl=60)
    for rid in ids:
        assert await made.get("hot", rid) == rid.encode()
        assert await made.get("cold", rid) is None
    await made.close()
    per_node = [int(node.call("DBSIZE")) for node in cluster_processes.nodes]
    assert sum(per_node) == 30
    assert all(count > 0 for count in per_node), per_node  # 30 random ids miss a node ~never


@pytest.mark.parametrize("backend", ["redis", "cluster"])
async def test_responses_stored_before_the_upgrade_are_still_found(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """A record in the earlier layout (under its owner's hash tag, the record alone) is read
    and deleted by its owner until it expires; another owner still finds nothing."""
    url = str(request.getfixturevalue(f"{backend}_url"))
    nodes = (
        [request.getfixturevalue("redis_process")]
        if backend == "redis"
        else request.getfixturevalue("cluster_processes").nodes
    )
    rid = new_id()
    written = [n.call("SET", legacy_key("acme", rid), "old", "PX", "60000") for n in nodes]
    assert "OK" in written  # on the node that holds its slot (the others answer MOVED)
    made = create_responses_store(Store(url=url, timeout_ms=2000), FakeClock())
    assert await made.get("acme", rid) == b"old"
    assert await made.get("other", rid) is None
    assert await made.delete("other", rid) is False
    assert await made.delete("acme", rid) is True
    assert await made.get("acme", rid) is None
    await made.close()


async def test_the_key_is_tagged_by_the_id(redis_process: RedisServer, redis_url: str) -> None:
    """The response's id is the key's hash tag; its owner is in the name, after it."""
    made = create_responses_store(Store(url=redis_url, timeout_ms=2000), FakeClock())
    rid = new_id()
    await made.put("a{b}", rid, b"x", ttl=60)
    assert redis_process.call("KEYS", "*") == f"gw:resp:{{{rid}}}:a%7Bb%7D" == key("a{b}", rid)
    await made.close()


async def test_each_call_on_a_silent_redis_fails_at_its_own_deadline() -> None:
    """A server that takes the commands and never answers: each call on the lane fails
    (``StoreError``) once ``store.timeout_ms`` has passed since it was sent, a call sent later
    at its own later deadline; none waits for the lane to give the connection up."""
    received: list[bytes] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.append(data)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    made = create_responses_store(
        Store(url=f"redis://127.0.0.1:{port}", timeout_ms=200), FakeClock()
    )
    loop = asyncio.get_running_loop()
    with pytest.raises(StoreError):  # the first call connects the lane
        await made.put("acme", new_id(), b"x", ttl=60)

    async def failed_at(started: list[float]) -> float:
        started.append(loop.time())
        with pytest.raises(StoreError):
            await made.put("acme", new_id(), b"x", ttl=60)
        return loop.time()

    first_started: list[float] = []
    first = asyncio.ensure_future(failed_at(first_started))
    deadline = loop.time() + 3.0
    while not first_started or loop.time() < first_started[0] + 0.1:  # the second, later
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    second_started: list[float] = []
    first_failed, second_failed = await asyncio.gather(first, failed_at(second_started))
    assert first_started[0] + 0.19 <= first_failed < first_started[0] + 2.0
    assert second_started[0] + 0.19 <= second_failed < second_started[0] + 2.0
    assert first_failed < second_failed
    await made.close()
    server.close()
