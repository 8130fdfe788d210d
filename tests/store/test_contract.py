"""The store contract (``store.base``), one suite over every backend: ``memory``, ``redis`` (a real
server) and ``cluster`` (a real 3-master Redis Cluster). Time comes from a ``FakeClock`` in every
backend (the Redis store's test hook), so windows, rollovers and leases are exact and instant."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.records import (
    LATENCY_BOUNDS_MS,
    Admission,
    KeyRecord,
    Merge,
    Settlement,
    UsageDay,
    Verdict,
)
from gateway.store.base import LEASE_SECONDS, PRESUMED, KeyExists, Store
from gateway.store.memory import MemoryStore

BACKENDS = ["memory", "redis", "cluster"]
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
_ids = itertools.count()


def at(text: str) -> float:
    """An ISO UTC time ("2024-02-29T23:59:30.25") as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def rid() -> str:
    return f"req-{next(_ids)}"


def record(key_id: str, owner: str = "alice", **fields: object) -> KeyRecord:
    digest = hashlib.sha256(f"{owner}/{key_id}".encode()).hexdigest()
    return KeyRecord(id=key_id, owner=owner, key_hash=digest, **fields)  # type: ignore[arg-type]


def ask(key: str = "k1", owner: str = "alice", /, **limits: int) -> Admission:
    return Admission(request_id=rid(), key_id=key, owner=owner, **limits)


def settlement(
    a: Admission, v: Verdict, used: int = 0, model: str = "m", **extra: object
) -> Settlement:
    return Settlement(
        admission=a,
        day=v.day,
        month=v.month,
        model=model,
        prompt_tokens=extra.pop("prompt", used),  # type: ignore[arg-type]
        completion_tokens=extra.pop("completion", 0),  # type: ignore[arg-type]
        latency_ms=extra.pop("latency", 10.0),  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend's URL (a fresh Redis database or cluster for each test)."""
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def store(backend: str, clock: FakeClock) -> AsyncIterator[Store]:
    if backend == "memory://":
        made: Store = MemoryStore(clock)
    else:
        from gateway.store.redis import RedisStore

        made = RedisStore(backend, 5000, clock=clock)
    yield made
    await made.close()


# -- keys -----------------------------------------------------------------------------------
async def test_keys_insert_get_list(store: Store) -> None:
    a1 = record("k1", name="one", created_at=1.0, rpm_limit=5, models=frozenset({"m"}))
    a2 = record("k2", created_at=2.0, permissions=frozenset({"chat", "admin"}))
    b1 = record("k3", owner="bob", created_at=3.0)
    for r in (a1, a2, b1):
        assert await store.insert_key(r, None)
    assert await store.get_key_by_hash(a1.key_hash) == a1
    assert await store.get_key("k2") == a2
    assert await store.get_key("missing") is None
    assert await store.get_key_by_hash("0" * 64) is None
    assert sorted((await store.list_keys("alice")), key=lambda r: r.id) == [a1, a2]
    assert await store.list_keys("bob") == [b1]
    assert await store.list_keys("nobody") == []
    with pytest.raises(KeyExists):
        await store.insert_key(record("k1", owner="carol"), None)  # id taken
    with pytest.raises(KeyExists):
        await store.insert_key(KeyRecord(id="k9", owner="alice", key_hash=a1.key_hash), None)
    assert len(await store.list_keys("alice")) == 2
    assert await store.list_keys("carol") == []


async def test_record_round_trips_every_field(store: Store) -> None:
    import ipaddress

    full = KeyRecord(
        id="kf",
        owner="o",
        key_hash="f" * 64,
        key_prefix="sk_gw_ab",
        name="n",
        description="d é",
        revoked=True,
        permissions=frozenset({"chat", "embeddings"}),
        models=frozenset({"a", "b"}),
        ip_whitelist=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")),
        rpm_limit=1,
        max_concurrency=2,
        daily_limit=3,
        monthly_limit=4,
        expires_at=1.5,
        created_at=0.25,
        updated_at=0.5,
        revoked_at=0.75,
        revoked_reason="why",
    )
    assert await store.insert_key(full, 1)
    assert await store.get_key("kf") == full


async def test_replace_with_old_hash_stops_the_old_hash(store: Store) -> None:
    old = record("k1", name="before")
    assert await store.insert_key(old, None)
    renamed = old.evolve(name="after")
    await store.replace_key(renamed)
    assert await store.get_key_by_hash(old.key_hash) == renamed
    regenerated = renamed.evolve(key_hash="e" * 64)
    await store.replace_key(regenerated, old_hash=old.key_hash)
    assert await store.get_key_by_hash(old.key_hash) is None
    assert await store.get_key_by_hash("e" * 64) == regenerated
    assert await store.get_key("k1") == regenerated
    assert await store.list_keys("alice") == [regenerated]


async def test_delete_key(store: Store) -> None:
    r = record("k1")
    assert await store.insert_key(r, 1)
    await store.delete_key(r)
    assert await store.get_key("k1") is None
    assert await store.get_key_by_hash(r.key_hash) is None
    assert await store.list_keys("alice") == []
    assert await store.insert_key(r, 1)  # the slot is free again


async def test_plans(store: Store) -> None:
    assert await store.get_plan("alice") is None
    await store.set_plan("alice", "pro")
    await store.set_plan("alice", "team")
    assert await store.get_plan("alice") == "team"
    assert await store.get_plan("bob") is None


async def test_owner_budgets(store: Store) -> None:
    assert await store.get_owner_budget("alice") is None
    await store.set_owner_budget("alice", 50_000_000)
    await store.set_owner_budget("bob", 1)
    assert (await store.get_owner_budget("alice"), await store.get_owner_budget("bob")) == (
        50_000_000,
        1,
    )
    await store.set_owner_budget("alice", None)
    assert await store.get_owner_budget("alice") is None
    assert await store.get_owner_budget("bob") == 1


@pytest.mark.parametrize("max_keys", [1, 5])
async def test_max_keys_is_atomic_under_concurrent_inserts(store: Store, max_keys: int) -> None:
    results = await asyncio.gather(
        *(store.insert_key(record(f"k{i}"), max_keys) for i in range(20))
    )
    assert results.count(True) == max_keys
    assert len(await store.list_keys("alice")) == max_keys
    assert await store.insert_key(record("other", owner="bob"), max_keys)


async def test_unlimited_keys(store: Store) -> None:
    assert all(await asyncio.gather(*(store.insert_key(record(f"k{i}"), None) for i in range(8))))
    assert len(await store.list_keys("alice")) == 8


async def test_last_use_is_merged_into_records(store: Store, clock: FakeClock) -> None:
    r = record("k1", created_at=1.0)
    assert await store.insert_key(r, None)
    a = ask("k1")
    v = await store.admit(a)
    await store.settle(settlement(a, v, 5, finished_at=T0 + 1.5))
    assert (await store.get_key("k1")).last_used_at == T0 + 1.5  # type: ignore[union-attr]
    assert (await store.get_key_by_hash(r.key_hash)).last_used_at == T0 + 1.5  # type: ignore[union-attr]
    assert [k.last_used_at for k in await store.list_keys("alice")] == [T0 + 1.5]


@pytest.mark.parametrize("owner", ["}{", "a}b", "{x}", "", "a:b%7D", "ünï"])
async def test_any_owner_string_works(store: Store, owner: str) -> None:
    r = record("k1", owner=owner)
    assert await store.insert_key(r, 1)
    assert await store.list_keys(owner) == [r]
    await store.set_plan(owner, "p")
    assert await store.get_plan(owner) == "p"
    a = ask("k1", owner, rpm=1, concurrency=1, daily=10, plan_rpm=5, plan_monthly=10, reserve=1)
    v = await store.admit(a)
    assert v.admitted
    await store.settle(settlement(a, v, 1, finished_at=T0))
    assert [u.requests for u in await store.usage(owner, ["k1"], 0, 99999999)] == [1]
    assert (await store.admit(ask("k1", owner, rpm=1))).refused == "rpm"


# -- rpm ------------------------------------------------------------------------------------
async def test_rpm_exact(store: Store, clock: FakeClock) -> None:
    for i in range(5):
        clock.set(T0 + i)
        v = await store.admit(ask(rpm=5))
        assert (v.admitted, v.requests_limit, v.requests_remaining) == (True, 5, 4 - i)
        assert v.requests_reset == 60 - i
    clock.set(T0 + 10.5)
    v = await store.admit(ask(rpm=5))
    assert (v.admitted, v.refused, v.retry_after) == (False, "rpm", 50)  # 60 - 10.5, rounded up
    assert (v.requests_remaining, v.requests_reset) == (0, 49.5)
    clock.set(T0 + 59.999)
    assert not (await store.admit(ask(rpm=5))).admitted
    clock.set(T0 + 60)  # the first admission stops counting at T0 + 60
    assert (await store.admit(ask(rpm=5))).admitted
    v = await store.admit(ask(rpm=5))
    assert (v.refused, v.retry_after) == ("rpm", 1)  # T0 + 1 leaves at T0 + 61


@pytest.mark.parametrize("per_minute", [1, 5, 12, 60])
async def test_a_steady_stream_at_the_limit_is_never_refused(
    store: Store, clock: FakeClock, per_minute: int
) -> None:
    step = 60 // per_minute
    for i in range(3 * per_minute):
        clock.set(T0 + i * step)
        v = await store.admit(ask(rpm=per_minute))
        assert v.admitted, (i, v)
    assert not (await store.admit(ask(rpm=per_minute))).admitted  # one more is too many


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    limit=st.integers(1, 4),
    gaps=st.lists(st.integers(0, 40 * 4), min_size=1, max_size=14),
)
async def test_rpm_matches_a_sliding_window_oracle(
    store: Store, clock: FakeClock, limit: int, gaps: list[int]
) -> None:
    key, base = f"k{next(_ids)}", clock.time() + 10_000  # a fresh key and time per example
    admitted: list[float] = []
    now = base
    for gap in gaps:
        now += gap / 4  # quarter seconds: exact in binary
        clock.set(now)
        inside = [t for t in admitted if t > now - 60]
        v = await store.admit(ask(key, rpm=limit))
        assert v.admitted == (len(inside) < limit)
        if v.admitted:
            admitted.append(now)
            inside.append(now)
        else:
            leaving = inside[len(inside) - limit]
            assert v.retry_after == max(1, math.ceil(leaving + 60 - now))
        assert v.requests_remaining == max(0, limit - len(inside))
        assert v.requests_reset == ((inside[0] + 60 - now) if inside else 0.0)


# -- concurrency ----------------------------------------------------------------------------
async def test_concurrency_leases_and_settle(store: Store, clock: FakeClock) -> None:
    first, second = ask(concurrency=2), ask(concurrency=2)
    v1, v2 = await store.admit(first), await store.admit(second)
    assert v1.admitted and v2.admitted
    v = await store.admit(ask(concurrency=2))
    assert (v.admitted, v.refused, v.retry_after) == (False, "concurrency", 1)
    await store.settle(settlement(first, v1))
    assert (await store.admit(ask(concurrency=2))).admitted
    assert not (await store.admit(ask(concurrency=2))).admitted


async def test_leases_expire(store: Store, clock: FakeClock) -> None:
    assert (await store.admit(ask(concurrency=1))).admitted
    clock.advance(LEASE_SECONDS - 0.5)
    assert (await store.admit(ask(concurrency=1))).refused == "concurrency"
    clock.advance(0.5)  # the lease ends at admission + LEASE_SECONDS
    assert (await store.admit(ask(concurrency=1))).admitted


async def test_a_lease_ends_on_the_whole_second(store: Store, clock: FakeClock) -> None:
    """Taken at a fraction of a second, a lease ends on the whole second before admission +
    LEASE_SECONDS, in every store alike (Redis keeps integer scores as integers)."""
    clock.advance(0.7)
    assert (await store.admit(ask(concurrency=1))).admitted
    clock.advance(LEASE_SECONDS - 0.7 - 0.01)
    assert (await store.admit(ask(concurrency=1))).refused == "concurrency"
    clock.advance(0.01)  # T0 + LEASE_SECONDS: floor(T0 + 0.7 + LEASE_SECONDS)
    assert (await store.admit(ask(concurrency=1))).admitted


async def test_renewed_leases_outlive_their_first_expiry(store: Store, clock: FakeClock) -> None:
    running = ask(concurrency=1)
    assert (await store.admit(running)).admitted
    clock.advance(LEASE_SECONDS * 0.8)
    await store.renew_leases([running, ask("other", "bob")])  # unknown requests are ignored
    clock.advance(LEASE_SECONDS - 1)
    assert (await store.admit(ask(concurrency=1))).refused == "concurrency"
    clock.advance(1)
    assert (await store.admit(ask(concurrency=1))).admitted


async def test_an_expired_lease_is_not_renewed(store: Store, clock: FakeClock) -> None:
    """A process that renews too late must not resurrect a slot another request now holds."""
    late = ask(concurrency=1)
    assert (await store.admit(late)).admitted
    clock.advance(LEASE_SECONDS + 1)
    await store.renew_leases([late])
    assert (await store.admit(ask(concurrency=1))).admitted


async def test_leases_are_per_key(store: Store) -> None:
    assert (await store.admit(ask("k1", concurrency=1))).admitted
    assert (await store.admit(ask("k2", concurrency=1))).admitted
    assert not (await store.admit(ask("k1", concurrency=1))).admitted


# -- token quotas ---------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "until"), [("daily", 6400.0), ("monthly", 1388800.0)])
async def test_reservation_exactly_to_the_limit(
    store: Store, clock: FakeClock, kind: str, until: float
) -> None:
    v = await store.admit(ask(**{kind: 100, "reserve": 100}))
    assert (v.admitted, v.tokens_limit, v.tokens_remaining, v.tokens_reset) == (True, 100, 0, until)
    v = await store.admit(ask(**{kind: 100, "reserve": 1}))
    assert (v.admitted, v.refused, v.retry_after) == (False, kind, math.ceil(until))
    assert (await store.admit(ask(**{kind: 100, "reserve": 0}))).admitted


async def test_settle_moves_counters_by_used_minus_reserved(store: Store) -> None:
    a = ask(daily=100, monthly=1000, plan_monthly=500, reserve=60)
    v = await store.admit(a)
    assert (v.tokens_limit, v.tokens_remaining) == (100, 40)
    await store.settle(settlement(a, v, prompt=4, completion=6))  # used 10
    v = await store.admit(ask(daily=100, reserve=90))
    assert (v.admitted, v.tokens_remaining) == (True, 0)
    assert (await store.admit(ask(daily=100, reserve=1))).refused == "daily"
    v = await store.admit(ask(monthly=1000, plan_monthly=500))
    assert (v.tokens_limit, v.tokens_remaining) == (500, 400)  # the tightest: the plan's
    big = ask("k2", reserve=5)
    v = await store.admit(big)
    await store.settle(settlement(big, v, prompt=50))  # used more than reserved
    v = await store.admit(ask("k2", daily=1000))
    assert v.tokens_remaining == 950


async def test_counters_count_without_limits(store: Store) -> None:
    a = ask(reserve=30)
    await store.admit(a)
    v = await store.admit(ask(daily=100, monthly=50))
    assert (v.tokens_limit, v.tokens_remaining) == (50, 20)


async def test_settle_after_midnight_leaves_the_new_day_alone(
    store: Store, clock: FakeClock
) -> None:
    clock.set(at("2024-02-29T23:59:50"))
    first = ask(daily=100, monthly=1000, reserve=50)
    v1 = await store.admit(first)
    assert (v1.day, v1.month) == (20240229, 202402)
    clock.set(at("2024-03-01T00:00:10"))
    v2 = await store.admit(ask(daily=100, reserve=100))
    assert (v2.admitted, v2.day, v2.month, v2.tokens_remaining) == (True, 20240301, 202403, 0)
    await store.settle(settlement(first, v1, used=0))  # its day (and month) are gone
    assert (await store.admit(ask(daily=100, reserve=1))).refused == "daily"
    v = await store.admit(ask(monthly=1000))
    assert v.tokens_remaining == 900


async def test_settle_in_the_same_month_after_midnight_moves_the_month(
    store: Store, clock: FakeClock
) -> None:
    clock.set(at("2024-03-14T23:59:50"))
    first = ask(daily=100, monthly=1000, reserve=50)
    v1 = await store.admit(first)
    clock.set(at("2024-03-15T00:00:10"))
    await store.settle(settlement(first, v1, used=10))
    v = await store.admit(ask(monthly=1000))
    assert v.tokens_remaining == 990
    v = await store.admit(ask(daily=100))
    assert v.tokens_remaining == 100


async def test_a_presumed_release_gives_back_in_the_periods_of_its_admission(
    store: Store, clock: FakeClock
) -> None:
    """An admission whose reply was lost is released with no verdict of its own (``PRESUMED``):
    the store dates it by its lease, so past midnight the refund goes to the day it was taken
    from (the new day's counter untouched) and to its month; one never admitted changes
    nothing (found by review: the gateway's clock dated it, and missed the day)."""
    clock.set(at("2024-03-14T23:59:55"))
    lost = ask(daily=100, monthly=1000, reserve=50)
    assert (await store.admit(lost)).admitted  # its reply never reached the gateway
    clock.set(at("2024-03-15T00:00:05"))
    today = ask(daily=100, reserve=30)
    assert (await store.admit(today)).admitted
    unknown = ask(daily=100, reserve=70)  # never admitted (the call did not run)
    for a in (lost, unknown):
        presumed = Verdict(admitted=True, day=PRESUMED, month=int(LEASE_SECONDS))
        await store.settle(settlement(a, presumed, record=False))
    v = await store.admit(ask(monthly=1000))
    assert v.tokens_remaining == 970  # the lost 50 given back to the month; today's 30 held
    v = await store.admit(ask(daily=100))
    assert v.tokens_remaining == 70  # today: only today's 30


@pytest.mark.parametrize(
    ("now", "kind", "retry", "reset"),
    [
        ("2024-02-29T23:59:30.25", "daily", 30, 29.75),
        ("2023-12-31T23:59:59.5", "daily", 1, 0.5),
        ("2024-11-30T23:00:00", "monthly", 3600, 3600.0),
        ("2024-12-31T12:00:00", "monthly", 43200, 43200.0),
        ("2024-02-01T00:00:00", "monthly", 29 * 86400, 29 * 86400.0),
    ],
)
async def test_retry_after_at_midnight_and_month_end(
    store: Store, clock: FakeClock, now: str, kind: str, retry: int, reset: float
) -> None:
    clock.set(at(now))
    v = await store.admit(ask(**{kind: 10, "reserve": 11}))
    assert (v.refused, v.retry_after, v.tokens_reset) == (kind, retry, reset)


async def test_month_and_year_rollover(store: Store, clock: FakeClock) -> None:
    clock.set(at("2024-12-31T23:59:59"))
    v = await store.admit(ask(monthly=10, plan_monthly=10, daily=10, reserve=10))
    assert (v.admitted, v.day, v.month) == (True, 20241231, 202412)
    assert (await store.admit(ask(monthly=10, reserve=1))).refused == "monthly"
    clock.advance(1)
    v = await store.admit(ask(monthly=10, plan_monthly=10, daily=10, reserve=10))
    assert (v.admitted, v.day, v.month, v.tokens_reset) == (True, 20250101, 202501, 86400.0)


# -- plan limits across an owner's keys -----------------------------------------------------
async def test_plan_rpm_across_two_keys(store: Store, clock: FakeClock) -> None:
    assert (await store.admit(ask("k1", plan_rpm=3))).admitted
    clock.advance(1)
    assert (await store.admit(ask("k2", plan_rpm=3))).admitted
    v = await store.admit(ask("k1", rpm=10, plan_rpm=3))
    assert (v.admitted, v.requests_limit, v.requests_remaining) == (True, 10, 9)
    v = await store.admit(ask("k2", plan_rpm=3))
    assert (v.refused, v.retry_after, v.requests_limit, v.requests_remaining) == (
        "plan_rpm",
        59,
        3,
        0,
    )
    assert (await store.admit(ask("k1", "bob", plan_rpm=3))).admitted


async def test_plan_monthly_across_two_keys(store: Store) -> None:
    assert (await store.admit(ask("k1", plan_monthly=100, reserve=60))).admitted
    v = await store.admit(ask("k2", plan_monthly=100, reserve=40))
    assert (v.admitted, v.tokens_limit, v.tokens_remaining) == (True, 100, 0)
    v = await store.admit(ask("k2", plan_monthly=100, reserve=1))
    assert (v.refused, v.retry_after) == ("plan_monthly", 1388800)
    assert (await store.admit(ask("k3", "bob", plan_monthly=100, reserve=100))).admitted


# -- all or nothing -------------------------------------------------------------------------
async def test_a_refusal_takes_nothing(store: Store) -> None:
    every = {"rpm": 1, "concurrency": 1, "daily": 10, "monthly": 10, "plan_rpm": 1}
    v = await store.admit(ask(**every, plan_monthly=5, reserve=10))
    assert v.refused == "plan_monthly"
    assert (v.requests_remaining, v.tokens_remaining) == (1, 5)
    v = await store.admit(ask(**every, reserve=10))  # would fail had anything been kept
    assert v.admitted


async def test_a_plan_rpm_refusal_leaves_no_entry_lease_or_reservation(store: Store) -> None:
    assert (await store.admit(ask("k2", plan_rpm=1))).admitted
    key_limits = {"rpm": 1, "concurrency": 1, "daily": 10, "monthly": 10, "reserve": 10}
    assert (await store.admit(ask("k1", **key_limits, plan_rpm=1))).refused == "plan_rpm"
    assert (await store.admit(ask("k1", **key_limits))).admitted


@pytest.mark.parametrize(
    ("limits", "refused"),
    [
        ({"rpm": 1, "concurrency": 1, "daily": 0, "reserve": 1}, "daily"),
        ({"concurrency": 1, "monthly": 0, "plan_rpm": 1, "reserve": 1}, "monthly"),
        ({"daily": 5, "monthly": 5, "plan_monthly": 5, "reserve": 6}, "daily"),
        ({"monthly": 5, "plan_monthly": 4, "reserve": 5}, "plan_monthly"),
    ],
)
async def test_the_first_failing_check_is_reported(
    store: Store, limits: dict[str, int], refused: str
) -> None:
    v = await store.admit(ask(**limits))
    assert v.refused == refused
    assert (await store.admit(ask(rpm=1, concurrency=1, plan_rpm=1))).admitted


# -- settle ---------------------------------------------------------------------------------
async def test_settle_is_idempotent(store: Store, clock: FakeClock) -> None:
    a = ask(concurrency=1, daily=100, reserve=50)
    v = await store.admit(a)
    s = settlement(a, v, 10, finished_at=T0)
    await store.settle(s)
    await store.settle(s)
    await store.settle_many([s, s])
    assert (await store.admit(ask(daily=100))).tokens_remaining == 90
    [row] = await store.usage("alice", ["k1"], 0, 99999999)
    assert (row.requests, row.prompt_tokens) == (1, 10)


async def test_settle_many(store: Store) -> None:
    batch = []
    for owner, key in [("alice", "k1"), ("alice", "k2"), ("bob", "k3")]:
        a = ask(key, owner, concurrency=1, daily=100, reserve=20)
        v = await store.admit(a)
        batch.append(settlement(a, v, 5, finished_at=T0))
    await store.settle_many(batch)
    await store.settle_many([])
    for owner, key in [("alice", "k1"), ("alice", "k2"), ("bob", "k3")]:
        v = await store.admit(ask(key, owner, concurrency=1, daily=100))
        assert (v.admitted, v.tokens_remaining) == (True, 95)
        assert [u.requests for u in await store.usage(owner, [key], 0, 99999999)] == [1]


async def test_settle_without_a_verdict_records_usage_and_charges_today(store: Store) -> None:
    """A request admitted while the store was down: its usage is written once (however often
    the settlement is retried), and its tokens count against the periods current then."""
    a = ask(daily=100, reserve=50)
    s = Settlement(a, 0, 0, "m", 1, 2, 3.0, finished_at=T0)  # admitted while the store was down
    await store.settle(s)
    await store.settle_many([s, s])
    assert (await store.admit(ask(daily=100))).tokens_remaining == 97
    assert [u.requests for u in await store.usage("alice", ["k1"], 0, 99999999)] == [1]


async def test_a_release_gives_back_without_recording(store: Store) -> None:
    """An admission nobody was served by (its caller timed out or left) is released: slot and
    reservation back, no usage row."""
    a = ask(concurrency=1, daily=100, reserve=60)
    v = await store.admit(a)
    await store.settle(Settlement(a, v.day, v.month, "m", 0, 0, 1.0, record=False))
    again = await store.admit(ask(concurrency=1, daily=100, reserve=100))
    assert again.admitted and again.tokens_remaining == 0
    assert await store.usage("alice", ["k1"], 0, 99999999) == []


async def test_usage_rows_by_day_and_model(store: Store, clock: FakeClock) -> None:
    day1, day2 = at("2024-03-01T12:00:00"), at("2024-03-02T00:00:00")
    runs = [
        ("k1", "gpt", day1, 10, 5, 20.0, False),
        ("k1", "gpt", day1, 1, 2, 30.5, True),
        ("k1", "llama", day1, 3, 0, 700_000.0, False),
        ("k1", "gpt", day2, 7, 7, 100.0, False),
        ("k2", "gpt", day1, 1, 1, 25.0, False),
    ]
    for key, model, finished, prompt, completion, latency, error in runs:
        a = ask(key)
        v = await store.admit(a)
        await store.settle(
            Settlement(
                a, v.day, v.month, model, prompt, completion, latency, error, False, finished
            )
        )
    rows = await store.usage("alice", ["k2", "k1", "k1"], 20240301, 20240302)
    got = [
        (r.date, r.key_id, r.model, r.requests, r.prompt_tokens, r.completion_tokens, r.errors)
        for r in rows
    ]
    assert got == [
        ("2024-03-01", "k1", "gpt", 2, 11, 7, 1),
        ("2024-03-01", "k1", "llama", 1, 3, 0, 0),
        ("2024-03-02", "k1", "gpt", 1, 7, 7, 0),
        ("2024-03-01", "k2", "gpt", 1, 1, 1, 0),
    ]
    assert rows[0].latency_ms_total == 50.5
    assert len(rows[0].latency_buckets) == len(LATENCY_BOUNDS_MS) + 1
    assert (rows[0].latency_buckets[0], rows[0].latency_buckets[1]) == (1, 1)  # ≤25, ≤50
    assert rows[1].latency_buckets[-1] == 1  # beyond the last bound
    assert sum(rows[2].latency_buckets) == 1
    assert [r.date for r in await store.usage("alice", ["k1"], 20240302, 20240310)] == [
        "2024-03-02"
    ]
    assert await store.usage("alice", ["k1"], 20240303, 20240310) == []
    assert await store.usage("bob", ["k1"], 0, 99999999) == []
    assert await store.usage("alice", [], 0, 99999999) == []


async def test_usage_given_to_a_sink_is_the_same_rows_and_merges_by_model(
    store: Store, clock: FakeClock
) -> None:
    """A report may take the rows part by part (``sink``): the parts together are the rows
    returned without one, and ``Merge`` sums them per model and API (and key or day, if kept)."""
    for n in range(12):  # 3 keys x 4 days, two models
        key, finished = f"k{n % 3}", at(f"2024-03-{1 + n % 4:02d}T12:00:00")
        a = ask(key)
        v = await store.admit(a)
        model = "gpt" if n % 2 else "llama"
        await store.settle(
            Settlement(a, v.day, v.month, model, n, 2 * n, 10.0 * n, n == 5, False, finished)
        )
    keys = ["k0", "k1", "k2"]
    whole = await store.usage("alice", keys, 20240301, 20240304)
    parts: list[list[UsageDay]] = []
    assert await store.usage("alice", keys, 20240301, 20240304, parts.append) == []
    assert [r for part in parts for r in part] == whole
    merged = Merge(by_key=False, by_day=False)
    for part in parts:
        merged.add(part)
    assert {
        (r.model, r.requests, r.prompt_tokens, r.completion_tokens, r.errors) for r in merged.rows
    } == {
        ("llama", 6, 30, 60, 0),
        ("gpt", 6, 36, 72, 1),
    }
    assert {(r.key_id, r.date) for r in merged.rows} == {("", "")}
    assert sum(sum(r.latency_buckets) for r in merged.rows) == 12
    per_key = Merge(by_key=True, by_day=False)
    per_key.add(whole)
    assert sorted((r.key_id, r.model, r.requests) for r in per_key.rows) == [
        ("k0", "gpt", 2),
        ("k0", "llama", 2),
        ("k1", "gpt", 2),
        ("k1", "llama", 2),
        ("k2", "gpt", 2),
        ("k2", "llama", 2),
    ]


async def test_usage_day_defaults_to_now(store: Store, clock: FakeClock) -> None:
    clock.set(at("2024-05-05T05:00:00"))
    a = ask()
    v = await store.admit(a)
    await store.settle(settlement(a, v, 1))  # finished_at 0: the store's now
    assert [r.date for r in await store.usage("alice", ["k1"], 0, 99999999)] == ["2024-05-05"]
    assert (await store.get_key("k1")) is None  # usage without a record is fine


# -- auth failures --------------------------------------------------------------------------
async def test_auth_failures_count_in_a_window(store: Store, clock: FakeClock) -> None:
    assert await store.auth_failure("10.0.0.1") == (1, 60.0)
    clock.advance(10)
    assert await store.auth_failure("10.0.0.1") == (2, 50.0)
    assert await store.auth_failure("10.0.0.2") == (1, 60.0)
    clock.advance(49.5)
    assert await store.auth_failure("10.0.0.1") == (3, 0.5)
    clock.advance(0.5)  # the window started at T0 and has ended
    assert await store.auth_failure("10.0.0.1") == (1, 60.0)


# -- broadcast ------------------------------------------------------------------------------
async def test_publish_reaches_every_subscriber(store: Store) -> None:
    first: list[str] = []
    second: list[str] = []
    await store.subscribe(first.append)
    await store.subscribe(second.append)
    deadline = asyncio.get_running_loop().time() + 5
    while "abc" not in first or "abc" not in second:
        assert asyncio.get_running_loop().time() < deadline, (first, second)
        await store.publish("abc")
        await asyncio.sleep(0.02)
    await store.publish("def")
    while "def" not in second:
        assert asyncio.get_running_loop().time() < deadline, second
        await asyncio.sleep(0.01)
    assert "*" not in first


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_hit_counters_share_the_auth_failure_windows(store: Store, clock: FakeClock) -> None:
    assert await store.hit("route:1.2.3.4") == (1, 60.0)
    clock.advance(59.75)
    assert await store.hit("route:1.2.3.4") == (2, 0.25)
    assert await store.hit("route:5.6.7.8") == (1, 60.0)
    clock.advance(0.25)
    assert await store.hit("route:1.2.3.4") == (1, 60.0)
    assert await store.auth_failure("9.9.9.9") == (1, 60.0)
    assert await store.hit("authfail:9.9.9.9") == (2, 60.0)  # one counter, two names
    assert await store.auth_failure("9.9.9.9") == (3, 60.0)


async def test_usage_is_kept_per_model_and_api(store: Store) -> None:
    """One model used through two APIs gives two rows, the chat one first."""
    for api, used in (("embeddings", 7), ("chat", 5), ("audio", 1), ("embeddings", 3)):
        a = ask()
        v = await store.admit(a)
        await store.settle(
            Settlement(a, v.day, v.month, "m:8b", used, 0, 1.0, finished_at=T0, api=api)
        )
    rows = await store.usage("alice", ["k1"], 0, 99999999)
    assert [(r.model, r.api, r.requests, r.prompt_tokens) for r in rows] == [
        ("m:8b", "chat", 1, 5),
        ("m:8b", "audio", 1, 1),
        ("m:8b", "embeddings", 2, 10),
    ]


# -- tokens per minute and money budgets ---------------------------------------------------------
async def test_tpm_is_a_rolling_minute_of_tokens(store: Store, clock: FakeClock) -> None:
    """Reservations count for 60 s from their admission; a settled request counts what it used;
    the refusal says when enough will have left the window."""
    first = ask(tpm=100, reserve=60)
    v1 = await store.admit(first)
    assert v1.admitted and (v1.tokens_limit, v1.tokens_remaining) == (100, 40)
    clock.advance(10)
    refused = await store.admit(ask(tpm=100, reserve=50))
    assert refused.refused == "tpm" and refused.retry_after == 50
    await store.settle(settlement(first, v1, 30))  # used 30 of the 60 it reserved
    second = await store.admit(ask(tpm=100, reserve=50))
    assert second.admitted and second.tokens_remaining == 20
    clock.advance(50)  # the first one's tokens leave the window; the second's 50 stay
    third = await store.admit(ask(tpm=100, reserve=50))
    assert third.admitted and third.tokens_remaining == 0
    assert (await store.admit(ask(tpm=100, reserve=101))).refused == "tpm"


async def test_plan_tpm_spans_the_owners_keys(store: Store) -> None:
    assert (await store.admit(ask("k1", "bob", plan_tpm=100, reserve=70))).admitted
    refused = await store.admit(ask("k2", "bob", plan_tpm=100, reserve=40))
    assert refused.refused == "plan_tpm"
    assert (await store.admit(ask("k3", "carol", plan_tpm=100, reserve=40))).admitted


async def test_money_budgets_reserve_and_settle(store: Store) -> None:
    """Budgets are micro-dollars reserved at admission and settled to the real cost."""
    a = ask(daily_budget=1_000_000, reserve_cost=800_000)
    v = await store.admit(a)
    assert v.admitted and v.spent is not None and v.spent.day_cost == 800_000
    refused = await store.admit(ask(daily_budget=1_000_000, reserve_cost=300_000))
    assert refused.refused == "daily_budget" and refused.retry_after >= 1
    await store.settle(settlement(a, v, 10, cost=100_000))
    again = await store.admit(
        ask(daily_budget=1_000_000, monthly_budget=1_000_000, reserve_cost=900_000)
    )
    assert again.admitted and again.spent is not None
    assert (again.spent.day_cost, again.spent.month_cost) == (1_000_000, 1_000_000)
    over = await store.admit(ask(monthly_budget=1_000_000, reserve_cost=1))
    assert over.refused == "monthly_budget"


async def test_plan_budget_spans_the_owners_keys(store: Store) -> None:
    assert (await store.admit(ask("k1", "dan", plan_budget=500, reserve_cost=400))).admitted
    assert (await store.admit(ask("k2", "dan", plan_budget=500, reserve_cost=200))).refused == (
        "plan_budget"
    )


async def test_a_store_down_settlement_charges_money_today(store: Store) -> None:
    a = ask(daily_budget=1000, reserve_cost=0)
    await store.settle(Settlement(a, 0, 0, "m", 1, 1, 1.0, finished_at=T0, cost=600))
    v = await store.admit(ask(daily_budget=1000, reserve_cost=500))
    assert v.refused == "daily_budget"
