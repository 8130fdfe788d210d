"""What only the Redis store has: Lua calendar math equal to ``windows.py``, Redis ``TIME``,
one round trip per admission, exactness across connection pools, identical verdicts to the
memory store on random histories, timeouts and outages as ``StoreError``, the subscriber's
reconnects, URLs, scripts reloaded after a flush, the key layout's hash tags."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from gateway.clock import FakeClock, SystemClock
from gateway.config.schema import Store as StoreConfig
from gateway.limits import windows
from gateway.records import Admission, KeyRecord, Settlement, Verdict
from gateway.store.base import StoreError
from gateway.store.factory import create_store
from gateway.store.memory import MemoryStore
from gateway.store.redis import SETTLE_CHUNK, RedisStore
from gateway.store.redis_codec import esc, stripe, stripe_tag
from gateway.store.redis_conn import Target, parse
from tests import redis_server
from tests.redis_server import RedisClusterProcesses, RedisServer
from tests.store.test_contract import T0, at

_ids = itertools.count()
HYPOTHESIS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def uid(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def dedicated() -> AsyncIterator[RedisServer]:
    """A server of this test's own (to pause, kill or configure)."""
    server = redis_server.start_redis()
    yield server
    server.stop()


# -- time -----------------------------------------------------------------------------------
_midnights = st.builds(
    lambda day, offset: day * 86400 + offset,
    st.integers(1, 80_000),
    st.sampled_from([-1.0, -1e-6, -5e-7, -4e-7, -6e-7, 0.0, 4e-7, 1e-6, 0.5, 1.0]),
)


@HYPOTHESIS
@given(epoch=st.floats(1, 7e9) | _midnights)
async def test_lua_calendar_equals_windows(redis_url: str, epoch: float) -> None:
    clock = FakeClock(epoch)
    store = RedisStore(redis_url, 5000, clock)
    try:
        key = uid("k")
        daily = await store.admit(Admission(uid("r"), key, "o", daily=1))
        monthly = await store.admit(Admission(uid("r"), key, "o", monthly=1))
    finally:
        await store.close()
    assert (daily.day, daily.month, daily.now) == (
        windows.day_id(epoch),
        windows.month_id(epoch),
        epoch,
    )
    assert daily.tokens_reset == windows.seconds_to_midnight(epoch)
    assert monthly.tokens_reset == windows.seconds_to_month_end(epoch)


async def test_without_a_clock_the_redis_time_is_used(url: str) -> None:
    store = RedisStore(url, 5000)
    try:
        v = await store.admit(Admission("r1", "k1", "o", rpm=5, daily=10))
        assert abs(v.now - time.time()) < 5
        assert (v.day, v.month) == (windows.day_id(v.now), windows.month_id(v.now))
        assert v.tokens_reset == pytest.approx(windows.seconds_to_midnight(v.now))
        assert await store.auth_failure("c") == (1, 60.0)
        count, reset = await store.auth_failure("c")
        assert count == 2 and 59 < reset < 60
    finally:
        await store.close()


# -- round trips and exactness --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_admit_and_settle_are_one_round_trip_each(
    request: pytest.FixtureRequest, kind: str
) -> None:
    """Counted by the servers themselves: commands run and reads (a read ≈ one round trip)."""
    url = request.getfixturevalue(f"{kind}_url")
    servers: list[RedisServer] = (
        [request.getfixturevalue("redis_process")]
        if kind == "redis"
        else request.getfixturevalue("cluster_processes").nodes
    )

    sides = [sync_redis.Redis(port=server.port) for server in servers]  # one connection each

    def counts() -> tuple[dict[str, int], int]:
        calls: dict[str, int] = {}
        reads = 0
        for side in sides:
            info = side.info("all")
            reads += int(info["total_reads_processed"])
            for name, stats in info.items():
                if name.startswith("cmdstat_"):
                    calls[name[8:]] = calls.get(name[8:], 0) + int(stats["calls"])
        return calls, reads

    store = RedisStore(url, 5000, FakeClock(T0))
    try:
        a = Admission("warm", "k1", "o", rpm=5, concurrency=2, daily=10, plan_monthly=9)
        await store.settle(Settlement(a, 0, 0, "m", 1, 1, 1.0))  # connects, loads the scripts
        await store.admit(a)
        before, reads_before = counts()
        await store.admit(Admission("r1", "k1", "o", rpm=5, daily=10, reserve=1))
        await store.settle(Settlement(a, 20231114, 202311, "m", 1, 1, 1.0))
        batch = [Settlement(Admission(f"b{i}", "k1", "o"), 0, 0, "m", 1, 1, 1.0) for i in range(3)]
        await store.settle_many(batch)
        after, reads_after = counts()
    finally:
        await store.close()
        for side in sides:
            side.close()
    sent = {c: n - before.get(c, 0) for c, n in after.items() if n != before.get(c, 0)}
    # (commandstats counts the commands the scripts run too: no GET, no SCRIPT LOAD among them
    # on one Redis; on a Cluster the GET of this process's floor in the stripe)
    # One Redis settles the batch of three in one EVALSHA; a Cluster in two, whose settlements
    # are all one owner's of one key: settle.lua in the owner's slot, usage.lua in the stripe.
    # The single settlement: one, or two on a Cluster.
    cluster = kind == "cluster"
    evalsha, marks = (5, 2) if cluster else (3, 0)
    assert (sent["evalsha"], sent.get("get"), sent.get("script")) == (
        evalsha,
        marks or None,
        None,
    )
    # every settlement ran: its lease released (the settle-once marker), or, for the three
    # admitted without the store, its own marker set; on a Cluster the marks set too, and the
    # rows of the two settle calls before each written forgotten in the owner's slot (HDEL and
    # ZREM in the next call's pipeline)
    forgets = 2 if cluster else 0
    assert (sent.get("zrem"), sent.get("hdel"), sent.get("set")) == (
        1 + forgets,
        forgets or None,
        3 + marks,
    )
    # admit, settle, one pipeline of three (a Cluster: a round trip per step); each INFO counts
    # its own read once more.
    assert reads_after - reads_before - len(servers) == (5 if cluster else 3)


async def test_exact_across_two_connection_pools(url: str) -> None:
    stores = [RedisStore(url, 10_000), RedisStore(url, 10_000)]
    try:

        async def burst(count: int = 200, pools: int = 2, **limits: int) -> int:
            key, owner = uid("k"), uid("o")
            verdicts = await asyncio.gather(
                *(
                    stores[i % pools].admit(Admission(uid("r"), key, owner, **limits))
                    for i in range(count)
                )
            )
            return sum(v.admitted for v in verdicts)

        assert await burst(rpm=60) == 60
        assert await burst(concurrency=7) == 7
        assert await burst(daily=1000, reserve=10) == 100
        assert await burst(rpm=500, plan_monthly=990, reserve=11) == 90
        assert await burst(count=400, pools=1, rpm=60) == 60  # more in flight than 100
    finally:
        for store in stores:
            await store.close()


# -- the same verdicts as the reference -----------------------------------------------------
_limits = st.fixed_dictionaries(
    {},
    optional={
        "rpm": st.integers(1, 3),
        "concurrency": st.integers(1, 2),
        "daily": st.integers(0, 60),
        "monthly": st.integers(0, 90),
        "plan_rpm": st.integers(1, 4),
        "plan_monthly": st.integers(0, 120),
        "tpm": st.integers(0, 80),
        "plan_tpm": st.integers(0, 100),
        "daily_budget": st.integers(0, 500),
        "monthly_budget": st.integers(0, 700),
        "plan_budget": st.integers(0, 900),
    },
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.integers(0, 1), _limits, st.integers(0, 30)),
        st.tuples(
            st.just("advance"), st.sampled_from([0.25, 1.0, 7.5, 30.0, 59.75, 600.0, 3600.0])
        ),
        st.tuples(st.just("settle"), st.integers(0, 30), st.integers(0, 40)),
        # several settled in one settle_many (one script call on one Redis), repeats included
        st.tuples(
            st.just("batch"),
            st.lists(st.tuples(st.integers(0, 30), st.integers(0, 40), st.booleans()), max_size=6),
        ),
        st.tuples(st.just("renew")),
    ),
    max_size=30,
)


@HYPOTHESIS
@given(
    start=st.sampled_from(
        [T0, at("2024-02-29T23:58:00"), at("2024-12-31T23:30:00"), at("2025-06-30T22:00:00")]
    ),
    ops=_ops,
)
async def test_verdicts_equal_the_memory_store(
    url: str, start: float, ops: list[tuple[Any, ...]]
) -> None:
    clock = FakeClock(start)
    memory, store = MemoryStore(clock), RedisStore(url, 5000, clock)
    owner, admitted = uid("owner"), []
    try:
        for op in ops:
            if op[0] == "advance":
                clock.advance(op[1])
            elif op[0] == "admit":
                a = Admission(
                    uid("r"), f"k{op[1]}", owner, **op[2], reserve=op[3], reserve_cost=op[3] * 7
                )
                expected: Verdict = await memory.admit(a)
                assert await store.admit(a) == expected
                if expected.admitted:
                    admitted.append((a, expected))
            elif op[0] == "settle" and admitted:
                a, v = admitted[op[1] % len(admitted)]
                s = Settlement(
                    a, v.day, v.month, "m", op[2], 1, op[2] * 7.3, op[2] % 3 == 0, cost=op[2] * 5
                )
                await memory.settle(s)
                await store.settle(s)
            elif op[0] == "batch" and admitted:
                batch = []
                for index, tokens, other_model in op[1]:
                    a, v = admitted[index % len(admitted)]
                    model = "n" if other_model else "m"
                    error = tokens % 3 == 0
                    batch.append(
                        Settlement(
                            a, v.day, v.month, model, tokens, 2, tokens * 1.9, error, cost=tokens
                        )
                    )
                await memory.settle_many(batch)
                await store.settle_many(batch)
            elif op[0] == "renew":
                running = [a for a, _ in admitted]
                await memory.renew_leases(running)
                await store.renew_leases(running)
        probe = Admission(
            uid("r"), "k0", owner, rpm=3, daily=1, monthly=1, plan_monthly=1, tpm=1, plan_budget=1
        )
        assert await store.admit(probe) == await memory.admit(probe)
        keys = ["k0", "k1"]
        assert await store.usage(owner, keys, 0, 99991231) == await memory.usage(
            owner, keys, 0, 99991231
        )
    finally:
        await store.close()


# -- failures -------------------------------------------------------------------------------
async def test_an_unreachable_store_raises_store_error() -> None:
    store = RedisStore(f"redis://127.0.0.1:{redis_server.free_port()}", 200)
    a = Admission("r", "k", "o", rpm=1)
    try:
        for call in (
            store.ping(),
            store.admit(a),
            store.settle_many([Settlement(a, 0, 0, "m", 0, 0, 0.0)]),
            store.get_key("k"),
            store.list_keys("o"),
            store.publish("x"),
        ):
            started = time.monotonic()
            with pytest.raises(StoreError):
                await call
            assert time.monotonic() - started < 1.0
    finally:
        await store.close()


async def test_a_hung_store_times_out_and_recovers(dedicated: RedisServer) -> None:
    store = RedisStore(dedicated.url, 200)
    a = Admission("r1", "k", "o", rpm=10)
    try:
        assert (await store.admit(a)).admitted
        dedicated.pause()
        try:
            started = time.monotonic()
            with pytest.raises(StoreError):
                await store.admit(Admission("r2", "k", "o", rpm=10))
            with pytest.raises(StoreError):
                await store.ping()
            assert time.monotonic() - started < 1.5
        finally:
            dedicated.resume()
        v = await store.admit(Admission("r3", "k", "o", rpm=10))
        assert v.admitted and v.requests_remaining in (7, 8)  # r2 may or may not have landed
    finally:
        await store.close()


async def test_a_wrong_password_is_a_store_error() -> None:
    server = redis_server.start_redis(password="s3cret")
    try:
        store = RedisStore(server.url.replace("s3cret", "wrong"), 1000)
        with pytest.raises(StoreError):
            await store.ping()
        await store.close()
    finally:
        server.stop()


# -- broadcast ------------------------------------------------------------------------------
def _kill_subscribers(
    request: pytest.FixtureRequest, url: str
) -> Callable[[], None]:  # every node's pub/sub clients
    if url.startswith("redis+cluster://"):
        processes: RedisClusterProcesses = request.getfixturevalue("cluster_processes")
        nodes = processes.nodes
    else:
        nodes = [request.getfixturevalue("redis_process")]

    def kill() -> None:
        for node in nodes:
            node.call("CLIENT", "KILL", "TYPE", "pubsub")

    return kill


async def test_a_lost_subscription_reconnects_and_says_star(
    url: str, request: pytest.FixtureRequest
) -> None:
    kill = _kill_subscribers(request, url)
    store, publisher = RedisStore(url, 2000), RedisStore(url, 2000)
    got: list[str] = []
    try:
        await store.subscribe(got.append)
        await publisher.publish("before")
        await eventually(lambda: got == ["before"])
        kill()
        await eventually(lambda: "*" in got)
        await eventually(lambda: store._subscriber.ready.is_set())
        await publisher.publish("after")
        await eventually(lambda: got[-1] == "after")
    finally:
        await store.close()
        await publisher.close()


async def test_a_hung_server_is_noticed_by_the_subscriber(dedicated: RedisServer) -> None:
    store = RedisStore(dedicated.url, 300)
    store._subscriber.idle = 0.2
    got: list[str] = []
    try:
        await store.subscribe(got.append)
        assert store._subscriber.ready.is_set()
        dedicated.pause()
        try:
            await eventually(lambda: not store._subscriber.ready.is_set())
        finally:
            dedicated.resume()
        await eventually(lambda: got == ["*"])
        await store.publish("again")
        await eventually(lambda: got == ["*", "again"])
    finally:
        await store.close()


async def test_subscribe_while_down_keeps_trying() -> None:
    store = RedisStore(f"redis://127.0.0.1:{redis_server.free_port()}", 100)
    got: list[str] = []
    try:
        await store.subscribe(got.append)  # returns (after the timeout) without raising
        assert not store._subscriber.ready.is_set()
    finally:
        await store.close()


# -- configuration --------------------------------------------------------------------------
@pytest.mark.parametrize("user", [None, "gw"])
async def test_password_and_db_come_from_the_url(user: str | None) -> None:
    """For every call: the scripts' lean connection and redis-py's (keys, plans) alike."""
    server = redis_server.start_redis(password="s3cret")
    try:
        url = f"{server.url}/3"
        if user is not None:
            server.call("ACL", "SETUSER", user, "on", ">pw2", "~*", "&*", "+@all")
            url = url.replace(":s3cret@", f"{user}:pw2@")
        store = RedisStore(url, 1000)
        await store.set_plan("alice", "pro")
        assert (await store.admit(Admission("r1", "k", "alice", rpm=5))).requests_remaining == 4
        await store.ping()
        await store.close()
        db3 = sync_redis.Redis.from_url(f"{server.url}/3")
        db0 = sync_redis.Redis.from_url(f"{server.url}/0")
        assert db3.get("gw:{alice}:plan") == b"pro"
        assert db3.zcard("gw:{alice}:rpmr:k:k") == 1
        assert db0.keys("*") == []
        db3.close()
        db0.close()
    finally:
        server.stop()


async def test_callers_that_give_up_do_not_shift_the_replies(redis_url: str) -> None:
    """Many admissions share one pipelined connection; some are cancelled in flight. Every
    later reply still reaches its own caller: key i allows 100 + i requests a minute."""
    store = RedisStore(redis_url, 5000, FakeClock(T0))
    try:
        await store.ping()  # connected
        first = [
            asyncio.ensure_future(store.admit(Admission(f"a{i}", f"k{i}", "o", rpm=100 + i)))
            for i in range(60)
        ]
        for _ in range(2):
            await asyncio.sleep(0)  # every admission queued, then written
        for task in first[::2]:
            task.cancel()
        await asyncio.gather(*first, return_exceptions=True)
        again = await asyncio.gather(
            *(store.admit(Admission(f"b{i}", f"k{i}", "o", rpm=100 + i)) for i in range(60))
        )
        for i, verdict in enumerate(again):
            assert verdict.requests_remaining in (100 + i - 2, 100 + i - 1), i
        for i, task in enumerate(first[1::2]):
            assert task.result().requests_remaining == 100 + 2 * i + 1 - 1
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "target"),
    [
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
            Target(
                "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
                (("10.0.0.1", 7000), ("10.0.0.2", 7001)),
            ),
        ),
        (
            "redis+cluster://user:p%40ss@h1:1,h2/",
            Target(
                "redis+cluster://user:p%40ss@h1:1,h2/", (("h1", 1), ("h2", 6379)), "user", "p@ss"
            ),
        ),
        (
            "redis+cluster://:pw@[::1]:7000",
            Target("redis+cluster://:pw@[::1]:7000", (("::1", 7000),), None, "pw"),
        ),
        (
            "redis+cluster://[::1],h2",
            Target("redis+cluster://[::1],h2", (("::1", 6379), ("h2", 6379))),
        ),
        ("redis+cluster://h:port", None),
        ("redis+cluster://", None),
        ("mysql://h", None),
        ("redis+cluster://u@h:1", Target("redis+cluster://u@h:1", (("h", 1),), "u", None)),
        ("rediss://:pw@host:6380/2", Target("rediss://:pw@host:6380/2")),
    ],
)
def test_urls(url: str, target: Target | None) -> None:
    if target is None:
        with pytest.raises(ValueError):
            parse(url)
    else:
        assert parse(url) == target


async def test_the_factory_picks_the_backend(redis_url: str) -> None:
    assert isinstance(create_store(StoreConfig(), SystemClock()), MemoryStore)
    for made_url in (redis_url, "redis+cluster://127.0.0.1:1"):
        store = create_store(StoreConfig(url=made_url), SystemClock())
        assert isinstance(store, RedisStore)
        await store.close()


# -- layout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("owner", ["plain", "}{", "a{b}c", ""])
async def test_every_key_of_an_owner_but_its_usage_rows_shares_one_slot(
    redis_url: str, redis_process: RedisServer, owner: str
) -> None:
    store = RedisStore(redis_url, 5000, FakeClock(T0))
    try:
        limits = {"rpm": 5, "concurrency": 1, "daily": 9, "plan_rpm": 5, "plan_monthly": 9}
        a = Admission("r1", "k:{1}", owner, **limits, reserve=1)
        v = await store.admit(a)
        await store.settle(Settlement(a, v.day, v.month, "m", 1, 1, 1.0, finished_at=T0))
        await store.insert_key(KeyRecord(id="k:{1}", owner=owner, key_hash="a" * 64), 3)
        await store.set_plan(owner, "p")
    finally:
        await store.close()
    keys = redis_process.call("KEYS", "gw:{*").splitlines()
    usage = {k for k in keys if k.startswith("gw:{use:")}
    assert len(keys) - len(usage) >= 7
    assert len({key_slot(k.encode()) for k in set(keys) - usage}) == 1, keys
    # the usage rows (the day's hash, the days index) in the key's stripe
    assert len(usage) == 2
    assert {key_slot(k.encode()) for k in usage} == {key_slot(stripe_tag(stripe("k:{1}")).encode())}


@HYPOTHESIS
@given(a=st.text(), b=st.text())
def test_escaping_is_injective_and_brace_free(a: str, b: str) -> None:
    assert esc(a) and "{" not in esc(a) and "}" not in esc(a) and ":" not in esc(a)
    assert (esc(a) == esc(b)) == (a == b)


async def test_scripts_are_reloaded_after_a_script_flush(
    url: str, request: pytest.FixtureRequest
) -> None:
    store = RedisStore(url, 5000, FakeClock(T0))
    try:
        a = Admission("r1", "k", "o", daily=10, reserve=5)
        v = await store.admit(a)
        if url.startswith("redis+cluster://"):
            for node in request.getfixturevalue("cluster_processes").nodes:
                node.call("SCRIPT", "FLUSH")
        else:
            request.getfixturevalue("redis_process").call("SCRIPT", "FLUSH")
        await store.settle_many([Settlement(a, v.day, v.month, "m", 1, 0, 1.0)])
        assert (await store.admit(Admission("r2", "k", "o", daily=10))).tokens_remaining == 9
    finally:
        await store.close()


async def test_a_changed_hash_never_leaves_a_stale_record(redis_url: str) -> None:
    store = RedisStore(redis_url, 5000)
    try:
        old = KeyRecord(id="k1", owner="o", key_hash="a" * 64)
        assert await store.insert_key(old, None)
        await store.replace_key(old.evolve(key_hash="b" * 64, revoked=True))  # no old_hash
        assert await store.get_key_by_hash("a" * 64) is None
        moved = old.evolve(key_hash="b" * 64, owner="p")
        await store.replace_key(moved)
        assert await store.list_keys("o") == []
        assert await store.list_keys("p") == [moved]
    finally:
        await store.close()


async def test_every_limit_and_usage_key_expires(redis_url: str) -> None:
    """TTLs are refreshed only when a period or a model is new (fewer commands per request),
    yet no counter, log, lease or usage key may be left without one, across a day change."""
    clock = FakeClock(at("2026-03-31T23:59:00"))
    store = RedisStore(redis_url, 2000, clock=clock)
    try:
        for n in range(3):
            a = Admission(
                f"r{n}",
                "k1",
                "acme",
                rpm=10,
                concurrency=5,
                daily=10**6,
                monthly=10**7,
                plan_rpm=100,
                plan_monthly=10**8,
                reserve=50,
            )
            verdict = await store.admit(a)
            assert verdict.admitted
            await store.settle(
                Settlement(
                    a,
                    verdict.day,
                    verdict.month,
                    f"m{n % 2}",
                    10,
                    20,
                    latency_ms=5.0,
                    finished_at=clock.time(),
                )
            )
            clock.advance(45)  # the second and third cross midnight and the month end
        client = sync_redis.Redis.from_url(redis_url)
        permanent = (b"lastused",)  # one field per key of the owner, kept with the keys
        for name in client.scan_iter(b"gw:*"):
            if name.endswith(permanent):
                continue
            assert client.ttl(name) > 0, name
        client.close()
    finally:
        await store.close()


async def test_a_batch_longer_than_a_chunk_settles_every_request_once(url: str) -> None:
    """settle_many splits a batch into EVALSHAs of SETTLE_CHUNK settlements (on one Redis):
    each one is settled once, duplicates across chunks included, its lease released."""
    store = RedisStore(url, 5000, FakeClock(T0))
    try:
        owner, count = uid("own"), SETTLE_CHUNK * 2 + 5
        batch = []
        for n in range(count):
            a = Admission(f"r{n}", "k", owner, concurrency=count, daily=10**6, reserve=10)
            v = await store.admit(a)
            batch.append(Settlement(a, v.day, v.month, "m", 1, 2, 1.0, finished_at=T0))
        await store.settle_many(batch + batch[SETTLE_CHUNK - 2 : SETTLE_CHUNK + 2])
        [row] = await store.usage(owner, ["k"], 0, 99999999)
        assert (row.requests, row.prompt_tokens, row.completion_tokens) == (count, count, 2 * count)
        again = await store.admit(Admission("last", "k", owner, concurrency=1, daily=10**6))
        assert again.admitted  # every lease was released
        assert again.tokens_remaining == 10**6 - 3 * count
    finally:
        await store.close()


async def test_logs_and_leases_keep_integer_scores(redis_url: str) -> None:
    """The rpm logs (``rpmr:``) hold minus whole microseconds, newest first (the leases whole
    numbers too: test_lease_layout): Redis keeps a small sorted set's integer scores as
    integers, and reads the score text of every entry a ZADD passes otherwise (at an rpm limit
    of 60, a third more work per admission); a ZADD of a listpack stops at its head."""
    clock = FakeClock(T0 + 0.123456789)
    store = RedisStore(redis_url, 2000, clock=clock)
    client = sync_redis.Redis.from_url(redis_url)
    owner, key = uid("own"), uid("key")
    try:
        for n in range(3):
            a = Admission(f"r{n}", key, owner, rpm=60, concurrency=10, plan_rpm=600)
            assert (await store.admit(a)).admitted
            clock.advance(0.25)
        first_us = (int(T0) * 10**6) + 123457  # the first admission, to the microsecond
        for name, first in (("rpmr:k:" + key, first_us), ("rpmr:o", first_us)):
            scores = [s for _, s in client.zrange(f"gw:{{{owner}}}:{name}", 0, -1, withscores=True)]
            assert scores == [-(first + d) for d in (500000, 250000, 0)], (name, scores)
            assert not client.exists(f"gw:{{{owner}}}:{name.replace('rpmr', 'rpmu')}")
        a = Admission("r9", key, owner, rpm=60, plan_rpm=600)
        verdict = await store.admit(a)  # the headers' window read back in seconds
        assert verdict.requests_remaining == 56
        assert abs(verdict.requests_reset - (60 - 0.75)) < 1e-6
    finally:
        client.close()
        await store.close()


async def test_log_and_lease_ttls_are_renewed_once_a_window(redis_url: str) -> None:
    """An admission renews the TTLs of the rpm logs and the leases only when the last renewal is
    a window old (or the set was empty), each renewal outlasting the window after it: no entry
    leaves before its time, and most admissions spare three EXPIREs."""
    clock = FakeClock(T0)
    store = RedisStore(redis_url, 2000, clock=clock)
    client = sync_redis.Redis.from_url(redis_url)
    owner, key = uid("own"), uid("key")
    logs = [f"gw:{{{owner}}}:rpmr:k:{key}", f"gw:{{{owner}}}:rpmr:o", f"gw:{{{owner}}}:held:{key}"]

    async def admit(n: int) -> None:
        a = Admission(f"r{n}", key, owner, rpm=1000, concurrency=1000, plan_rpm=1000)
        assert (await store.admit(a)).admitted

    try:
        await admit(0)
        window = int(windows.RPM_WINDOW)
        ttls = [client.ttl(name) for name in logs]
        assert ttls[:2] == [2 * window + 1] * 2 and ttls[2] > window, ttls
        for name in logs:
            client.expire(name, 30)  # as if the last renewal were long ago
        clock.advance(window - 1)
        await admit(1)
        assert [client.ttl(name) for name in logs[:2]] == [30, 30]  # not due yet
        # (the lease set was empty, its lease long expired: it got its TTL at once)
        assert client.ttl(logs[2]) > window
        clock.advance(1)
        await admit(2)
        assert all(client.ttl(name) > 2 * window for name in logs)  # due: renewed
        client.delete(*logs)
        await admit(3)  # empty sets get their TTL at once, renewal due or not
        assert all(client.ttl(name) > 2 * window for name in logs)
    finally:
        client.close()
        await store.close()


# -- admit_now: the limiter's admission without a task ------------------------------------------
async def test_admit_now_equals_admit_and_connects(redis_url: str) -> None:
    store = RedisStore(redis_url, 5000, FakeClock(T0))
    try:
        a = Admission("r1", "k", "o", rpm=5, daily=100, reserve=10)
        first = await store.admit_now(a)  # not connected yet: admit()'s path connects
        second = await store.admit_now(Admission("r2", "k", "o", rpm=5, daily=100, reserve=10))
        assert (first.requests_remaining, second.requests_remaining) == (4, 3)
        assert (first.tokens_remaining, second.tokens_remaining) == (90, 80)
    finally:
        await store.close()


async def test_admit_now_survives_a_script_flush(
    redis_url: str, redis_process: RedisServer
) -> None:
    store = RedisStore(redis_url, 5000, FakeClock(T0))
    try:
        await store.admit(Admission("r1", "k", "o", rpm=5))
        redis_process.call("SCRIPT", "FLUSH")
        assert (await store.admit_now(Admission("r2", "k", "o", rpm=5))).requests_remaining == 3
    finally:
        await store.close()


async def test_a_timed_out_call_fails_alone_and_a_late_verdict_still_lands(
    dedicated: RedisServer,
) -> None:
    """A call that times out must not take its neighbours on the connection with it: the
    admission sent before it still gets its verdict when Redis answers (so the limiter can
    give back what it took), and the connection goes on serving (it was dropped before)."""
    store = RedisStore(dedicated.url, 200)
    try:
        assert (await store.admit(Admission("r1", "k", "o", rpm=10))).admitted
        dedicated.pause()
        try:
            pending = store.admit_now(Admission("r2", "k", "o", rpm=10))
            started = time.monotonic()
            with pytest.raises(StoreError, match="no answer in time"):
                await store.ping()
            assert time.monotonic() - started < 1.0
        finally:
            dedicated.resume()
        late = await asyncio.wait_for(pending, 5)
        assert late.admitted and late.requests_remaining == 8
        verdict = await store.admit(Admission("r3", "k", "o", rpm=10))
        assert verdict.admitted and verdict.requests_remaining == 7
    finally:
        await store.close()


async def test_admit_now_completes_for_a_caller_that_left(redis_url: str) -> None:
    """The limiter shields it: the verdict still arrives, so a lease taken for nobody can be
    given back."""
    store = RedisStore(redis_url, 5000, FakeClock(T0))
    try:
        await store.ping()
        pending = store.admit_now(Admission("r1", "k", "o", concurrency=1))
        assert pending is not None
        waiter = asyncio.ensure_future(asyncio.shield(pending))
        await asyncio.sleep(0)
        waiter.cancel()
        verdict = await pending
        assert verdict.admitted
        refused = await store.admit(Admission("r2", "k", "o", concurrency=1))
        assert refused.refused == "concurrency"
    finally:
        await store.close()
