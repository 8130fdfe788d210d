"""The stored Responses' contract (``store.responses_store``), one suite over ``memory``,
``redis`` (a real server) and ``cluster`` (a real 3-master Redis Cluster): a record is the
owner's alone, expires after its TTL, is deleted once; owners with odd characters (hash tags,
separators) stay apart. In memory the TTL follows a ``FakeClock``; in Redis it is Redis' own
(real milliseconds), so that test polls with a deadline."""

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
