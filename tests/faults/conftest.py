"""Fixtures of the fault suite: a redis-server of each test's own (to stop, kill, restart and
slow), gateway processes on it, a client session, and in-process gateways for the scenarios
that need an upstream scripted by the test."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest

from gateway.config.load import parse_text
from gateway.server import Server
from tests.faults import redis_control
from tests.faults.harness import Gateway, Key, start_gateway, stop_gateway
from tests.redis_server import RedisServer

StartGateways = Callable[[str, int, list[Key]], Awaitable[list[Gateway]]]
StartServer = Callable[[str], Awaitable[Server]]


@pytest.fixture
def fault_redis() -> Iterator[RedisServer]:
    """A redis-server for this test alone (AOF fsync'd, DEBUG allowed), stopped after it."""
    server = redis_control.start()
    yield server
    server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest.fixture
async def gateways(
    tmp_path: pathlib.Path, fault_redis: RedisServer
) -> AsyncIterator[StartGateways]:
    """``await gateways(on_error, timeout_ms, keys)``: two gateway processes on the test's
    Redis, started together; stopped (and Redis continued first) after the test."""
    started: list[Gateway] = []

    async def start(on_error: str, timeout_ms: int, keys: list[Key]) -> list[Gateway]:
        pair = await asyncio.gather(
            *(
                start_gateway(tmp_path, name, fault_redis.url, on_error, timeout_ms, keys)
                for name in ("gw-a", "gw-b")
            )
        )
        started.extend(pair)
        return list(pair)

    yield start
    fault_redis.resume()  # a test that failed mid-stall must not leave the gateways stuck
    for gateway in started:
        await stop_gateway(gateway)


@pytest.fixture
async def in_process() -> AsyncIterator[StartServer]:
    """``await in_process(yaml)``: a gateway in this process (``Server``), stopped after."""
    servers: list[Server] = []

    async def start(text: str) -> Server:
        server = Server(parse_text(text, "faults.yaml", env={}))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()
