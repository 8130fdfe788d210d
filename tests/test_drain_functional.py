"""SIGTERM's drain: readiness fails at once, the listener closes, in-flight requests finish
within the drain time, streams still running then get an error event; usage is flushed."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from gateway.config.load import parse_text
from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml


async def test_drain(mock: Any) -> None:
    text = gateway_yaml({"mock": f"http://127.0.0.1:{mock[0]}"}, {"m": {"upstreams": ["mock"]}})
    text = text.replace(
        "listen: {host: 127.0.0.1, port: 0}",
        "listen: {host: 127.0.0.1, port: 0, drain_timeout: 1.0}",
    )
    server = Server(parse_text(text, "test.yaml", env={}))
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        slow = asyncio.create_task(_json(http, base, {"x-mock-delay": "0.4"}))
        endless = await http.post(
            f"{base}/v1/chat/completions",
            json={
                "model": "m",
                "stream": True,
                "messages": [{"role": "user", "content": "say:500"}],
            },
            headers={**AUTH, "x-mock-token-delay": "0.05"},
        )
        assert b"data:" in await endless.content.readany()
        stopping = asyncio.create_task(server.stop())

        async def ready_status() -> int:
            async with http.get(f"http://127.0.0.1:{server.admin_port}/readyz") as r:
                return r.status

        assert await ready_status() == 503
        status, body = await slow
        assert status == 200 and body["choices"][0]["message"]["content"]
        rest = b""
        try:
            async for piece in endless.content.iter_any():
                rest += piece
        except aiohttp.ClientPayloadError:
            pass  # the connection is cut after the error event: no terminating chunk
        finally:
            endless.close()
        assert b"[DONE]" not in rest
        assert b"shutting down" in rest
        await stopping
    rows = await server.runtime.store.usage("tests", ["test"], 0, 99999999)
    assert sum(r.requests for r in rows) == 2, "usage of both requests was flushed"


async def _json(http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with http.post(
        f"{base}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={**AUTH, **headers},
    ) as r:
        return r.status, await r.json()
