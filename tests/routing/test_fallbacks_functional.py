"""Retries and fallbacks as a client sees them, with the official SDKs: a failing model's
request is served by its fallback (the answer and the access log name the model that served
it), a prompt too long for one model goes to a longer one, a key's model list is respected,
only the failures listed in ``retry.on`` are retried, never after the first byte, and a failing
fleet gets at most its retry budget of extra requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from gateway.auth.keys import sha256_hex
from tests.clients import AUTH, claude, sdk
from tests.conftest import GatewayFactory
from tests.routing.support import Worker, config, stop_all, until, workers

CONTEXT = (
    "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens "
    "(8900 in the messages, 100 in the completion). Please reduce the length of the messages."
)
HEADERS = "routing: {expose_headers: true}"


@pytest.fixture
async def fleet() -> AsyncIterator[list[Worker]]:
    started = await workers("small-a", "small-b", "big")
    yield started
    await stop_all(started)


def models(retry: dict[str, Any] | None = None, fallbacks: list[str] | None = None) -> Any:
    small: dict[str, Any] = {"upstreams": ["small-a", "small-b"], "upstream_model": "org/small"}
    if retry is not None:
        small["retry"] = retry
    small["fallbacks"] = ["big"] if fallbacks is None else fallbacks
    return {"small": small, "big": {"upstreams": ["big"], "upstream_model": "org/big"}}


def urls(fleet: list[Worker]) -> dict[str, str | dict[str, Any]]:
    return {w.name: w.url for w in fleet}


async def test_a_failing_model_is_served_by_its_fallback(
    gateway_factory: GatewayFactory, fleet: list[Worker], capfd: pytest.CaptureFixture[str]
) -> None:
    small_a, small_b, big = fleet
    small_a.status = small_b.status = 503
    server = await gateway_factory(config(urls(fleet), models(), HEADERS))
    answer = await sdk(server).chat.completions.with_raw_response.create(
        model="small", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.headers["x-gateway-model"] == "big"
    assert answer.headers["x-gateway-upstream"] == "big"
    assert answer.parse().choices[0].message.content == "big"
    assert (small_a.chats, small_b.chats, big.seen_models) == (1, 1, ["org/big"])
    async with claude(server).messages.stream(
        model="small", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert "".join([t async for t in stream.text_stream]) == "big"
    await server.stop()  # flushes the access log
    lines = [orjson.loads(x) for x in capfd.readouterr().err.splitlines() if '"route"' in x]
    chats = [x for x in lines if x["path"] in ("/v1/chat/completions", "/v1/messages")]
    assert [(x["model"], x["upstream"], x["status"]) for x in chats] == [("big", "big", 200)] * 2


async def test_a_prompt_too_long_goes_to_the_longer_model_streamed_too(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    small_a, small_b, big = fleet
    small_a.status = small_b.status = 400
    small_a.error = small_b.error = CONTEXT
    retry = {"on": ["connect", "5xx", "429", "timeout", "context_length"]}
    server = await gateway_factory(config(urls(fleet), models(retry), HEADERS))
    async with claude(server).messages.stream(
        model="small", max_tokens=20, messages=[{"role": "user", "content": "a long prompt"}]
    ) as stream:
        assert "".join([t async for t in stream.text_stream]) == "big"
    answer = await sdk(server).chat.completions.with_raw_response.create(
        model="small", messages=[{"role": "user", "content": "a long prompt"}]
    )
    assert answer.headers["x-gateway-model"] == "big"
    # The context is the model's: its other upstream is not tried, nor is either ejected.
    assert small_a.chats + small_b.chats == 2 and big.chats == 2
    assert all(server.runtime.balancer.healthy(u) for u in server.runtime.config.upstreams.values())


async def test_a_context_length_error_with_nowhere_to_go_is_the_workers_own(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    big = fleet[2]
    for worker in fleet:
        worker.status, worker.error = 400, CONTEXT
    retry = {"on": ["connect", "context_length"]}
    server = await gateway_factory(config(urls(fleet), models(retry), HEADERS))
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk(server).chat.completions.create(
                model="small", stream=stream, messages=[{"role": "user", "content": "long"}]
            )
        assert caught.value.status_code == 400 and CONTEXT in caught.value.message
    assert big.chats == 2


async def test_a_plain_refusal_is_never_retried_streamed_or_not(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    """With context_length fallbacks on, a stream's refusal is read to tell it apart: any other
    refusal reaches the client as the worker said it."""
    small_a, small_b, big = fleet
    small_a.status = small_b.status = 400
    small_a.error = small_b.error = "temperature must be at most 2"
    server = await gateway_factory(config(urls(fleet), models({"on": ["context_length"]})))
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk(server).chat.completions.create(
                model="small", stream=stream, messages=[{"role": "user", "content": "x"}]
            )
        assert "temperature must be at most 2" in caught.value.message
    assert (small_a.chats + small_b.chats, big.chats) == (2, 0)


async def test_a_fallback_the_key_may_not_use_is_skipped(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    small_a, small_b, big = fleet
    small_a.status = small_b.status = 503
    limited = "limited-key-0123456789abcdef"
    keys = (
        f"keys: {{static: [{{id: lim, owner: o, sha256: '{sha256_hex(limited)}', "
        "models: [small]}]}\n"
    )
    server = await gateway_factory(config(urls(fleet), models(), keys))
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk(server, api_key=limited).chat.completions.create(
            model="small", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502
    assert big.chats == 0


async def test_only_the_failures_listed_in_on_are_retried(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    small_a, small_b, big = fleet
    small_a.status = small_b.status = 429
    server = await gateway_factory(config(urls(fleet), models({"on": ["connect", "5xx"]})))
    with pytest.raises(openai.APIStatusError):
        await sdk(server).chat.completions.create(
            model="small", messages=[{"role": "user", "content": "hi"}]
        )
    assert (small_a.chats + small_b.chats, big.chats) == (1, 0)


async def test_attempts_bound_the_upstreams_tried_per_model(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    small_a, small_b, big = fleet
    small_a.status = small_b.status = big.status = 500
    server = await gateway_factory(config(urls(fleet), models({"attempts": 1})))
    with pytest.raises(openai.InternalServerError):
        await sdk(server).chat.completions.create(
            model="small", messages=[{"role": "user", "content": "hi"}]
        )
    assert (small_a.chats + small_b.chats, big.chats) == (1, 1)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.admin_port}/metrics") as r,
    ):
        page = await r.text()
    assert 'gateway_model_fallbacks_total{fallback="big",model="small",reason="5xx"} 1.0' in page


async def test_never_after_the_first_byte(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    """A stream that breaks after its first event ends in an error event: no second try."""
    small_a, small_b, big = fleet

    async def first_then_die(request: Any, body: dict[str, Any]) -> Any:
        from aiohttp import web

        small_a.chats += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices":[{"index":0,"delta":{"content":"par"}}]}\n\n')
        assert request.transport is not None
        request.transport.close()
        return response

    small_a.script = small_b.script = first_then_die
    server = await gateway_factory(config(urls(fleet), models()))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/chat/completions",
            json={"model": "small", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            headers=AUTH,
        ) as r,
    ):
        body = await r.read()
    assert r.status == 200 and b"par" in body and b'"error"' in body
    assert (small_a.chats, big.chats) == (1, 0)


async def test_the_retry_budget_holds_under_a_failing_fleet(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    """40 requests fail at once: at most max(10, 20 % of those in flight) are retried, the
    rest answered at once; without the budget the fleet would get 80 requests."""
    small_a, small_b, _ = fleet
    first_wave, retries_held = asyncio.Event(), asyncio.Event()

    async def failing(request: Any, body: dict[str, Any]) -> Any:
        from aiohttp import web

        arrived = small_a.chats + small_b.chats
        if arrived <= 40:
            if arrived == 40:
                first_wave.set()
            await first_wave.wait()
        else:
            await retries_held.wait()  # retries stay in flight, holding the budget
        return web.json_response({"error": {"message": "overloaded"}}, status=503)

    async def counted(worker: Worker, request: Any, body: dict[str, Any]) -> Any:
        worker.chats += 1
        return await failing(request, body)

    small_a.script = lambda r, b: counted(small_a, r, b)
    small_b.script = lambda r, b: counted(small_b, r, b)
    server = await gateway_factory(config(urls(fleet), models({"budget_percent": 20}, [])))
    client = sdk(server, timeout=30)

    async def ask() -> int:
        try:
            await client.chat.completions.create(
                model="small", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIStatusError as err:
            return err.status_code
        return 200

    tasks = [asyncio.create_task(ask()) for _ in range(40)]
    await until(lambda: sum(t.done() for t in tasks) == 30, 10, "the refused answered")
    await until(lambda: small_a.chats + small_b.chats == 50, 10, "the retries arrived")
    retries_held.set()
    assert await asyncio.gather(*tasks) == [502] * 40
    assert small_a.chats + small_b.chats == 50  # 40 first attempts and 10 retries, no more
    assert server.runtime.balancer.budget.retries == 0
    assert server.runtime.balancer.in_flight == 0


async def test_a_client_that_leaves_before_the_first_byte_frees_its_upstream(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    small_a, small_b, _ = fleet
    small_a.gate = small_b.gate = asyncio.Event()
    server = await gateway_factory(config(urls(fleet), models()))
    client = claude(server, timeout=0.3)
    with pytest.raises(anthropic.APITimeoutError):
        await client.messages.create(
            model="small", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    balancer = server.runtime.balancer
    await until(lambda: balancer.in_flight == 0, what="the upstream released")
    assert balancer.state("small-a").in_flight + balancer.state("small-b").in_flight == 0
    small_a.gate.set()


async def test_every_failed_attempt_is_logged_with_the_request_id(
    gateway_factory: GatewayFactory, fleet: list[Worker], caplog: pytest.LogCaptureFixture
) -> None:
    small_a, small_b, _ = fleet
    small_a.status = small_b.status = 503
    server = await gateway_factory(config(urls(fleet), models()))
    caplog.set_level("INFO", logger="gateway.routing")
    answer = await sdk(server).chat.completions.with_raw_response.create(
        model="small",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Request-ID": "trace-16"},
    )
    assert answer.headers["X-Request-ID"] == "trace-16"
    attempts = [
        (r.request_id, r.model, r.upstream, r.reason)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "gateway.routing"
    ]
    assert sorted(attempts) == [
        ("trace-16", "small", "small-a", "5xx"),
        ("trace-16", "small", "small-b", "5xx"),
    ]


@pytest.mark.parametrize(
    ("status", "seen", "code"),
    [(404, 404, "model_not_found"), (401, 502, "upstream_unavailable"), (413, 413, None)],
)
async def test_other_refusals_keep_their_shape_with_context_fallbacks_on(
    gateway_factory: GatewayFactory, fleet: list[Worker], status: int, seen: int, code: str | None
) -> None:
    """Reading a stream's refusal for a context-length error changes nothing else: a 404 is
    still the model's, a worker's 401 still the operator's 502, a 413 still a 413."""
    small_a, small_b, big = fleet
    small_a.status = small_b.status = status
    retry = {"on": ["connect", "context_length"]}
    server = await gateway_factory(config(urls(fleet), models(retry)))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/chat/completions",
            json={"model": "small", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            headers=AUTH,
        ) as r,
    ):
        body = await r.json()
    assert r.status == seen
    if code is not None:
        assert body["error"]["code"] == code
    assert big.chats == 0
