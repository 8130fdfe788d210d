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

import pytest

from tests.fakes import FakeUpstream
from tests.hostile.every_api import CASES, what_the_worker_got

HOSTILE = {"x-prefiller-host-port": "10.0.0.66:8000", "X-data-parallel-rank": "3"}


@pytest.mark.parametrize("case", list(CASES))
async def test_the_worker_never_gets_a_clients_routing_headers(
    gateway_factory: Any, fake: FakeUpstream, case: str
) -> None:
    """Observed (before): both headers reached the worker as sent. Expected: neither."""
    seen = await what_the_worker_got(gateway_factory, fake, case, headers=HOSTILE)
    got = {name.lower() for name in seen.headers}
    assert not got & {name.lower() for name in HOSTILE}, sorted(got)
