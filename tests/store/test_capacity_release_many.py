"""A release of more leases of one upstream than Lua's ``unpack`` takes at once (about 8,000:
a process closing while it holds a large cap's leases) gives back every one of them (found by
review: the script failed with "too many results to unpack", leaving them all held)."""

from __future__ import annotations

from gateway.store.capacity_redis import PREFIX, RedisLeaseStore
from tests.redis_server import RedisServer


async def test_ten_thousand_leases_of_one_upstream_go_back_in_one_release(
    redis_url: str, redis_process: RedisServer
) -> None:
    store = RedisLeaseStore(redis_url, 5000, 60.0)
    try:
        leases = [("big", f"l{i}") for i in range(10_000)]
        seconds, _ = await store.transport.call("TIME")
        expiry = int(seconds) * 1000 + 60_000
        for start in range(0, len(leases), 1000):
            members: list[str | int] = []
            for _, lease in leases[start : start + 1000]:
                members += [expiry, lease]
            await store.transport.call("ZADD", PREFIX + "big", *members)
        assert redis_process.call("ZCARD", PREFIX + "big") == "10000"
        await store.release(leases)
        assert redis_process.call("ZCARD", PREFIX + "big") == "0"
    finally:
        await store.close()
