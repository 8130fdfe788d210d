"""Fields a vLLM worker reads as the operator's word, sent by a client: ``priority`` orders the
worker's queue (under ``--scheduling-policy priority`` a tenant sending ``priority: -1000`` is
served before every other tenant, around the gateway's fair sharing), and ``kv_transfer_params``
tells a disaggregated (prefill/decode) worker where to fetch KV blocks from: a host and port of
the client's choosing. The gateway forwarded both as sent, on every API.

Each case runs a real gateway in front of a real aiohttp worker and reads the body the worker
got.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import FakeUpstream
from tests.hostile.every_api import CASES, what_the_worker_got

HOSTILE = {
    "priority": -1000,
    "kv_transfer_params": {
        "remote_host": "10.0.0.66",
        "remote_port": 5600,
        "do_remote_prefill": True,
    },
}


@pytest.mark.parametrize("case", list(CASES))
async def test_the_worker_never_gets_a_clients_priority_or_kv_transfer_params(
    gateway_factory: Any, fake: FakeUpstream, case: str
) -> None:
    seen = await what_the_worker_got(gateway_factory, fake, case, fields=HOSTILE)
    sent = seen.body
    assert isinstance(sent, dict), sent
    assert "priority" not in sent and "kv_transfer_params" not in sent, sent
