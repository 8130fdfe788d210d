"""A client that leaves, or a store that answers too late, while an admission is on its way:
the store may have admitted it, so the limiter must still learn the verdict and give the slot
and reservation back (found by the benchmark: leases stayed taken for ten minutes; and after a
Redis stall longer than ``timeout_ms``, keys were locked out by admissions nobody settled; and
after Redis was killed under load, by an admission it ran and persisted whose reply died with
the connection)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.clock import SystemClock
from gateway.config.load import parse_text
from gateway.errors import StoreUnavailable, TooManyRequests
from gateway.limits.limiter import Limiter
from gateway.limits.windows import day_id
from gateway.records import Admission, KeyRecord, Verdict
from gateway.store.redis import RedisStore
from tests.faultproxy import FaultProxy
from tests.redis_server import RedisServer


class SlowAnswers(RedisStore):
    """The real Redis store, whose verdicts come back only when the test says so (as when the
    network is slow after Redis has executed the script)."""

    def __init__(self, url: str, fast: bool) -> None:
        super().__init__(url, 5000)
        self.executed = asyncio.Event()
        self.answer = asyncio.Event()
        self.fast = fast  # the limiter's hot path (admit_now's future) or admit()
        self._tasks: list[asyncio.Task[Any]] = []

    async def admit(self, admission: Admission) -> Verdict:
        verdict = await super().admit(admission)
        self.executed.set()
        await self.answer.wait()
        return verdict

    def admit_now(self, admission: Admission) -> asyncio.Future[Verdict]:
        if not self.fast:
            return asyncio.ensure_future(self.admit(admission))
        inner = super().admit_now(admission)
        late: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()

        async def answer_late() -> None:
            verdict = await inner
            self.executed.set()
            await self.answer.wait()
            late.set_result(verdict)

        self._tasks.append(asyncio.ensure_future(answer_late()))
        return late


@pytest.mark.parametrize("fast", [True, False], ids=["admit_now", "admit"])
async def test_an_abandoned_admission_is_given_back(redis_url: str, fast: bool) -> None:
    store = SlowAnswers(redis_url, fast)
    await store.ping()  # connected: the hot path is open
    config = parse_text("plans: {free: {rpm: null, monthly_tokens: null}}\n", "t", {})
    limiter = Limiter(store, config, SystemClock())
    await limiter.start()
    key = KeyRecord(id="k1", owner="acme", key_hash="h", max_concurrency=1, daily_limit=1000)
    try:
        leaving = asyncio.create_task(limiter.admit("r1", key, 600, False, "m"))
        await store.executed.wait()  # Redis admitted it: the slot and 600 tokens are taken
        leaving.cancel()
        store.answer.set()
        try:
            await leaving
        except asyncio.CancelledError:
            pass
        await _given_back(limiter, store, key)
    finally:
        await limiter.stop()
        await store.close()


async def _given_back(
    limiter: Limiter, store: RedisStore, key: KeyRecord, reconnecting: bool = False
) -> None:
    """The slot and the 600 tokens come back, and no usage is recorded for nobody (within 5 s,
    a lease's life being 20 s; ``reconnecting``: 503 while the store's connection comes back)."""
    deadline = asyncio.get_running_loop().time() + 5
    waiting: tuple[type[Exception], ...] = (TooManyRequests,)
    if reconnecting:
        waiting += (StoreUnavailable,)
    while True:
        try:
            ticket = await limiter.admit("r2", key, 1000, False, "m")
            break
        except waiting:
            assert asyncio.get_running_loop().time() < deadline, "never given back"
            await asyncio.sleep(0.01)
    assert ticket.verdict is not None and ticket.verdict.admitted
    today = day_id(SystemClock().time())
    assert await store.usage("acme", ["k1"], today, today) == []


@pytest.mark.parametrize("fast", [True, False], ids=["admit_now", "admit"])
async def test_a_verdict_that_comes_too_late_is_given_back(redis_url: str, fast: bool) -> None:
    """The store answers after ``timeout_ms``: the caller got 503 (closed), and the admission
    Redis made meanwhile is released when its reply lands."""
    store = SlowAnswers(redis_url, fast)
    await store.ping()
    config = parse_text(
        "store: {timeout_ms: 50}\nplans: {free: {rpm: null, monthly_tokens: null}}\n", "t", {}
    )
    limiter = Limiter(store, config, SystemClock())
    await limiter.start()
    key = KeyRecord(id="k1", owner="acme", key_hash="h", max_concurrency=1, daily_limit=1000)
    try:
        with pytest.raises(StoreUnavailable):
            await limiter.admit("r1", key, 600, False, "m")
        store.answer.set()
        await _given_back(limiter, store, key)
    finally:
        await limiter.stop()
        await store.close()


@pytest.mark.parametrize("timeout_ms", [5000, 50], ids=["caller_waiting", "caller_timed_out"])
async def test_an_admission_whose_reply_is_lost_is_given_back(
    redis_url: str, redis_process: RedisServer, timeout_ms: int
) -> None:
    """Redis runs the admission, then the connection dies before its reply reaches the gateway
    (the caller still waiting for it, or gone with a 503 already): the slot is free again at
    once, not when the lease expires 20 s later."""
    proxy = FaultProxy(redis_process.port)
    await proxy.start()
    store = RedisStore(f"redis://127.0.0.1:{proxy.port}", timeout_ms)
    await store.ping()
    config = parse_text(
        f"store: {{timeout_ms: {timeout_ms}}}\n"
        "plans: {free: {rpm: null, monthly_tokens: null}}\n",
        "t",
        {},
    )
    limiter = Limiter(store, config, SystemClock())
    await limiter.start()
    key = KeyRecord(id="k1", owner="acme", key_hash="h", max_concurrency=1, daily_limit=1000)
    try:
        warm = KeyRecord(id="k0", owner="acme", key_hash="h0")
        await limiter.admit("r0", warm, 0, False, "m")  # the script loaded: the next runs at once
        proxy.set("mute")
        asking = asyncio.create_task(limiter.admit("r1", key, 600, False, "m"))
        deadline = asyncio.get_running_loop().time() + 5
        while redis_process.call("ZCARD", "gw:{acme}:held:k1") != "1":  # Redis admitted it
            assert asyncio.get_running_loop().time() < deadline, "the admission never ran"
            await asyncio.sleep(0.005)
        if timeout_ms < 1000:
            with pytest.raises(StoreUnavailable):
                await asyncio.shield(asking)
        proxy.set("reset")  # the connection dies, the reply with it
        with pytest.raises(StoreUnavailable):
            await asking
        proxy.set("pass")
        await _given_back(limiter, store, key, reconnecting=True)
    finally:
        await limiter.stop()
        await store.close()
        await proxy.stop()
