"""Attacks found by a security review of the second wave, each on a real gateway over real
sockets: a second ``model`` form field smuggled past the key's model list, reservations that
ignored how many answers (``n``), prompts, images or scored pairs a request asks for, and one
owner's stored responses evicting another's."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.auth.keys import sha256_hex
from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, completion


class FormUpstream:
    """A worker that records every multipart form it gets (each part's name and value)."""

    def __init__(self) -> None:
        self.forms: list[list[tuple[str, str | None, bytes]]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts: list[tuple[str, str | None, bytes]] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            parts.append((part.name or "", part.filename, await part.read()))
        self.forms.append(parts)
        return web.json_response({"text": "ok", "usage": {"type": "duration", "seconds": 1}})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def form_upstream() -> Any:
    upstream = FormUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


CHEAP_KEY = "test-cheap-model-only-key-0123456789"


@pytest.mark.parametrize("model_first", [True, False])
async def test_multipart_model_field_after_the_file_is_smuggled_to_the_worker(
    gateway_factory: Any, form_upstream: FormUpstream, model_first: bool
) -> None:
    """Attack: a key allowed only ``cheap`` sends an audio form ``model=cheap``, the file, then
    a second ``model`` field naming another model served by the same worker (a multi-model
    worker: vLLM with LoRA adapters, Ollama, llama.cpp's router, LiteLLM). The gateway reads the
    first ``model`` (checks the key's model list, prices, routes by it) and streams every part
    after the file as sent, so the worker gets two ``model`` fields, the client's last
    (Starlette/FastAPI, as vLLM uses, take the last value of a repeated field).
    Observed: the worker's form has ``model`` twice: ``org/cheap`` and ``org/expensive``.
    Expected: exactly one ``model``, the gateway's (a later ``model`` part dropped or a 400)."""
    url = f"http://127.0.0.1:{form_upstream.port}"
    text = gateway_yaml(
        {"w": url},
        {
            "cheap": {"upstreams": ["w"], "upstream_model": "org/cheap", "apis": ["audio"]},
            "expensive": {"upstreams": ["w"], "upstream_model": "org/expensive", "apis": ["audio"]},
        },
        extra=(
            "keys:\n  static:\n"
            f"    - {{id: cheap, owner: tests, sha256: '{sha256_hex(CHEAP_KEY)}', "
            "permissions: [audio], models: [cheap]}\n"
        ),
    )
    server: Server = await gateway_factory(text)
    form = aiohttp.FormData(default_to_multipart=True)
    if model_first:
        form.add_field("model", "cheap")
    form.add_field("file", b"RIFF....", filename="a.wav", content_type="audio/wav")
    if not model_first:
        form.add_field("model", "cheap")
    form.add_field("model", "org/expensive")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/audio/transcriptions",
            data=form,
            headers={"Authorization": f"Bearer {CHEAP_KEY}"},
        ) as r,
    ):
        answer = await r.read()
    got = [[bytes(v) for name, _, v in form if name == "model"] for form in form_upstream.forms]
    assert all(models == [b"org/cheap"] for models in got), f"the worker got {got}"
    assert r.status == 400 and b"appears twice" in answer, (r.status, answer[:200])


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/chat/completions"])
async def test_n_choices_are_not_reserved(
    gateway_factory: Any, fake: FakeUpstream, path: str
) -> None:
    """Attack: a key with ``dailyLimit: 1000`` asks for ``max_output_tokens`` (``max_tokens``)
    10 and ``n: 100``. The reservation is the prompt estimate + 10 (``n`` is ignored; only the
    completions API multiplies by ``max(n, best_of)``), while the worker is sent ``n: 100`` and
    may produce 100 x 10 tokens: one request overshoots the token (and tpm, money) limits by
    ``n`` times its reservation; on ``/v1/responses`` ``n`` is not even a field of the API, it
    is forwarded as an "other field" (chat's own reservation ignored ``n`` before de65f2e
    too; the Responses route and the new tpm/money budgets inherit it).
    Observed: 200, the worker got ``n: 100``, the key is charged 1000+ tokens past its limit.
    Expected: a 429 (the reservation counts every choice) or ``n`` not forwarded."""

    async def many(request: web.Request, body: Any) -> web.StreamResponse:
        n = body.get("n") or 1
        return web.json_response(completion("x", prompt=5, completion_tokens=10 * n))

    fake.script = many
    text = gateway_yaml(
        {"up": fake.url},
        {"m": {"upstreams": ["up"]}},
        extra=(
            f"keys: {{static: [{{id: lim, owner: acme, sha256: '{TEST_KEY_SHA}', "
            "daily_limit: 1000}]}\n"
        ),
    )
    server: Server = await gateway_factory(text)
    if path == "/v1/responses":
        body: dict[str, Any] = {"model": "m", "input": "hi", "max_output_tokens": 10, "n": 100}
    else:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
        body["n"] = 100
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}",
            json=body,
            headers={"Authorization": f"Bearer {TEST_KEY}"},
        ) as r,
    ):
        await r.read()
    sent = fake.seen[-1].body.get("n") if fake.seen else None
    assert r.status == 429 or sent in (None, 1), f"status {r.status}, the worker got n={sent}"


def _limited(upstream: str, model: dict[str, Any], key: str, apis: list[str]) -> str:
    return gateway_yaml(
        {"up": upstream},
        {"m": {"upstreams": ["up"], "apis": apis, **model}},
        extra=f"keys: {{static: [{{id: lim, owner: acme, sha256: '{TEST_KEY_SHA}', {key}}}]}}\n",
    )


async def _post(server: Server, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}",
            json=body,
            headers={"Authorization": f"Bearer {TEST_KEY}"},
        ) as r,
    ):
        return r.status, await r.read()


async def test_completions_reserve_one_completion_per_request_not_per_prompt(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """Attack: ``POST /v1/completions`` with ``prompt`` a list of 100 strings and ``max_tokens``
    10, on a key with ``dailyLimit: 500``. A worker (vLLM, OpenAI) completes every prompt of
    the list (``n`` completions each), so the request may generate 100 x 10 tokens; the
    reservation is the prompt estimate + ``max_tokens`` x ``max(n, best_of)`` = ~10.
    Observed: 200; the key is charged 1000+ tokens against a limit of 500 by one request.
    Expected: 429 ``daily_limit_exceeded`` (the reservation counts every prompt of the batch)."""

    async def batch(request: web.Request, body: Any) -> web.StreamResponse:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        return web.json_response(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "model": body["model"],
                "choices": [
                    {"index": i, "text": "x", "finish_reason": "length"}
                    for i in range(len(prompts))
                ],
                "usage": {
                    "prompt_tokens": len(prompts),
                    "completion_tokens": 10 * len(prompts),
                    "total_tokens": 11 * len(prompts),
                },
            }
        )

    fake.script = batch
    server: Server = await gateway_factory(
        _limited(fake.url, {}, "daily_limit: 500", ["completions"])
    )
    status, _ = await _post(
        server, "/v1/completions", {"model": "m", "prompt": ["p"] * 100, "max_tokens": 10}
    )
    assert status == 429, f"status {status}: 100 prompts x 10 tokens admitted under 500"


async def test_images_money_budget_reserves_one_image_whatever_n(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """Attack: a key with ``daily_budget_usd: 1`` on a model priced ``per_image: 0.5`` asks
    ``/v1/images/generations`` for ``n: 10``. The admission reserves the cost of
    ``(prompt 0, completion 0)`` (``govern.admit`` passes no images), i.e. $0, while the request
    makes 10 images = $5 settled afterwards: one request spends 5x the day's budget (128 images,
    the maximum ``n``, 64x).
    Observed: 200, then the key is $4 past its budget.
    Expected: 429 ``budget_exceeded`` (``n`` x ``per_image`` reserved, as tokens are)."""

    async def images(request: web.Request, body: Any) -> web.StreamResponse:
        n = body.get("n") or 1
        return web.json_response({"created": 1, "data": [{"url": "u"}] * n})

    fake.script = images
    server: Server = await gateway_factory(
        _limited(
            fake.url,
            {"pricing": {"per_image": 0.5}},
            "daily_budget_usd: 1, permissions: [images]",
            ["images"],
        )
    )
    status, _ = await _post(
        server, "/v1/images/generations", {"model": "m", "prompt": "a fox", "n": 10}
    )
    assert status == 429, f"status {status}: 10 images at $0.5 admitted under a $1 budget"


@pytest.mark.parametrize(
    ("path", "pair"),
    [("/v1/rerank", ("query", "documents")), ("/v1/score", ("text_1", "text_2"))],
)
async def test_rerank_reserves_the_body_not_query_times_documents(
    gateway_factory: Any, fake: FakeUpstream, path: str, pair: tuple[str, str]
) -> None:
    """Attack: a rerank (score) request with a 4,000-character query (``text_1``) and 400
    one-letter documents (``text_2``), on a key with ``dailyLimit: 5000`` (``embeddings``
    permission). A cross-encoder scores each (query, document) pair, so the worker processes
    ~400 x 1,000 tokens and reports them (vLLM's ``usage``); the reservation is the body's
    size / 4 (~1,400 tokens).
    Observed: 200; one request charges ~400,000 tokens against a daily limit of 5,000.
    Expected: 429 (the reservation counts the query once per document)."""

    async def pairs(request: web.Request, body: Any) -> web.StreamResponse:
        first, second = body[pair[0]], body[pair[1]]
        tokens = (len(first) // 4 + 1) * len(second)
        return web.json_response(
            {
                "id": "rerank-1",
                "model": body["model"],
                "results": [{"index": 0, "relevance_score": 0.5}],
                "data": [{"index": 0, "object": "score", "score": 0.5}],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    fake.script = pairs
    server: Server = await gateway_factory(
        _limited(fake.url, {}, "daily_limit: 5000, permissions: [embeddings]", ["rerank"])
    )
    status, _ = await _post(server, path, {"model": "m", pair[0]: "q" * 4000, pair[1]: ["d"] * 400})
    assert status == 429, f"status {status}: ~400,000 tokens admitted under a 5,000 daily limit"


async def test_one_owner_evicts_another_owners_stored_responses(
    gateway_factory: Any, mock: tuple[int, Any], fake: FakeUpstream, monkeypatch: Any
) -> None:
    """Attack: on the ``memory://`` store (the single-process default) stored Responses share
    one byte budget across all owners (``MemoryResponses``, 256 MiB, oldest dropped first).
    Owner ``others`` stores responses until the budget is full: owner ``tests``'s stored
    response is dropped, and its next turn (``previous_response_id``) or ``GET`` is a 404. The
    budget is shrunk here to 64 KiB so that a few requests fill it (at 256 MiB: 256 requests
    of 1 MiB, well within one key's rights).
    Observed: ``tests``'s response is gone (404) after ``others`` stored five of its own.
    Expected: one owner's records never evict another's (a budget per owner, or a refusal to
    store past it)."""
    from gateway.store import responses_store_memory
    from tests.proxy.responses_support import OTHER_KEY, bearer, call, responses_yaml

    monkeypatch.setattr(responses_store_memory.MemoryResponses.__init__, "__defaults__", (65536,))
    server: Server = await gateway_factory(responses_yaml(mock[0], fake.url))
    status, _, mine = await call(
        server, "POST", "/v1/responses", json={"model": "mock-model", "input": "echo: mine"}
    )
    assert status == 200, mine
    for _ in range(5):
        status, _, body = await call(
            server,
            "POST",
            "/v1/responses",
            json={"model": "mock-model", "input": "echo: " + "x" * 15_000},
            headers=bearer(OTHER_KEY),
        )
        assert status == 200, body
    status, _, body = await call(server, "GET", f"/v1/responses/{mine['id']}")
    assert status == 200, f"owner tests's response was evicted by owner others: {status} {body}"
