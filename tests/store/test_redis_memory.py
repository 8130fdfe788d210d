"""Redis memory is bounded by what must be remembered, not by the number of requests (issue 23).

After thousands of admissions and settlements (retried settlements and refusals among them), with
the fake clock moved past every window many times, the keyspace holds the same keys it held once
the windows were first full: a bounded number per API key and owner, each of a bounded size, and
no key per request. This is the regression test of the per-request settled marker
(``gw:{owner}:done:<requestId>``, kept a day: ~290 bytes per request) that the lease replaced, and
of rolling logs that grew with traffic rather than with their limit.

Time is a ``FakeClock`` given to the store (its scripts read it), so windows pass instantly; Redis
TTLs run on real time and never fire here: what stays bounded is what the scripts themselves keep.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
import redis as sync_redis

from gateway.clock import FakeClock
from gateway.records import Admission, Settlement
from gateway.store.redis import RedisStore

START = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC: every round below falls on this UTC day
HIGH = 10**12
ROUNDS = 40
PER_ROUND = 10  # requests per key and round
STEP = 31.0  # fake seconds between rounds: two rounds pass a 60 s window
WARM = 4  # rounds after which every window has been full once
MAX_KEYS_PER_API_KEY = 10  # record, id, counters, leases, rpm log, usage day, days index, ...
MAX_KEYS_PER_OWNER = 6  # key set, plan, counters, last use, plan rpm log
MAX_BYTES_PER_KEY = 16_384  # the largest here is an rpm log of at most 20 entries

# (key id, owner, limits): an rpm log at its limit (refusals), none at all, a plan's log, ...
KEYS: list[tuple[str, str, dict[str, int]]] = [
    ("k1", "acme", {"rpm": 5, "concurrency": 4, "daily": HIGH}),
    ("k2", "acme", {"daily": HIGH, "monthly": HIGH}),
    ("k3", "globex", {"rpm": 1000, "plan_rpm": 1000}),
    ("k4", "globex", {"plan_rpm": 1000, "plan_monthly": HIGH}),
    ("k5", "initech", {}),
    ("k6", "initech", {"concurrency": 3}),
]
OWNERS = {owner for _, owner, _ in KEYS}


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[tuple[RedisStore, FakeClock]]:
    clock = FakeClock(START)
    backend = RedisStore(redis_url, 5000, clock)
    yield backend, clock
    await backend.close()


def keyspace(url: str) -> dict[str, int]:
    """Every key and its ``MEMORY USAGE`` (all elements counted)."""
    client = sync_redis.Redis.from_url(url)
    try:
        names = [n.decode() for n in client.scan_iter(count=1000)]
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.execute_command("MEMORY", "USAGE", name, "SAMPLES", "0")
        return {name: int(size or 0) for name, size in zip(names, pipe.execute(), strict=True)}
    finally:
        client.close()


async def round_of_requests(backend: RedisStore, ids: itertools.count[int]) -> int:
    """``PER_ROUND`` admissions on every key at once; each admitted one settled, a few twice
    (a retried write); the number admitted."""
    asks = [
        Admission(f"req_0123456789ab{next(ids):08x}", key, owner, reserve=40, **limits)
        for key, owner, limits in KEYS
        for _ in range(PER_ROUND)
    ]
    verdicts = await asyncio.gather(*(backend.admit(a) for a in asks))
    done = [
        Settlement(a, v.day, v.month, "m", 12, 20, 35.0, finished_at=START)
        for a, v in zip(asks, verdicts, strict=True)
        if v.admitted
    ]
    await backend.settle_many(done)
    await backend.settle_many(done[::7])  # retried: changes nothing
    return len(done)


async def test_memory_stays_bounded_by_keys_not_requests(
    store: tuple[RedisStore, FakeClock], redis_url: str
) -> None:
    backend, clock = store
    ids = itertools.count()
    admitted = 0
    warm: dict[str, int] = {}
    for n in range(ROUNDS):
        clock.advance(STEP)
        admitted += await round_of_requests(backend, ids)
        if n + 1 == WARM:
            warm = keyspace(redis_url)
    end = keyspace(redis_url)
    requests = ROUNDS * PER_ROUND * len(KEYS)
    assert admitted > requests // 2  # most were admitted (k1's rpm refuses some)

    # No key made by a request outlives it: the keys now are the keys once the windows were full.
    assert sorted(set(end) - set(warm)) == []
    assert len(end) <= MAX_KEYS_PER_API_KEY * len(KEYS) + MAX_KEYS_PER_OWNER * len(OWNERS)
    assert not [name for name in end if ":done:" in name]
    # ... and none of them grew with the requests: each is small, and all together as at first.
    assert max(end.values()) <= MAX_BYTES_PER_KEY
    assert sum(end.values()) <= sum(warm.values()) * 1.10 + 1024
    assert sum(end.values()) <= 4096 * len(KEYS) + 2048 * len(OWNERS)


async def test_logs_hold_what_their_limits_allow(
    store: tuple[RedisStore, FakeClock], redis_url: str
) -> None:
    """An rpm log never holds more than its limit; a key without an rpm limit keeps no log;
    every settled request's lease is gone."""
    backend, clock = store
    ids = itertools.count()
    for _ in range(6):
        clock.advance(STEP)
        await round_of_requests(backend, ids)
    client = sync_redis.Redis.from_url(redis_url)
    try:
        assert client.zcard("gw:{acme}:rpmr:k:k1") == 5  # at its limit, refusing the rest
        assert client.zcard("gw:{globex}:rpmr:k:k3") <= 2 * PER_ROUND  # the last 60 s
        assert client.zcard("gw:{globex}:rpmr:o") <= 4 * PER_ROUND  # k3's and k4's, 60 s
        for key, owner, limits in KEYS:
            if "rpm" not in limits:
                assert not client.exists(f"gw:{{{owner}}}:rpmr:k:{key}"), key
            assert not client.exists(f"gw:{{{owner}}}:held:{key}"), key  # every one settled
        assert not client.exists("gw:{acme}:rpmr:o")  # no plan rpm: no owner log
    finally:
        client.close()
