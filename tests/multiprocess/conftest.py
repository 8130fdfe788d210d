"""Gateways as separate processes (``python -m gateway run``) sharing one real Redis, the way
they run in production; the bundled mock worker in this process is their upstream."""

from __future__ import annotations

import asyncio
import pathlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway import mock_worker
from tests.redis_server import free_port

ADMIN_TOKEN = "admin-token-for-tests-0123456789"


@dataclass
class Gateway:
    port: int
    admin_port: int
    process: asyncio.subprocess.Process
    log: pathlib.Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


def config_text(port: int, admin_port: int, redis_url: str, mock_port: int, workers: int) -> str:
    return f"""\
listen: {{host: 127.0.0.1, port: {port}, workers: {workers}, drain_timeout: 2}}
admin: {{host: 127.0.0.1, port: {admin_port}, token: {ADMIN_TOKEN}}}
store: {{url: "{redis_url}", timeout_ms: 1000}}
upstreams: {{mock: {{url: "http://127.0.0.1:{mock_port}"}}}}
models: {{mock-model: {{upstreams: [mock]}}}}
plans: {{free: {{max_keys: null, monthly_tokens: null, rpm: null}}}}
log: {{level: warning, access: false}}
"""


async def start_gateway(
    tmp: pathlib.Path, redis_url: str, mock_port: int, workers: int = 1
) -> Gateway:
    port, admin_port = free_port(), free_port()
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(config_text(port, admin_port, redis_url, mock_port, workers))
    log = tmp / f"gateway-{port}.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(path),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    gateway = Gateway(port, admin_port, process, log)
    deadline = asyncio.get_running_loop().time() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{gateway.admin}/readyz") as r:
                    if r.status == 200:
                        return gateway
            except aiohttp.ClientError:
                pass
            if process.returncode is not None or asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"gateway did not start: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def slow_mock() -> AsyncIterator[tuple[int, mock_worker.MockState]]:
    runner, port = await mock_worker.start(mock_worker.MockOptions(), "127.0.0.1", 0)
    yield port, runner.app[mock_worker.MOCK_STATE]
    await runner.cleanup()


@pytest.fixture
async def two_gateways(
    tmp_path: pathlib.Path, redis_url: str, slow_mock: Any
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    a, b = await asyncio.gather(
        start_gateway(tmp_path, redis_url, slow_mock[0]),
        start_gateway(tmp_path, redis_url, slow_mock[0]),
    )
    yield a, b
    for gateway in (a, b):
        gateway.process.terminate()
    for gateway in (a, b):
        assert await gateway.process.wait() == 0, gateway.log.read_text()[-2000:]


async def admin_call(gateway: Gateway, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"{gateway.admin}{path}",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as r,
    ):
        return r.status, (await r.json() if r.status != 204 else None)
