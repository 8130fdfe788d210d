"""The admit and settle scripts' call layout (their headers): a call sends each key's KEYS and
each text once, however many of its admissions or settlements share them, and their numbers
packed; a call mixing keys, an admission made without the store (its settled marker) and a
presumed one settles as the in-process store does, one after the other."""

from __future__ import annotations

import pytest

from gateway.clock import FakeClock
from gateway.records import Admission, Settlement, Verdict
from gateway.store import redis_codec as codec
from gateway.store.base import LEASE_SECONDS, PRESUMED, Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.store.test_contract import T0


def test_an_admit_call_sends_a_key_and_a_set_of_limits_once() -> None:
    admissions = [Admission(f"r{i}", "k1", "alice", rpm=5, reserve=i) for i in range(10)]
    admissions.append(Admission("r10", "k1", "alice", rpm=0))  # a limit of 0 is not none
    admissions.append(Admission("r11", "k2", "alice"))
    keys, args = codec.admit_call(admissions, "")
    assert len(keys) == 2 * 9
    assert list(keys[:9]) == list(codec.admit_call(admissions[:1], "")[0])
    assert len(args) == 6 + len(admissions)
    assert list(args[6:]) == [a.request_id for a in admissions]
    assert len(args[4]) == 3 * codec.LIMITS.size  # rpm 5, rpm 0, none
    items = list(codec.ADMISSION.iter_unpack(args[5]))
    assert items[:2] == [(0, 0, 0, 0), (0, 0, 1, 0)]
    assert items[10:] == [(0, 1, 0, 0), (1, 2, 0, 0)]


def test_a_settle_call_sends_a_key_and_a_text_once() -> None:
    a1, a2 = Admission("r1", "k1", "alice", tpm=9), Admission("r2", "k2", "bob", reserve=4)
    done = [Settlement(a1, 20231114, 202311, "m", 3, 4, 12.5, finished_at=T0)]
    done.append(Settlement(a2, 20231114, 202311, "m", 1, 0, 0.1, api="responses", cost=7))
    done.append(Settlement(Admission("r3", "k1", "alice"), 0, 0, "m", 1, 1, 2.0))  # no store
    keys, args = codec.settle_calls(done, "")
    assert len(keys) == 3 * 9  # the one admitted without the store: a set of its own
    assert keys[9 * 2 + 3] == keys[3] + "r3"  # for its settled marker
    # the clock, the marker's TTL, the days kept, the settlements, then each text once
    texts = ["r1", "k1", "m", "r2", "k2", f"m{codec.API_MARK}responses", "r3"]
    assert list(args[4:]) == texts
    fields = list(codec.SETTLEMENT.iter_unpack(args[3]))
    assert fields[0] == (0, 0, 1, 2, 1, 0, 20231114, 202311, 7, 3, 4, 0, 12.5, 0, T0, 0, 0, 1, 0)
    assert fields[1][:6] == (1, 3, 4, 5, 1, 0) and fields[1][12] == 0.1
    assert fields[2][:6] == (2, 6, 1, 2, 1, 0)


def test_a_clusters_settle_call_names_each_row() -> None:
    done = [Settlement(Admission(f"r{i}", "k1", "alice"), 1, 1, "m", 1, 1, 1.0) for i in range(3)]
    done[1] = Settlement(done[1].admission, 1, 1, "m", 1, 1, 1.0, record=False)
    keys, args = codec.settle_calls(done, "", ["p:1", "p:2", "p:3"])
    assert len(keys) == 9 and keys[5] == codec.tag("alice") + "pending"
    assert list(args[4:]) == ["r0", "k1", "m", "p:1", "r1", "r2", "p:3"]
    modes = [(f[4], f[5]) for f in codec.SETTLEMENT.iter_unpack(args[3])]
    assert modes == [(2, 3), (0, 0), (2, 6)]  # a release has no row


@pytest.mark.parametrize("server", ["redis_url", "cluster_url"])
async def test_a_mixed_settle_call_settles_as_one_by_one(
    server: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(server))
    memory, redis = MemoryStore(FakeClock(T0)), RedisStore(url, 5000, clock=FakeClock(T0))
    try:
        assert await settled(memory) == await settled(redis)
    finally:
        await redis.close()


async def settled(store: Store) -> list[object]:
    """What ``store`` holds after one settle_many of an owner's keys k1 and k2 (admitted,
    admitted and presumed, admitted without the store), read back through admissions and usage."""
    limits = {"daily": 1000, "monthly": 2000, "tpm": 500, "plan_tpm": 800, "daily_budget": 900}
    asks = [
        Admission(f"r{i}", f"k{1 + i % 2}", "alice", 3, reserve=30, reserve_cost=40, **limits)
        for i in range(6)
    ]
    verdicts = [await store.admit(a) for a in asks]
    done = []
    for i, (a, v) in enumerate(zip(asks, verdicts, strict=True)):
        day, month = (PRESUMED, int(LEASE_SECONDS)) if i == 3 else (v.day, v.month)
        s = Settlement(a, day, month, f"m{i % 3}", 10 + i, i, 1.5 * i, error=i == 2, cost=7 * i)
        done.append(s)
    done.insert(2, Settlement(Admission("x", "k1", "alice", reserve=5), 0, 0, "m0", 7, 1, 0.3))
    done.append(Settlement(asks[5], verdicts[5].day, verdicts[5].month, "m1", 1, 1, 1.0))  # again
    await store.settle_many(done)
    after = [await store.admit(Admission(f"y{k}", k, "alice", **limits)) for k in ("k1", "k2")]
    usage = await store.usage("alice", ["k1", "k2"], 0, 99999999)
    return [*map(shown, after), *usage]


def shown(v: Verdict) -> tuple[object, ...]:
    return (v.admitted, v.tokens_remaining, v.requests_remaining, v.spent)


async def test_numbers_past_64_bits_pass_as_their_texts_did(redis_url: str) -> None:
    """A limit, or a count an upstream reports, past 64 bits reaches the scripts as the double a
    text's tonumber read (limits and amounts pack as doubles), not as a failed call."""
    store = RedisStore(redis_url, 5000, clock=FakeClock(T0))
    try:
        a = Admission("r1", "k1", "alice", daily=10**20, monthly=2**70, reserve=5)
        v = await store.admit(a)
        assert v.admitted
        await store.settle(Settlement(a, v.day, v.month, "m", 10**20, 1, 1.0, cost=10**19))
        [row] = await store.usage("alice", ["k1"], 0, 99999999)
        assert (row.requests, row.completion_tokens) == (1, 1)  # (a Lua '%d' of 1e20: as was)
    finally:
        await store.close()
