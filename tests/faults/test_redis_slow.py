"""Redis slowed (``DEBUG SLEEP`` from a connection of its own): one store call timing out must
not fail its neighbours on the same connection whose own deadline has not passed, and afterwards
nothing is locked (issue 14, item 3: "one call's timeout resets the one shared Redis connection,
so every other call in flight on it fails too").

Timeline (store.timeout_ms 450, Redis asleep 0.65 s from t0, seen asleep at about t0+0.05): at
t0+0.05 an admission on key ``early`` is sent on each gateway (its deadline, t0+0.5, passes while
Redis sleeps); at t0+0.35, while the early ones still wait, an admission on key ``late`` and a
/readyz PING are sent on each gateway (deadline t0+0.8; Redis answers at t0+0.65). Each margin
is about 0.15 s.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.faults import redis_control
from tests.faults.conftest import StartGateways
from tests.faults.harness import (
    Answer,
    Key,
    admitted_at_once,
    calibrate,
    chat,
    counters_equal_usage,
    ready,
)
from tests.redis_server import RedisServer

TIMEOUT_MS = 450
SLEEP = 0.65
LATE = 0.35


@pytest.mark.parametrize("on_error", ["closed", "open"])
async def test_a_timed_out_call_does_not_fail_its_neighbours(
    fault_redis: RedisServer, gateways: StartGateways, http: aiohttp.ClientSession, on_error: str
) -> None:
    """The late requests, sent while the early ones wait and answered within their own
    deadline, are admitted on the store's verdict (200 with rate-limit headers: not 503, and
    in open mode not admitted blind), and /readyz stays 200; afterwards both keys are admitted
    at once and counted exactly."""
    early, late = Key("early"), Key("late")
    pair = await gateways(on_error, TIMEOUT_MS, [early, late])
    ledgers = {k.id: await calibrate(http, pair, k) for k in (early, late)}
    for ledger in ledgers.values():  # the warm-ups' usage written: no settle rides the spell
        await counters_equal_usage(http, pair, ledger)

    loop = asyncio.get_running_loop()
    async with redis_control.slowed(fault_redis, SLEEP) as t0:
        first = [asyncio.create_task(chat(http, g, early, stream=False)) for g in pair]
        await asyncio.sleep(max(0.0, t0 + LATE - loop.time()))  # to t0 + 0.35: a moment
        late_sent = loop.time()
        second = [asyncio.create_task(chat(http, g, late, stream=False)) for g in pair]
        pings = [asyncio.create_task(ready(http, g)) for g in pair]
        early_answers: list[Answer] = list(await asyncio.gather(*first))
        late_answers: list[Answer] = list(await asyncio.gather(*second))
        readiness = list(await asyncio.gather(*pings))
    ledgers["early"].add(*early_answers)
    ledgers["late"].add(*late_answers)

    early_sent = min(a.sent for a in early_answers)
    assert late_sent < early_sent + TIMEOUT_MS / 1000 - 0.05, "the late calls left too late"
    assert late_sent + TIMEOUT_MS / 1000 > t0 + SLEEP + 0.05, "the late calls left too early"
    expected_early = (503, "store_unavailable") if on_error == "closed" else (200, None)
    assert all((a.status, a.code) == expected_early for a in early_answers), (
        "the early requests (their deadline passed while Redis slept): "
        + "; ".join(map(str, early_answers))
    )
    assert all(a.status == 200 and a.store_verdict for a in late_answers), (
        "requests whose own deadline had not passed failed with their neighbour: "
        + "; ".join(f"{a} ratelimit headers: {a.store_verdict}" for a in late_answers)
    )
    assert readiness == [True, True], f"/readyz during the slow spell: {readiness}"

    for key in (early, late):
        await admitted_at_once(http, pair, ledgers[key.id])
    for key in (early, late):
        await counters_equal_usage(http, pair, ledgers[key.id])
