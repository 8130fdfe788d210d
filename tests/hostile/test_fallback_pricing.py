"""A fallback model is charged at its own prices: a request the cheap model could not serve
(its worker failed, or refused a prompt past its context with ``context_length`` in
``retry.on``, which the client chooses by the prompt's size) and that a dearer fallback
answered was priced, reserved and recorded as the cheap model's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, completion

# µ$1,000 a token out: 1,000 tokens cost $1.
DEAR = {"input_per_mtok": 0.0, "output_per_mtok": 1000.0}


async def _down(request: web.Request, body: Any) -> web.StreamResponse:
    return web.json_response({"error": {"message": "overloaded"}}, status=503)


async def _thousand(request: web.Request, body: Any) -> web.StreamResponse:
    return web.json_response(completion("x", prompt=5, completion_tokens=1000))


async def _cheap_falling_back_to_dear(
    gateway_factory: Any, broken: FakeUpstream, good: FakeUpstream, budget: float
) -> Server:
    """``cheap`` (free, on ``broken``) falls back to ``dear`` (on ``good``); one key allowed
    both, held to ``budget`` dollars a day."""
    text = gateway_yaml(
        {"broken": broken.url, "good": good.url},
        {
            "cheap": {"upstreams": ["broken"], "fallbacks": ["dear"], "retry": {"attempts": 1}},
            "dear": {"upstreams": ["good"], "pricing": DEAR},
        },
        extra=f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', "
        f"daily_budget_usd: {budget}}}]}}\n",
    )
    server: Server = await gateway_factory(text)
    return server


async def test_a_fallbacks_answer_costs_the_fallbacks_price(gateway_factory: Any) -> None:
    """Attack: a key allowed both models and held to a $0.50 day asks for ``cheap`` (free),
    whose worker fails; ``dear`` answers 1,000 tokens ($1.00). Observed: cost 0, the budget
    untouched, usage recorded under ``cheap``. Expected: $1.00 charged (the day then refuses
    the next request), usage under ``dear``."""
    broken, good = FakeUpstream(script=_down), FakeUpstream(script=_thousand)
    await broken.start()
    await good.start()
    try:
        server = await _cheap_falling_back_to_dear(gateway_factory, broken, good, 0.5)
        base = f"http://127.0.0.1:{server.port}"
        body = {"model": "cheap", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/v1/chat/completions", json=body, headers=AUTH) as r:
                assert r.status == 200, await r.text()
            assert good.seen, "the fallback answered"
            async with http.get(f"{base}/api/usage/summary?period=7d", headers=AUTH) as r:
                summary = await r.json()
        by_model = {row["model"]: row for row in summary["byModel"]}
        assert summary["cost"] >= 1.0 and "dear" in by_model, summary
    finally:
        await broken.stop()
        await good.stop()


async def _slow_thousand(request: web.Request, body: Any) -> web.StreamResponse:
    await asyncio.sleep(0.5)  # the worker's generation: every request is in flight at once
    return web.json_response(completion("x", prompt=5, completion_tokens=1000))


async def test_concurrent_fallbacks_stay_within_the_budget(gateway_factory: Any) -> None:
    """Attack: five requests at once for ``cheap`` (free; its worker fails), on a $2.50 day;
    ``dear`` answers each with $1.00 of tokens. Observed: all five admitted (each reserved $0 at
    cheap's prices), $5.00 spent. Expected: a request is reserved at the dearest model that may
    answer it, so at most two are served and the day stays within $2.50."""
    broken, good = FakeUpstream(script=_down), FakeUpstream(script=_slow_thousand)
    await broken.start()
    await good.start()
    try:
        server = await _cheap_falling_back_to_dear(gateway_factory, broken, good, 2.5)
        base = f"http://127.0.0.1:{server.port}"
        body = {
            "model": "cheap",
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with aiohttp.ClientSession() as http:

            async def one() -> int:
                async with http.post(f"{base}/v1/chat/completions", json=body, headers=AUTH) as r:
                    await r.read()
                    return r.status

            statuses = await asyncio.gather(*(one() for _ in range(5)))
            async with http.get(f"{base}/api/usage/summary?period=7d", headers=AUTH) as r:
                summary = await r.json()
        assert summary["cost"] <= 2.5, (sorted(statuses), summary["cost"])
    finally:
        await broken.stop()
        await good.stop()
