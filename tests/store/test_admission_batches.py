"""Admissions asked for in one turn of the loop go to Redis as one script call, and each is
decided exactly as the in-process store decides them one after the other (the reference every
store follows): the same admitted set, the same refusal, headers and counters per request."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.records import Admission, Verdict
from gateway.store.memory import MemoryStore
from gateway.store.redis import ADMIT_BATCH, RedisStore
from tests.redis_server import RedisServer
from tests.store.test_contract import T0

HYPOTHESIS = settings(
    deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_ids = itertools.count()

_limit = st.none() | st.integers(0, 4)
_tokens = st.none() | st.integers(0, 400)
_admission = st.builds(
    lambda key, reserve, cost, limits: Admission(
        request_id=f"r{next(_ids)}",
        key_id=key[0],
        owner=key[1],
        reserve=reserve,
        reserve_cost=cost,
        **limits,
    ),
    st.sampled_from([("k1", "alice"), ("k2", "alice"), ("k3", "bob")]),  # a key has one owner
    st.integers(0, 120),
    st.integers(0, 50),
    st.fixed_dictionaries(
        {
            "rpm": _limit,
            "concurrency": _limit,
            "daily": _tokens,
            "monthly": _tokens,
            "plan_rpm": _limit,
            "plan_monthly": _tokens,
            "tpm": _tokens,
            "daily_budget": st.none() | st.integers(0, 120),
            "monthly_budget": st.none() | st.integers(0, 120),
            "plan_tpm": _tokens,
            "plan_budget": st.none() | st.integers(0, 200),
        }
    ),
)


def shown(v: Verdict) -> tuple[object, ...]:
    """What a client and the alerts see of a verdict (times to the millisecond)."""
    return (
        v.admitted,
        v.refused,
        v.retry_after,
        v.requests_limit,
        v.requests_remaining,
        round(v.requests_reset, 3),
        v.tokens_limit,
        v.tokens_remaining,
        round(v.tokens_reset, 3),
        v.day,
        v.month,
        v.spent,
    )


def evalsha_calls(server: RedisServer) -> int:
    for line in server.call("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def warm(store: RedisStore) -> None:
    """The lane connected and the script loaded (a first call meets NOSCRIPT), on an owner of
    its own: what is counted next is the batch alone."""
    await store.admit(Admission(request_id="warm", key_id="w", owner="warm-up"))


@HYPOTHESIS
@given(batch=st.lists(_admission, min_size=1, max_size=12))
async def test_a_batch_decides_as_one_by_one(
    redis_process: RedisServer, batch: list[Admission]
) -> None:
    assert redis_process.call("FLUSHALL") == "OK"
    clock = FakeClock(T0)
    reference = MemoryStore(clock)
    expected = [shown(await reference.admit(a)) for a in batch]
    store = RedisStore(f"redis://127.0.0.1:{redis_process.port}", 5000, clock=clock)
    try:
        await warm(store)
        before = evalsha_calls(redis_process)
        got = await asyncio.gather(*(store.admit_now(a) for a in batch))
        assert evalsha_calls(redis_process) - before <= 1 + len(batch) // ADMIT_BATCH
        assert [shown(v) for v in got] == expected
        # and the counters it left are those the one-by-one admissions leave
        again = [dataclasses.replace(a, request_id=f"r{next(_ids)}") for a in batch]
        assert [shown(v) for v in await asyncio.gather(*map(store.admit_now, again))] == [
            shown(await reference.admit(a)) for a in again
        ]
    finally:
        await store.close()


@pytest.mark.parametrize("count", [1, ADMIT_BATCH - 1, ADMIT_BATCH + 5])
async def test_rpm_exact_in_batches(redis_process: RedisServer, count: int) -> None:
    """One key with rpm 10 and concurrency 7 asked ``count`` times at once: exactly
    min(count, 7) admitted, in the order asked, in ceil(count / ADMIT_BATCH) calls."""
    assert redis_process.call("FLUSHALL") == "OK"
    store = RedisStore(f"redis://127.0.0.1:{redis_process.port}", 5000, clock=FakeClock(T0))
    try:
        await warm(store)
        before = evalsha_calls(redis_process)
        asks = [
            Admission(request_id=f"x{i}", key_id="k", owner="o", rpm=10, concurrency=7)
            for i in range(count)
        ]
        verdicts = await asyncio.gather(*(store.admit_now(a) for a in asks))
        admitted = [v.admitted for v in verdicts]
        assert admitted == [i < 7 for i in range(count)]
        assert {v.refused for v in verdicts[7:]} <= {"concurrency"}
        assert evalsha_calls(redis_process) - before == -(-count // ADMIT_BATCH)
    finally:
        await store.close()
