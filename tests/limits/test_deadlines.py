"""The store's ``timeout_ms`` on admissions (``deadlines.Deadlines``: one timer for all the waiting
admissions of a process): each wait fails after its own timeout, whatever others wait beside
it, and not before; a verdict that comes in time is never failed; an admitted verdict that
comes after its caller timed out is given back."""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import SystemClock
from gateway.config.load import parse_text
from gateway.errors import StoreUnavailable
from gateway.limits.limiter import Limiter
from gateway.records import Admission, KeyRecord, Verdict
from gateway.store.memory import MemoryStore

KEY = KeyRecord(id="k1", owner="acme", key_hash="h")


class Silent(MemoryStore):
    """A store whose verdicts come only when the test gives them (never, unless it does)."""

    def __init__(self) -> None:
        super().__init__(SystemClock())
        self.deciding: list[asyncio.Future[Verdict]] = []

    def admit_now(self, admission: Admission) -> asyncio.Future[Verdict]:
        self.deciding.append(asyncio.get_running_loop().create_future())
        return self.deciding[-1]


def limiter(store: Silent, timeout_ms: int) -> Limiter:
    text = f"store: {{timeout_ms: {timeout_ms}}}\nplans: {{free: {{rpm: null}}}}\n"
    return Limiter(store, parse_text(text, "t", {}), SystemClock())


async def timed_out(lim: Limiter, request_id: str) -> float:
    """How long the admission waited before its 503."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(StoreUnavailable):
        await lim.admit(request_id, KEY, 10, False, "m")
    return loop.time() - start


async def test_a_store_that_never_answers_times_out_each_admission_on_its_own() -> None:
    lim = limiter(Silent(), 50)
    async with asyncio.timeout(5):  # (a deadline that never fires fails here, not hangs)
        first = asyncio.create_task(timed_out(lim, "r1"))
        await asyncio.sleep(0.02)  # the second starts later, so its deadline is later
        second = asyncio.create_task(timed_out(lim, "r2"))
        waited = [await first, await second]
    assert all(0.049 <= seconds < 1 for seconds in waited)


async def test_verdicts_in_time_are_never_failed() -> None:
    store = Silent()
    lim = limiter(store, 50)
    asking = [asyncio.create_task(lim.admit(f"r{n}", KEY, 10, False, "m")) for n in range(50)]
    await asyncio.sleep(0)
    for deciding in store.deciding:
        deciding.set_result(Verdict(admitted=True))
    tickets = await asyncio.gather(*asking)
    async with asyncio.timeout(5):  # one that times out after them: their deadlines passed
        await timed_out(lim, "late")
    assert [ticket.verdict for ticket in tickets] == [Verdict(admitted=True)] * 50
    assert not lim._deadlines.waits  # each dropped when its deadline came


async def test_a_shorter_timeout_is_kept_beside_longer_waits() -> None:
    """After a new config shortens the timeout, a new admission fails at its own deadline,
    before those that began earlier with the longer one."""
    store = Silent()
    lim = limiter(store, 2000)
    earlier = asyncio.create_task(lim.admit("r1", KEY, 10, False, "m"))
    await asyncio.sleep(0)
    lim.configure(limiter(store, 50).config)
    async with asyncio.timeout(1):
        assert await timed_out(lim, "r2") >= 0.049
    assert not earlier.done()
    earlier.cancel()


async def test_an_admitted_verdict_after_the_timeout_is_given_back() -> None:
    store = Silent()
    lim = limiter(store, 50)
    async with asyncio.timeout(5):
        await timed_out(lim, "r1")
    assert not lim.buffer.items
    store.deciding[0].set_result(Verdict(admitted=True, day=20261207, month=202612))
    await asyncio.sleep(0)  # its callbacks run
    await asyncio.sleep(0)
    (release,) = lim.buffer.items
    assert release.admission.request_id == "r1" and not release.record
