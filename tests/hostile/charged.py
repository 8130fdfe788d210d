"""What a key was charged, read back through the admin API once its request is recorded: the
suites of requests that leave, stall or break off read their charge this way."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from gateway.server import Server

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}


async def key_totals(http: aiohttp.ClientSession, server: Server, key_id: str) -> dict[str, int]:
    """The key's usage totals today once one request of it is recorded (within 10 s)."""
    url = f"http://127.0.0.1:{server.admin_port}/admin/keys/{key_id}/usage?days=1"
    deadline = time.monotonic() + 10
    while True:
        async with http.get(url, headers=ADMIN) as r:
            assert r.status == 200, await r.text()
            totals: dict[str, int] = (await r.json())["totals"]
        if totals["requests"] >= 1 or time.monotonic() > deadline:
            return totals
        await asyncio.sleep(0.1)
