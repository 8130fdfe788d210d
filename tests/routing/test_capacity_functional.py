"""Full models over real sockets: an upstream with ``max_concurrency`` held busy by a fake
upstream that counts the requests it holds at once; requests wait in the fair queue instead of
getting a 503, are served by their owners' shares, and are refused (429 queue_full, 503
queue_timeout) with a Retry-After; with two gateways on one Redis the cap holds across both."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream, chunk, completion, sse

HEAVY_KEY = "heavy-static-key-0123456789abcdef"


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Busy:
    """What the fake upstream does with each request: hold it (``gate`` closed) or for
    ``delay`` seconds, counting requests held at once and recording who was served."""

    delay: float = 0.0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0
    peak: int = 0
    served: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self.held += 1
        self.peak = max(self.peak, self.held)
        self.served.append(str(body["messages"][0]["content"]))
        self.arrived.set()
        try:
            if self.delay:
                await asyncio.sleep(self.delay)  # the worker's own work, not a wait of the test
            else:
                await self.gate.wait()
        finally:
            self.held -= 1
        return web.json_response(completion("done"))


def config(url: str, cap: int, store: str = "memory://", extra: str = "") -> str:
    return gateway_yaml(
        {"gpu": url},
        {"m": {"upstreams": ["gpu"]}},
        extra=(
            "keys: {static: ["
            f"{{id: light, owner: light, sha256: '{TEST_KEY_SHA}'}}, "
            f"{{id: heavy, owner: heavy, sha256: '{_sha(HEAVY_KEY)}'}}]}}\n"
            "plans: {free: {share: 1, max_queued: 50}, pro: {share: 4, max_queued: 50}}\n"
            f"store: {{url: '{store}'}}\n" + extra
        ),
    ).replace(f"url: '{url}',", f"url: '{url}', max_concurrency: {cap},")


async def chat(
    http: aiohttp.ClientSession, server: Server, who: str, key: str = TEST_KEY
) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with http.post(
        f"http://127.0.0.1:{server.port}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "m", "messages": [{"role": "user", "content": who}]},
    ) as reply:
        return reply.status, dict(reply.headers), orjson.loads(await reply.read())


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def queued(http: aiohttp.ClientSession, server: Server, plan: str = "free") -> float:
    """The gateway's own count of waiting requests of ``plan`` (its /metrics page)."""
    async with http.get(f"http://127.0.0.1:{server.admin_port}/metrics") as reply:
        text = await reply.text()
    for line in text.splitlines():
        if line.startswith(f'gateway_queue_length{{plan="{plan}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_shares_split_slots_one_to_four(
    gateway_factory: GatewayFactory, fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """Two owners, plans of shares 1 and 4, each with far more requests than the upstream's 2
    slots: while both wait, the heavy owner is served about 4 times as often; every request
    is served (none refused) and the upstream never holds more than 2."""
    busy = Busy(delay=0.01)
    fake.script = busy
    server = await gateway_factory(config(fake.url, 2))
    await server.runtime.store.set_plan("heavy", "pro")
    tasks = []
    for _ in range(30):
        tasks.append(asyncio.create_task(chat(http, server, "light")))
        tasks.append(asyncio.create_task(chat(http, server, "heavy", HEAVY_KEY)))
    answers = await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert [status for status, _, _ in answers] == [200] * 60
    assert busy.peak == 2
    first = busy.served[:30]  # both owners still had plenty waiting
    assert 21 <= first.count("heavy") <= 27, first


async def test_a_request_that_waits_too_long_gets_queue_timeout(
    gateway_factory: GatewayFactory, fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    busy = Busy()
    fake.script = busy
    server = await gateway_factory(config(fake.url, 1, extra="scheduling: {max_wait: 0.3}\n"))
    holder = asyncio.create_task(chat(http, server, "first"))
    await asyncio.wait_for(busy.arrived.wait(), 5)
    started = time.monotonic()
    status, headers, body = await chat(http, server, "second")
    assert (status, body["error"]["code"]) == (503, "queue_timeout")
    assert 0.3 <= time.monotonic() - started < 3
    assert int(headers["Retry-After"]) >= 1
    assert busy.served == ["first"]  # the waiting one never reached the upstream
    busy.gate.set()
    assert (await holder)[0] == 200


async def test_past_max_queued_is_refused_queue_full(
    gateway_factory: GatewayFactory, fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    busy = Busy()
    fake.script = busy
    text = config(fake.url, 1).replace("free: {share: 1, max_queued: 50}", "free: {max_queued: 1}")
    server = await gateway_factory(text)
    holder = asyncio.create_task(chat(http, server, "first"))
    await asyncio.wait_for(busy.arrived.wait(), 5)
    waiting = asyncio.create_task(chat(http, server, "second"))
    await until(lambda: _equals(queued(http, server), 1.0))
    status, headers, body = await chat(http, server, "third")
    assert (status, body["error"]["code"]) == (429, "queue_full")
    assert int(headers["Retry-After"]) >= 1
    busy.gate.set()
    assert [(await holder)[0], (await waiting)[0]] == [200, 200]
    assert busy.served == ["first", "second"]


async def test_a_client_that_leaves_frees_its_place(
    gateway_factory: GatewayFactory, fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """The owner may queue one request: once the waiting client hangs up, another of the
    owner's requests takes its place, and is the one served when the slot frees."""
    busy = Busy()
    fake.script = busy
    text = config(fake.url, 1).replace("free: {share: 1, max_queued: 50}", "free: {max_queued: 1}")
    server = await gateway_factory(text)
    holder = asyncio.create_task(chat(http, server, "first"))
    await asyncio.wait_for(busy.arrived.wait(), 5)
    leaving = asyncio.create_task(chat(http, server, "leaves"))
    await until(lambda: _equals(queued(http, server), 1.0))
    leaving.cancel()
    await until(lambda: _equals(queued(http, server), 0.0))
    staying = asyncio.create_task(chat(http, server, "stays"))
    await until(lambda: _equals(queued(http, server), 1.0))
    busy.gate.set()
    assert [(await holder)[0], (await staying)[0]] == [200, 200]
    assert busy.served == ["first", "stays"]


@pytest.mark.parametrize("gateways", [2])
async def test_two_gateways_on_redis_never_pass_the_cap(
    gateways: int,
    gateway_factory: GatewayFactory,
    fake: FakeUpstream,
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    """Two gateways sharing one Redis, an upstream with max_concurrency 2: 24 requests sent to
    both at once are all served, and the upstream never holds more than 2 at a time (each
    gateway alone would have allowed 2)."""
    busy = Busy(delay=0.02)
    fake.script = busy
    servers = [await gateway_factory(config(fake.url, 2, redis_url)) for _ in range(gateways)]
    tasks = [asyncio.create_task(chat(http, servers[i % gateways], f"r{i}")) for i in range(24)]
    answers = await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert [status for status, _, _ in answers] == [200] * 24
    assert busy.peak == 2
    assert len(busy.served) == 24


async def _equals(value: Awaitable[float], expected: float) -> bool:
    return await value == expected


class StreamingBusy(Busy):
    """``Busy``, answering a stream request with a short event stream."""

    async def __call__(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if not body.get("stream"):
            return await super().__call__(request, body)
        await super().__call__(request, {**body, "stream": False})
        events = [
            chunk({"role": "assistant", "content": "hi"}),
            chunk({}, "stop", {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
            b"data: [DONE]\n\n",
        ]
        return await sse(request, events)


async def stream(
    http: aiohttp.ClientSession, server: Server, who: str, anthropic: bool = False
) -> tuple[int, str, bytes]:
    path = "/v1/messages" if anthropic else "/v1/chat/completions"
    body: dict[str, Any] = {"model": "m", "stream": True, "max_tokens": 16}
    body["messages"] = [{"role": "user", "content": who}]
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    if anthropic:
        headers["anthropic-version"] = "2023-06-01"
    async with http.post(
        f"http://127.0.0.1:{server.port}{path}", headers=headers, json=body
    ) as reply:
        return reply.status, reply.headers.get("Content-Type", ""), await reply.read()


async def test_a_waiting_stream_gets_queued_comments_then_its_answer(
    gateway_factory: GatewayFactory, fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """The head (200, an event stream) goes out with the first ``: queued`` comment, a second
    into the wait, and the answer follows in the same stream once a slot frees."""
    busy = StreamingBusy()
    fake.script = busy
    server = await gateway_factory(config(fake.url, 1))
    holder = asyncio.create_task(chat(http, server, "first"))
    await asyncio.wait_for(busy.arrived.wait(), 5)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "second"}]}
    started = time.monotonic()
    async with http.post(
        f"http://127.0.0.1:{server.port}/v1/chat/completions",
        headers={"Authorization": f"Bearer {TEST_KEY}"},
        json=body,
    ) as reply:
        assert reply.status == 200  # the head came with the comment: nothing was served yet
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        assert await asyncio.wait_for(reply.content.readuntil(b"\n\n"), 5) == b": queued\n\n"
        assert 0.9 <= time.monotonic() - started < 3
        assert busy.served == ["first"]
        busy.gate.set()
        rest = await asyncio.wait_for(reply.read(), 10)
    assert rest.endswith(b"data: [DONE]\n\n") and b'"hi"' in rest
    assert (await holder)[0] == 200


@pytest.mark.parametrize("anthropic", [False, True])
async def test_a_stream_that_waits_too_long_after_its_head_gets_an_error_event(
    anthropic: bool,
    gateway_factory: GatewayFactory,
    fake: FakeUpstream,
    http: aiohttp.ClientSession,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The head (200) went out with ``: queued``: the queue_timeout comes as an error event in
    the client's dialect, and the stream ends without [DONE]."""
    busy = StreamingBusy()
    fake.script = busy
    server = await gateway_factory(config(fake.url, 1, extra="scheduling: {max_wait: 1.3}\n"))
    holder = asyncio.create_task(chat(http, server, "first"))
    await asyncio.wait_for(busy.arrived.wait(), 5)
    status, _, raw = await stream(http, server, "second", anthropic)
    assert status == 200
    assert raw.startswith(b": queued\n\n")
    assert b"queue_timeout" in raw or (anthropic and b"overloaded_error" in raw), raw
    assert b"[DONE]" not in raw
    if anthropic:
        assert b"event: error" in raw
    busy.gate.set()
    assert (await holder)[0] == 200
    assert busy.served == ["first"]
    await server.stop()  # flushes the access log: the stream's line names the queue_timeout
    lines = [orjson.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    streamed = [line for line in lines if line.get("stream")]
    assert [(x["status"], x["error"]) for x in streamed] == [(200, "queue_timeout")]
    assert streamed[0]["queue_ms"] >= 1300


async def test_a_retry_takes_its_slot_under_the_global_cap(
    gateway_factory: GatewayFactory, fake: FakeUpstream, redis_url: str, http: aiohttp.ClientSession
) -> None:
    """Two gateways on one Redis, a model of two upstreams with max_concurrency 1 each: while
    the first gateway's request holds the second upstream, the other gateway's request fails
    on the first upstream and its retry finds the second full across processes: it is not
    sent there (the worker never holds 2), and the request is answered 502 at once."""
    held = Busy()
    fake.script = held
    failing = FakeUpstream()
    await failing.start()

    async def broken(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"error": {"message": "down"}}, status=500)

    failing.script = broken
    tag = uuid.uuid4().hex[:6]
    text = gateway_yaml(
        {f"a-{tag}": failing.url, f"b-{tag}": fake.url},
        {"m": {"upstreams": [f"a-{tag}", f"b-{tag}"]}},
        extra=f"store: {{url: '{redis_url}'}}\n",
    )
    for url in (failing.url, fake.url):
        text = text.replace(f"url: '{url}',", f"url: '{url}', max_concurrency: 1,")
    try:
        first, second = [await gateway_factory(text) for _ in range(2)]
        holder = asyncio.create_task(chat(http, first, "holder"))
        await until(lambda: _true(held.held == 1), 10)  # may fail on a-… first, then hold b-…
        status, _, body = await chat(http, second, "retried")
        assert status == 502, body
        assert held.peak == 1 and held.served == ["holder"]
        held.gate.set()
        assert (await holder)[0] == 200
    finally:
        await failing.stop()


async def _true(value: bool) -> bool:
    return value


class PromptBusy(StreamingBusy):
    """``StreamingBusy`` for completions too (their prompt recorded as the message)."""

    async def __call__(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if "prompt" in body:
            body = {**body, "messages": [{"role": "user", "content": body["prompt"]}]}
        return await super().__call__(request, body)


@pytest.mark.parametrize("max_wait", [None, 1.3])
async def test_a_waiting_completions_stream_gets_queued_comments(
    max_wait: float | None,
    gateway_factory: GatewayFactory,
    fake: FakeUpstream,
    http: aiohttp.ClientSession,
) -> None:
    """Another API's stream waits as chat's does: the head with ``: queued``, then its answer
    once a slot frees, or, past ``max_wait``, the queue_timeout as an error event."""
    busy = PromptBusy()
    fake.script = busy
    extra = f"scheduling: {{max_wait: {max_wait}}}\n" if max_wait else ""
    server = await gateway_factory(config(fake.url, 1, extra=extra))
    holder = asyncio.create_task(chat(http, server, "first"))
    await asyncio.wait_for(busy.arrived.wait(), 5)
    body = {"model": "m", "stream": True, "prompt": "second", "max_tokens": 16}
    async with http.post(
        f"http://127.0.0.1:{server.port}/v1/completions",
        headers={"Authorization": f"Bearer {TEST_KEY}"},
        json=body,
    ) as reply:
        assert reply.status == 200
        assert await asyncio.wait_for(reply.content.readuntil(b"\n\n"), 5) == b": queued\n\n"
        if max_wait is None:
            busy.gate.set()
        rest = await asyncio.wait_for(reply.read(), 10)
    if max_wait is None:
        assert rest.endswith(b"data: [DONE]\n\n") and busy.served == ["first", "second"]
    else:
        assert b"queue_timeout" in rest and b"[DONE]" not in rest, rest
        busy.gate.set()
        assert busy.served == ["first"]
    assert (await holder)[0] == 200
