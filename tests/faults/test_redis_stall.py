"""Redis stalled (SIGSTOP, then SIGCONT) for longer than ``store.timeout_ms`` under two gateway
processes and load: afterwards the key is admitted at once, its concurrency is free, and its
token counter and recorded usage equal what the clients were served (issue 14, item 3).

During the stall the gateways give up on admissions Redis still holds in its socket buffer; Redis
runs them when it is continued. Nothing may leave those admissions holding a lease or a
reservation: the key's next request is admitted, and the counter is moved back to real usage.
"""

from __future__ import annotations

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
@pytest.mark.parametrize("seconds", [0.4, 1.5])
async def test_stall_under_load_leaves_the_key_admitted_and_counted(
    fault_redis: RedisServer,
    gateways: StartGateways,
    http: aiohttp.ClientSession,
    on_error: str,
    seconds: float,
) -> None:
    """A stall of 0.4 s / 1.5 s (timeout 250 ms) while four loops chat through two processes
    on a key with rpm, concurrency 2 and a daily limit. Closed: 503 store_unavailable meanwhile;
    open: admitted without the store. Then: the next request is admitted (not 429
    concurrency_limit_exceeded), two parallel ones too, and the counter equals served tokens."""
    key = Key("stall")
    pair = await gateways(on_error, 250, [key])
    ledger = await calibrate(http, pair, key)
    load = Load(http, pair, key).start()
    await load.until_admitted(10)
    await redis_control.stall(fault_redis, seconds)
    answers = await load.stop()
    ledger.add(*answers)

    assert_no_server_errors(answers)
    felt = [a for a in answers if a.status == 503 or (a.status == 200 and not a.store_verdict)]
    assert felt, f"the stall was not felt by any request: {outcomes(answers)}"
    if on_error == "open":
        assert not any(a.status == 503 for a in answers), outcomes(answers)

    await admitted_at_once(http, pair, ledger)
    await counters_equal_usage(http, pair, ledger)
