"""Headers a worker (or the serving stack in front of it) reads as the operator's word, sent by a
client: every end-to-end header of a request went on to the worker, so

- ``x-prefiller-host-port`` reached llm-d's prefill/decode sidecar on a decode worker, which
  sends the request to the prefill server that header names and takes its KV blocks from it: a
  host and port of the client's choosing, inside the operator's network (as
  ``kv_transfer_params`` in the body, ``tests/hostile/test_operator_fields``);
- ``X-data-parallel-rank`` pinned the request to one data-parallel rank of a vLLM worker, around
  the worker's own balancing of its ranks (every request of a tenant on one engine).

The routing between workers is the gateway's; neither header is the client's to send.

Each case runs a real gateway in front of a real aiohttp worker and reads the headers the worker
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

HOSTILE = {"x-prefiller-host-port": "10.0.0.66:8000", "X-data-parallel-rank": "3"}


@pytest.mark.parametrize("case", list(CASES))
async def test_the_worker_never_gets_a_clients_routing_headers(
    gateway_factory: Any, fake: FakeUpstream, case: str
) -> None:
    """Observed (before): both headers reached the worker as sent. Expected: neither."""
    path, body = CASES[case]
    server: Server = await gateway_factory(every_api_config(fake.url))
    headers = {**AUTH, **HOSTILE}
    if path == "/v1/messages":
        headers["anthropic-version"] = "2023-06-01"
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{server.port}{path}", json=body, headers=headers) as r,
    ):
        await r.read()
    assert fake.seen, f"the worker was not asked ({r.status})"
    got = {name.lower() for name in fake.seen[-1].headers}
    assert not got & {name.lower() for name in HOSTILE}, sorted(got)
