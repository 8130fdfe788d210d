"""Redis killed (SIGKILL) and restarted on the same port under two gateway processes and load.
The server keeps an fsync'd append-only file, so the restart brings back every lease, counter and
usage row: what the kill left behind is still there to lock the key out or to miscount it.

Closed: 503 store_unavailable while Redis is down, never a 500. Open: admitted meanwhile, the
usage buffered and written once Redis is back. Afterwards, in both: the key is admitted at once,
its concurrency is free, counters and usage equal what was served.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.faults import redis_control
from tests.faults.conftest import StartGateways
from tests.faults.harness import (
    Key,
    Load,
    admitted_at_once,
    assert_no_server_errors,
    calibrate,
    counters_equal_usage,
    outcomes,
)
from tests.redis_server import RedisServer


@pytest.mark.parametrize("on_error", ["closed", "open"])
async def test_kill_and_restart_under_load(
    fault_redis: RedisServer, gateways: StartGateways, http: aiohttp.ClientSession, on_error: str
) -> None:
    """Down for 0.6 s while four loops chat through two processes, then restarted with its
    data. While down: closed answers only 503 store_unavailable (no 500, no broken
    connection), open admits without the store. After: admitted at once, counted exactly."""
    key = Key("restart")
    pair = await gateways(on_error, 250, [key])
    ledger = await calibrate(http, pair, key)
    load = Load(http, pair, key).start()
    await load.until_admitted(10)
    await redis_control.kill(fault_redis)
    down_from = asyncio.get_running_loop().time()
    await asyncio.sleep(0.6)  # Redis stays down this long (a duration, not a wait)
    restarting_from = asyncio.get_running_loop().time()
    await redis_control.restart(fault_redis)
    answers = await load.stop()
    ledger.add(*answers)

    assert_no_server_errors(answers)
    while_down = [a for a in answers if a.sent > down_from + 0.05 and a.ended < restarting_from]
    assert while_down, f"no request ran while Redis was down: {outcomes(answers)}"
    if on_error == "closed":
        assert {(a.status, a.code) for a in while_down} == {(503, "store_unavailable")}, outcomes(
            while_down
        )
    else:
        assert all(a.status == 200 and not a.store_verdict for a in while_down), outcomes(
            while_down
        )
        assert not any(a.status == 503 for a in answers), outcomes(answers)

    await admitted_at_once(http, pair, ledger)
    await counters_equal_usage(http, pair, ledger)
