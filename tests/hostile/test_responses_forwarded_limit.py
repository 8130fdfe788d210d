"""A Responses request forwards the fields it does not know to the chat worker (a vendor's
``top_k``, the gateway's ``region``), ``max_tokens`` among them. For a model with a
``max_output_tokens`` ceiling, the translation compares the forwarded ``max_tokens`` with the
ceiling before the chat recipe checks it: a string or a list there is a ``TypeError``, a 500
(bad input is never a 500: docs/security.md, promise 4). The chat recipe itself answers the same
value with a 400 naming ``max_tokens``.

Fixed in ``gateway/proxy/responses.py``: the translation leaves the clamp to the chat recipe,
whose ``outbound`` lowers ``max_tokens`` and ``max_completion_tokens`` to the ceiling (whole
numbers only) before ``max_output_tokens`` answers any other value with its 400.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream


@pytest.mark.parametrize("value", ["abc", [1], {"n": 1}])
async def test_a_forwarded_max_tokens_of_the_wrong_type_is_a_400(
    gateway_factory: Any, fake: FakeUpstream, value: Any
) -> None:
    """A 400 naming ``max_tokens``, the worker not called (it was a 500, ``TypeError: '>' not
    supported between instances of 'str' and 'int'``)."""
    text = gateway_yaml({"up": fake.url}, {"m": {"upstreams": ["up"], "max_output_tokens": 100}})
    server: Server = await gateway_factory(text)
    body = {"model": "m", "input": [{"role": "user", "content": "hi"}], "max_tokens": value}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{server.port}/v1/responses", json=body, headers=AUTH) as r,
    ):
        answer = await r.json(content_type=None)
    assert r.status == 400, (r.status, answer)
    assert answer["error"]["param"] == "max_tokens", answer
    assert not fake.seen
