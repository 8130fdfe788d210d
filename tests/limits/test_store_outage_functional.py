"""The store going away under a real gateway: a paused (SIGSTOP) or killed redis-server.

``on_error: closed`` answers 503 ``store_unavailable`` within ``store.timeout_ms`` and never
hangs; ``on_error: open`` keeps admitting cached keys, keeps usage in its bounded buffer and
writes every record once the store is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from gateway.limits.windows import day_id
from gateway.server import Server
from tests import redis_server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.redis_server import RedisServer


@pytest.fixture
def own_redis(redis_process: RedisServer) -> Iterator[RedisServer]:
    """A server of this test's own, to pause and kill (the session's stays untouched). It keeps
    an fsync'd append-only file, so a kill loses nothing on its side and counts are exact."""
    server = redis_server.start_redis("--appendonly", "yes", "--appendfsync", "always")
    yield server
    server.stop()


def config(mock_port: int, redis: RedisServer, on_error: str) -> str:
    return gateway_yaml(
        {"mock": f"http://127.0.0.1:{mock_port}"},
        {"mock-model": {"upstreams": ["mock"]}},
        extra=f"store: {{url: '{redis.url}', on_error: {on_error}, timeout_ms: 200}}\n"
        f"keys: {{static: [{{id: k, owner: acme, sha256: '{TEST_KEY_SHA}', rpm_limit: 100000}}]}}\n"
        "plans: {free: {max_keys: null, monthly_tokens: null, rpm: null}}\n",
    )


async def chat(http: aiohttp.ClientSession, server: Server) -> tuple[int, bytes]:
    async with http.post(
        f"http://127.0.0.1:{server.port}/v1/chat/completions",
        json={"model": "mock-model", "messages": [{"role": "user", "content": "say:2"}]},
        headers=AUTH,
    ) as r:
        return r.status, await r.read()


async def requests_recorded(server: Server, expect: int) -> int:
    store, today = server.runtime.store, day_id(server.runtime.clock.time())
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        rows = await store.usage("acme", ["k"], today, today)
        count = sum(r.requests for r in rows)
        if count == expect or asyncio.get_running_loop().time() > deadline:
            return count
        await asyncio.sleep(0.05)


async def test_closed_answers_503_at_once_and_recovers(
    own_redis: RedisServer, gateway_factory: Any, mock: Any
) -> None:
    server: Server = await gateway_factory(config(mock[0], own_redis, "closed"))
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        assert (await chat(http, server))[0] == 200
        own_redis.pause()
        try:
            started = loop.time()
            status, body = await chat(http, server)
            assert status == 503 and b'"code":"store_unavailable"' in body
            assert loop.time() - started < 1.0, "a paused store made the request hang"
        finally:
            own_redis.resume()
        assert (await chat(http, server))[0] == 200


async def test_open_admits_buffers_and_writes_when_back(
    own_redis: RedisServer, gateway_factory: Any, mock: Any
) -> None:
    server: Server = await gateway_factory(config(mock[0], own_redis, "open"))
    async with aiohttp.ClientSession() as http:
        assert (await chat(http, server))[0] == 200
        own_redis.pause()
        try:
            statuses = [(await chat(http, server))[0] for _ in range(5)]
            assert statuses == [200] * 5
            assert server.runtime.limiter.buffer.pending >= 5
        finally:
            own_redis.resume()
    assert await requests_recorded(server, 6) == 6
    assert server.runtime.limiter.buffer.dropped == 0


async def test_kill_and_restart_under_load_loses_nothing(
    own_redis: RedisServer, gateway_factory: Any, mock: Any
) -> None:
    server: Server = await gateway_factory(config(mock[0], own_redis, "open"))
    async with aiohttp.ClientSession() as http:
        assert (await chat(http, server))[0] == 200  # the key is cached from here on
        stop = asyncio.Event()
        done: list[int] = []

        async def load() -> None:
            while not stop.is_set():
                done.append((await chat(http, server))[0])

        workers = [asyncio.create_task(load()) for _ in range(4)]
        await _until(lambda: len(done) >= 20)
        own_redis.kill()
        killed_at = len(done)
        await _until(lambda: len(done) >= killed_at + 40)
        assert server.runtime.limiter.buffer.pending >= 30  # held while the store is dead
        await asyncio.to_thread(own_redis.restart)
        restarted_at = len(done)
        await _until(lambda: len(done) >= restarted_at + 20)
        stop.set()
        await asyncio.gather(*workers)
    assert set(done) == {200}
    # Every request (the warm-up too) recorded once: none lost while the store was dead, none
    # counted twice by the retried batches. The last batch can be in the store before its reply
    # is back (or its reply late, and the batch sent again): the buffer empties after.
    assert await requests_recorded(server, len(done) + 1) == len(done) + 1
    await _until(lambda: not server.runtime.limiter.buffer.pending, what="the buffer emptied")
    assert await requests_recorded(server, len(done) + 1) == len(done) + 1
    assert server.runtime.limiter.buffer.dropped == 0


async def _until(
    condition: Any, seconds: float = 10.0, what: str = "the load made progress"
) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not so after {seconds} s: {what}"
        await asyncio.sleep(0.01)
