"""A big usage report beside running chats: the report's store calls must not take the chats'
admissions down with them (issue 14, item 3: "a slow usage report — thousands of pipelined
HGETALLs on the same connection and budget — can turn concurrent chats into 503s").

An owner with 2,000 keys and 30 days of usage each (60,000 usage hashes) is written straight into
Redis in the layout of ``gateway.store.redis_codec``; its 30-day summary is asked of both gateways,
twice, while eight loops chat on another owner's key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest

from gateway.limits.windows import days_back
from tests.faults import redis_control
from tests.faults.conftest import StartGateways
from tests.faults.harness import (
    MODEL,
    Answer,
    Key,
    Load,
    admin_get,
    admitted_at_once,
    assert_no_server_errors,
    calibrate,
    counters_equal_usage,
    outcomes,
)
from tests.redis_server import RedisServer

OWNER = "bigco"
KEYS = 2000
DAYS = 30
ROUNDS = 2  # reports asked of each gateway, one after the other, while the chats run
PER_DAY = {"r": 1, "p": 10, "c": 5}  # requests, prompt and completion tokens per key and day


def seed_commands(now: float) -> Iterator[tuple[str | bytes | int, ...]]:
    """The owner's keys (records, id → hash, the owner's set) and a usage hash per key and day
    with its index of days, as the store writes them."""
    fields: dict[str, str | int] = {f"{stat}:{MODEL}": n for stat, n in PER_DAY.items()}
    fields |= {f"l:{MODEL}": "12.5", f"b3:{MODEL}": 1}
    return redis_control.big_owner(OWNER, KEYS, days_back(now, DAYS), now, fields)


@pytest.mark.parametrize("on_error", ["closed", "open"])
async def test_a_big_usage_report_does_not_fail_chats(
    fault_redis: RedisServer, gateways: StartGateways, http: aiohttp.ClientSession, on_error: str
) -> None:
    """While both gateways build the 30-day summary of 2,000 keys by 30 days, every chat is
    answered on the store's verdict: no 503 (closed), no admission without the store (open).
    The report itself is never a 500 (a 200 has the seeded totals); afterwards the chat key is
    admitted at once and counted exactly."""
    sent = await asyncio.to_thread(redis_control.pipeline, fault_redis, seed_commands(time.time()))
    assert sent > KEYS * DAYS
    key = Key("chat")
    pair = await gateways(on_error, 250, [key])
    ledger = await calibrate(http, pair, key)
    load = Load(http, pair, key, loops=8).start()
    await load.until_admitted(5)
    started = asyncio.get_running_loop().time()
    reports = []
    for _ in range(ROUNDS):
        reports += await asyncio.gather(
            *(admin_get(http, g, f"/admin/usage/summary?owner={OWNER}&period=30d") for g in pair)
        )
    took = asyncio.get_running_loop().time() - started
    answers = await load.stop()
    ledger.add(*answers)

    during: list[Answer] = [a for a in answers if a.sent >= started and a.sent <= started + took]
    assert during, f"no chat ran beside the reports ({took:.2f} s): {outcomes(answers)}"
    assert_no_server_errors(answers)
    blind = [a for a in answers if a.status == 503 or (a.status == 200 and not a.store_verdict)]
    assert not blind, (
        f"{len(blind)} chats beside {took:.2f} s of usage reports were answered without the "
        f"store (503, or admitted blind): {outcomes(answers)}; the reports: "
        f"{[status for status, _ in reports]}"
    )
    for status, body in reports:
        assert status != 500 and status in (200, 503, 504), f"the report: {status} {body!r:.300}"
        if status == 200:
            assert body["totalRequests"] == KEYS * DAYS * PER_DAY["r"], body
            assert body["inputTokens"] == KEYS * DAYS * PER_DAY["p"], body
            assert body["outputTokens"] == KEYS * DAYS * PER_DAY["c"], body

    await admitted_at_once(http, pair, ledger)
    await counters_equal_usage(http, pair, ledger)
