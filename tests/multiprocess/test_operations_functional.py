"""A real `gateway run --workers 2`: SIGHUP and POST /admin/reload reach every worker, the
metrics view sums the workers, SIGTERM drains and exits 0."""

from __future__ import annotations

import asyncio
import pathlib
import signal
from typing import Any

import aiohttp

from tests.multiprocess.conftest import Gateway, admin_call, config_text, start_gateway


async def models_seen(gateway: Gateway, key: str, tries: int = 12) -> set[tuple[str, ...]]:
    """The model lists that fresh connections see (SO_REUSEPORT spreads them over workers)."""
    seen = set()
    for _ in range(tries):
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"}) as r,
        ):
            seen.add(tuple(m["id"] for m in (await r.json())["data"]))
    return seen


async def eventually(check: Any, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "it never happened"
        await asyncio.sleep(0.1)


async def test_reload_reaches_every_worker(
    tmp_path: pathlib.Path, redis_url: str, slow_mock: Any
) -> None:
    gateway = await start_gateway(tmp_path, redis_url, slow_mock[0], workers=2)
    path = tmp_path / f"gateway-{gateway.port}.yaml"
    try:
        status, body = await admin_call(gateway, "POST", "/admin/keys", {"owner": "ops"})
        assert status == 201
        key = body["key"]
        assert await models_seen(gateway, key) == {("mock-model",)}

        text = config_text(gateway.port, gateway.admin_port, redis_url, slow_mock[0], 2)
        path.write_text(
            text.replace(
                "models: {mock-model: {upstreams: [mock]}}",
                "models: {mock-model: {upstreams: [mock]}, second: {upstreams: [mock]}}",
            )
        )
        gateway.process.send_signal(signal.SIGHUP)

        async def both_reloaded() -> bool:
            return await models_seen(gateway, key) == {("mock-model", "second")}

        await eventually(both_reloaded)

        path.write_text(text.replace("mock-model:", "third:"))
        status, outcome = await admin_call(gateway, "POST", "/admin/reload")
        assert status == 200 and outcome["ok"] is True

        async def all_third() -> bool:
            return await models_seen(gateway, key) == {("third",)}

        await eventually(all_third)
        path.write_text("listen: {port: broken}\n")
        status, outcome = await admin_call(gateway, "POST", "/admin/reload")
        assert status == 422 and "listen.port" in outcome["errors"][0]
        assert await models_seen(gateway, key) == {("third",)}
    finally:
        gateway.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(gateway.process.wait(), 20) == 0


async def test_metrics_sum_over_workers(
    tmp_path: pathlib.Path, redis_url: str, slow_mock: Any
) -> None:
    gateway = await start_gateway(tmp_path, redis_url, slow_mock[0], workers=2)
    try:
        _, body = await admin_call(gateway, "POST", "/admin/keys", {"owner": "ops"})
        async with aiohttp.ClientSession() as http:
            for _ in range(20):  # new connections: both workers serve some
                async with (
                    aiohttp.ClientSession() as one,
                    one.post(
                        f"{gateway.url}/v1/chat/completions",
                        json={
                            "model": "mock-model",
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                        headers={"Authorization": f"Bearer {body['key']}"},
                    ) as r,
                ):
                    assert r.status == 200
            async with http.get(f"{gateway.admin}/metrics") as r:
                text = await r.text()
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gateway_requests_total{") and 'route="/v1/chat/completions"' in line
        )
        assert total == 20
    finally:
        gateway.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(gateway.process.wait(), 20) == 0
