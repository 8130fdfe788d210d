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

import pytest

from tests.fakes import FakeUpstream
from tests.hostile.every_api import CASES, what_the_worker_got

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
    seen = await what_the_worker_got(gateway_factory, fake, case, fields=HOSTILE)
    sent = seen.body
    assert isinstance(sent, dict), sent
    assert not set(sent) & set(HOSTILE), sorted(set(sent) & set(HOSTILE))
