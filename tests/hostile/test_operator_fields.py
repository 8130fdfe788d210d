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

import aiohttp
import pytest

from gateway.server import Server
from tests.clients import AUTH
from tests.fakes import FakeUpstream
from tests.hostile.every_api import CASES, every_api_config

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
    path, body = CASES[case]
    server: Server = await gateway_factory(every_api_config(fake.url))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}", json={**body, **HOSTILE}, headers=AUTH
        ) as r,
    ):
        await r.read()
    assert fake.seen, f"the worker was not asked ({r.status})"
    sent = fake.seen[-1].body
    assert isinstance(sent, dict), sent
    assert "priority" not in sent and "kv_transfer_params" not in sent, sent
