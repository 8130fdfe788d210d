"""Fields an SGLang worker reads as the operator's word, sent by a client (SGLang's OpenAI
``ChatCompletionRequest``, ``CompletionRequest`` and ``EmbeddingRequest`` take them as
extensions; the gateway forwarded every field it does not read):

- ``bootstrap_host``, ``bootstrap_port``, ``bootstrap_room``: prefill/decode disaggregation, the
  host a decode server fetches the KV cache from (a host and port of the client's choosing, as
  vLLM's ``kv_transfer_params``);
- ``routed_dp_rank``, ``disagg_prefill_dp_rank``, ``data_parallel_rank``: the data-parallel
  worker an external router assigns;
- ``rid``: the request's id in the engine (as vLLM's ``request_id``);
- ``lora_path``: the LoRA adapter to run, whatever model the key was allowed (an operator
  exposes an adapter as a model of its own, ``upstream_model: base:adapter``);
- ``custom_logit_processor``: a serialized Python callable run in the sampler (with
  ``--enable-custom-logit-processor``: code of the client's choosing on the worker).

Each case runs a real gateway in front of a real aiohttp worker and reads the body it got.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway.server import Server
from tests.clients import AUTH
from tests.fakes import FakeUpstream
from tests.hostile.every_api import CASES, every_api_config

HOSTILE: dict[str, Any] = {
    "bootstrap_host": "10.0.0.66",
    "bootstrap_port": 8998,
    "bootstrap_room": 7,
    "routed_dp_rank": 3,
    "disagg_prefill_dp_rank": 1,
    "data_parallel_rank": 3,
    "rid": "victim-request",
    "lora_path": "another-tenants-adapter",
    "custom_logit_processor": '{"callable": "gASV..."}',
}


@pytest.mark.parametrize("case", list(CASES))
async def test_an_sglang_worker_never_gets_a_clients_operator_fields(
    gateway_factory: Any, fake: FakeUpstream, case: str
) -> None:
    """Observed (before): every field reached the worker as sent. Expected: none."""
    path, body = CASES[case]
    server: Server = await gateway_factory(every_api_config(fake.url))
    headers = {**AUTH, "anthropic-version": "2023-06-01"} if path == "/v1/messages" else AUTH
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}", json={**body, **HOSTILE}, headers=headers
        ) as r,
    ):
        await r.read()
    assert fake.seen, f"the worker was not asked ({r.status})"
    sent = fake.seen[-1].body
    assert isinstance(sent, dict), sent
    assert not set(sent) & set(HOSTILE), sorted(set(sent) & set(HOSTILE))
