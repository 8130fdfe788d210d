"""The Redis store's lease sets and token minutes, newest first (redis_codec.py's key table): a
key's leases live in ``gw:{owner}:held:<keyId>``, scored minus (the lease's end x 10^6 plus the
microsecond it was taken in: calendar.lua lease_score), whole numbers, so a new or renewed
lease sorts first (a listpack's ZADD stops at its head) and a call's leases, tied, go in last
first; a minute of tokens in ``tpmr:k:<keyId>``, scored minus the admission time exactly, its
tokens in ``tpmrv:k:<keyId>``. (The rpm logs: test_redis_specific.)"""

from __future__ import annotations

import asyncio
import math

import redis as sync_redis

from gateway.clock import FakeClock
from gateway.records import Admission
from gateway.store.redis import RedisStore
from tests.store.test_contract import T0
from tests.store.test_redis_specific import uid


def score(end: int, taken: float) -> int:
    """A lease's score: its end (a whole second) and the microsecond of the time it was taken."""
    return -(end * 10**6 + math.floor(taken * 10**6 + 0.5) % 10**6)


async def test_leases_are_held_newest_first_under_their_own_name(redis_url: str) -> None:
    clock = FakeClock(T0 + 0.123456789)
    store = RedisStore(redis_url, 2000, clock=clock)
    client = sync_redis.Redis.from_url(redis_url)
    owner, key = uid("own"), uid("key")
    held = f"gw:{{{owner}}}:held:{key}"

    def leases() -> list[tuple[str, float]]:
        return [(m.decode(), s) for m, s in client.zrange(held, 0, -1, withscores=True)]

    try:
        ask = [Admission(f"r{n}", key, owner, concurrency=10) for n in range(5)]
        taken = []
        for a in ask[:3]:
            taken.append(clock.time())
            assert (await store.admit(a)).admitted
            clock.advance(0.5)  # the third in the next second, its lease a second longer
        ends = [int(T0) + 20, int(T0) + 20, int(T0) + 21]
        expected = [(f"r{n}", float(score(ends[n], taken[n]))) for n in (2, 1, 0)]
        assert leases() == expected
        assert not client.exists(f"gw:{{{owner}}}:lease:{key}")  # the layout before
        # one call's leases share a score: in request id order, and each first of the older
        now = clock.time()
        verdicts = await asyncio.gather(store.admit(ask[3]), store.admit(ask[4]))
        assert all(v.admitted for v in verdicts)
        tied = float(score(int(now) + 20, now))
        assert leases()[:2] == [("r3", tied), ("r4", tied)] and leases()[2:] == expected
        # a renewed lease ends 20 s after its renewal, and goes first
        clock.advance(5)
        await store.renew_leases([ask[0]])
        renewed = clock.time()
        assert leases()[0] == ("r0", float(score(int(renewed) + 20, renewed)))
        # expired leases are dropped when a key is next admitted (r0 renewed outlives them)
        clock.set(int(T0) + 21)
        assert (await store.admit(Admission("r9", key, owner, concurrency=3))).admitted
        assert [m for m, _ in leases()] == ["r9", "r0"]
    finally:
        client.close()
        await store.close()


async def test_token_minutes_are_held_newest_first_under_their_own_names(redis_url: str) -> None:
    clock = FakeClock(T0 + 0.123456789)
    store = RedisStore(redis_url, 2000, clock=clock)
    client = sync_redis.Redis.from_url(redis_url)
    owner, key = uid("own"), uid("key")
    try:
        taken = []
        for n in range(3):
            taken.append(clock.time())
            a = Admission(f"r{n}", key, owner, tpm=1000, plan_tpm=1000, reserve=10 + n)
            assert (await store.admit(a)).admitted
            clock.advance(0.5)
        for log, tokens in (("tpmr:k:" + key, "tpmrv:k:" + key), ("tpmr:o", "tpmrv:o")):
            entries = client.zrange(f"gw:{{{owner}}}:{log}", 0, -1, withscores=True)
            assert entries == [(f"r{n}".encode(), -taken[n]) for n in (2, 1, 0)], log
            held = client.hgetall(f"gw:{{{owner}}}:{tokens}")
            assert held == {b"r0": b"10", b"r1": b"11", b"r2": b"12", b"s": b"33"}, tokens
            assert not client.exists(f"gw:{{{owner}}}:{log.replace('tpmr', 'tpm')}")
        # the oldest leaves first: 980 more wait for r0's 10 (the minute after it was taken)
        v = await store.admit(Admission("r9", key, owner, tpm=1000, reserve=980))
        assert v.refused == "tpm" and abs(v.retry_after - (taken[0] + 60 - clock.time())) < 1
        clock.set(taken[0] + 60)
        assert (await store.admit(Admission("r9", key, owner, tpm=1000, reserve=977))).admitted
        assert client.hget(f"gw:{{{owner}}}:tpmrv:k:{key}", "s") == b"1000"
    finally:
        client.close()
        await store.close()
