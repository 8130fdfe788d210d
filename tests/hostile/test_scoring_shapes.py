"""Rerank and score reservations a client shrinks by the shape of its sides: the admission
reserves one side read again for every pair the gateway counts, the worker scores the pairs IT
reads from the same body.

- vLLM reads a side given as one multimodal object ``{"content": [p1, ..., pN]}`` as N inputs,
  one per part ("each content item is a separate scoring input", ``validate_score_input``): a
  query against such ``documents`` is N pairs, and the gateway counted the object as one.
- A score request names its sides by one of four pairs (``queries``/``documents``,
  ``queries``/``items``, ``data_1``/``data_2``, ``text_1``/``text_2``); the gateway counted the
  first of ``query``/``documents`` and those four that the body held, so a stray short ``query``
  (a field vLLM's score request does not read, and keeps as an extra) made a long ``queries``
  read against every document count as one character.

Each attack uses a key with ``dailyLimit: 5000`` (Redis store) and a worker that scores as vLLM
does and reports the tokens it read: the request must be refused (429), or reserved for what the
worker reads; the key's day may pass its limit by what the estimate missed, never by a multiple
of it. Observed (before): 200, ~2,000 tokens reserved, 50,000 read and charged.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

LIMIT = 5000
QUERY = "q" * 4000  # about 1,000 tokens, read once for every pair
DOCS = 50
# vLLM's score request, by the first pair of sides it holds (its union's order).
SCORE_SIDES = (("queries", "documents"), ("queries", "items"), ("data_1", "data_2"))
SCORE_SIDES += (("text_1", "text_2"),)


def _inputs(side: Any) -> list[Any]:
    """A side as vLLM's ``validate_score_input`` normalizes it."""
    if isinstance(side, str):
        return [side]
    if isinstance(side, dict):
        return list(side.get("content", []))
    return list(side)


def _read(body: dict[str, Any], path: str) -> int:
    """The tokens a vLLM scorer reads: every pair (1:N or N:N), both sides, ~4 chars a token."""
    if path.endswith("/rerank"):
        first, second = "query", "documents"
    else:
        first, second = next(p for p in SCORE_SIDES if p[0] in body and p[1] in body)
    ones, others = _inputs(body[first]), _inputs(body[second])
    firsts = ones * len(others) if len(ones) == 1 else ones  # 1:N, else N:N
    pairs = zip(firsts, others, strict=True)
    return sum((len(str(a)) + len(str(b))) // 4 for a, b in pairs)


async def _as_vllm(request: web.Request, body: Any) -> web.StreamResponse:
    tokens = _read(body, request.path)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
    return web.json_response(
        {
            "id": "s-1",
            "model": body["model"],
            "results": [{"index": 0, "relevance_score": 0.5}],
            "data": [{"index": 0, "object": "score", "score": 0.5}],
            "usage": usage,
        }
    )


TEXT_PARTS = {"content": [{"type": "text", "text": f"d{i}"} for i in range(DOCS)]}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "rerank documents as one multimodal object": (
        "/v1/rerank",
        {"query": QUERY, "documents": TEXT_PARTS},
    ),
    "score text_2 as one multimodal object": (
        "/v1/score",
        {"text_1": QUERY, "text_2": TEXT_PARTS},
    ),
    "score queries beside a stray short query": (
        "/v1/score",
        {"query": "x", "queries": QUERY, "documents": [f"d{i}" for i in range(DOCS)]},
    ),
    "score data sides beside stray query and documents": (
        "/v1/score",
        {"query": "x", "documents": ["y"], "data_1": QUERY, "data_2": ["d"] * DOCS},
    ),
}


async def _gateway(factory: Any, fake: FakeUpstream, redis_url: str) -> Server:
    fake.script = _as_vllm
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"], "apis": ["rerank"]}},
        extra=f"store: {{url: '{redis_url}'}}\n"
        f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', "
        f"daily_limit: {LIMIT}, permissions: [embeddings]}}]}}\n",
    )
    server: Server = await factory(text)
    return server


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_scoring_reservation_covers_the_pairs_the_worker_reads(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str, case: str
) -> None:
    server = await _gateway(gateway_factory, fake, redis_url)
    path, body = CASES[case]
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}", json={"model": "m", **body}, headers=AUTH
        ) as r,
    ):
        answer = await r.json()
    if r.status == 429:
        assert answer["error"]["code"] == "daily_limit_exceeded", answer
        assert fake.seen == [], "refused, yet the worker was asked"
        return
    assert r.status == 200, answer
    read = answer["usage"]["total_tokens"]
    assert read <= LIMIT, f"admitted, and the worker read {read} tokens on a {LIMIT}-token day"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/rerank", {"query": "capital of norway", "documents": ["Oslo", "Bergen"]}),
        ("/v1/score", {"queries": "capital of norway", "documents": ["Oslo", "Bergen"]}),
        ("/v1/score", {"text_1": ["a", "b"], "text_2": ["c", "d"]}),
    ],
)
async def test_ordinary_scoring_is_served(
    gateway_factory: Any, fake: FakeUpstream, redis_url: str, path: str, body: dict[str, Any]
) -> None:
    server = await _gateway(gateway_factory, fake, redis_url)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}", json={"model": "m", **body}, headers=AUTH
        ) as r,
    ):
        assert r.status == 200, await r.text()
