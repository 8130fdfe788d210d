"""The gate against a hostile client, through a real gateway on every store backend: nothing the
client chooses (its X-Request-ID) is the identity of what is counted, a caller is refused from
the request head before any of its body is held, a request without ``max_tokens`` reserves the
model's ``default_max_tokens``, and no message quotes a client's value whole."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, completion


@pytest.fixture(params=["memory", "redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def limited(store: str, upstream: str, model: dict[str, Any] | None = None, **limits: Any) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in limits.items())
    return gateway_yaml(
        {"up": upstream},
        {"m": {"upstreams": ["up"], **(model or {})}},
        extra=f"keys: {{static: [{{id: lim, owner: acme, sha256: '{TEST_KEY_SHA}', {fields}}}]}}\n"
        "plans: {free: {max_keys: 5, monthly_tokens: null, rpm: null}}\n"
        f"store: {{url: '{store}'}}\n",
    )


async def chat(port: int, headers: dict[str, str], **body: Any) -> tuple[int, dict[str, str]]:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json=payload, headers=headers
        ) as r,
    ):
        await r.read()
        return r.status, dict(r.headers)


async def test_a_shared_client_request_id_is_only_a_label(
    gateway_factory: Any, fake: FakeUpstream, store_url: str
) -> None:
    """Requests that all send one X-Request-ID are each counted: the rpm log holds five of
    them (it held one, and admitted every request), and each answer still carries the id."""
    server: Server = await gateway_factory(limited(store_url, fake.url, rpm_limit=5))
    headers = {**AUTH, "X-Request-ID": "same-id-every-time"}
    results = [await chat(server.port, headers) for _ in range(8)]
    assert [s for s, _ in results] == [200] * 5 + [429] * 3
    assert {h["X-Request-ID"] for _, h in results} == {"same-id-every-time"}
    assert {h["X-Request-ID"] for h in (s.headers for s in fake.seen)} == {"same-id-every-time"}


async def test_concurrent_requests_sharing_an_id_each_hold_a_slot(
    gateway_factory: Any, fake: FakeUpstream, store_url: str
) -> None:
    """Two slots, four requests held by the upstream, one id: two are refused (before, all four
    were admitted and the key then stayed blocked by the one lease they shared)."""
    release = asyncio.Event()
    arrived = asyncio.Semaphore(0)

    async def held(request: Any, body: Any) -> web.StreamResponse:
        arrived.release()
        await release.wait()
        return web.json_response(completion("late"))

    fake.script = held
    server: Server = await gateway_factory(limited(store_url, fake.url, max_concurrency=2))
    headers = {**AUTH, "X-Request-ID": "shared"}
    calls = [asyncio.create_task(chat(server.port, headers)) for _ in range(4)]
    for _ in range(2):
        await asyncio.wait_for(arrived.acquire(), 5)
    done, _ = await asyncio.wait(calls, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    while len(done) < 2:
        more, _ = await asyncio.wait(
            [c for c in calls if c not in done], timeout=5, return_when=asyncio.FIRST_COMPLETED
        )
        assert more, "the refusals never came"
        done |= more
    assert [c.result()[0] for c in done] == [429, 429]
    release.set()
    assert sorted(s for s, _ in await asyncio.gather(*calls)) == [200, 200, 429, 429]
    fake.script = None
    assert (await chat(server.port, headers))[0] == 200  # both slots came back


async def _raw_head(port: int, head: str) -> bytes:
    """Send a request head alone (no body) and read what comes back within 3 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 3)
    finally:
        writer.close()


async def test_a_wrong_key_is_refused_before_its_body_is_read(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """The gateway answers 401 from the head; before, it waited for the 5 MB it was promised
    (and held what came of it) until the body stalled for ``header_timeout``."""
    server: Server = await gateway_factory(limited("memory://", fake.url))
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-key\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n"
    )
    answer = await _raw_head(server.port, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
    assert b"invalid_api_key" in answer


async def test_a_declared_size_over_the_limit_is_413_before_the_key(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    server: Server = await gateway_factory(
        limited("memory://", fake.url) + "network: {max_body_bytes: 1000}\n"
    )
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: wrong\r\nContent-Length: 1001\r\n\r\n"
    )
    answer = await _raw_head(server.port, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert b'"type":"request_too_large"' in answer


async def test_without_max_tokens_the_models_default_is_reserved(
    gateway_factory: Any, fake: FakeUpstream, store_url: str
) -> None:
    """A request that names no max_tokens reserves ``default_max_tokens``: on a 1,000-token
    daily limit, a model whose default is 600 admits one such request at a time (before, such
    requests reserved only their prompt, and 60 streams overshot a quota by 215 %)."""
    server: Server = await gateway_factory(
        limited(store_url, fake.url, {"default_max_tokens": 600}, daily_limit=1000)
    )
    status, headers = await chat(server.port, AUTH)
    assert status == 200
    # what an admitted answer reports left: the limit less its reservation (prompt estimate,
    # a quarter of the body's bytes, plus 600); before, the limit less the prompt estimate only
    assert 1000 - 600 - 50 < int(headers["x-ratelimit-remaining-tokens"]) < 1000 - 600
    status, _ = await chat(server.port, AUTH, max_tokens=990)
    assert status == 429  # a named max_tokens is reserved as it is


async def test_an_unknown_model_name_is_quoted_only_in_part(gateway: Server) -> None:
    name = "x" * 900_000
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{gateway.port}/v1/chat/completions",
            json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
            headers=AUTH,
        ) as r,
    ):
        body = await r.read()
    assert r.status == 404 and len(body) < 500, len(body)


async def test_the_key_api_refuses_a_wrong_key_before_its_body(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """/api/keys: the caller is known from the head before its (promised) body is held."""
    server: Server = await gateway_factory(limited("memory://", fake.url))
    head = (
        "POST /api/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-key\r\n"
        "Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
    )
    answer = await _raw_head(server.port, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:80]


async def test_an_answer_nested_too_deep_to_translate_is_the_upstreams_502(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """A worker's answer whose vendor extra nests deeper than JSON can be written back (after
    the Anthropic translation adds a level) is a 502 naming the upstream, never a 500."""

    async def deep(request: Any, body: Any) -> web.StreamResponse:
        answer = completion("hi")
        nested: Any = "x"
        for _ in range(300):
            nested = [nested]
        answer["choices"][0]["message"]["vendor"] = nested
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    fake.script = deep
    server: Server = await gateway_factory(limited("memory://", fake.url))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            headers={**AUTH, "anthropic-version": "2023-06-01"},
        ) as r,
    ):
        body = await r.json()
    assert r.status == 502 and body["error"]["type"] == "overloaded_error", body


async def test_a_trickled_body_meets_network_body_timeout(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """A body sent a few bytes at a time, never stalling for header_timeout, is cut at
    network.body_timeout with 408."""
    server: Server = await gateway_factory(
        limited("memory://", fake.url) + "network: {body_timeout: 1, header_timeout: 5}\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            (
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: {AUTH['Authorization']}\r\nContent-Length: 1000\r\n\r\n"
            ).encode()
        )
        started = asyncio.get_running_loop().time()
        answer = b""
        while not answer:
            writer.write(b" ")
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(65536), 0.2)
            except TimeoutError:
                assert asyncio.get_running_loop().time() - started < 4, "never cut"
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
    assert asyncio.get_running_loop().time() - started < 3
