"""TPM and money budgets cost no extra store round trip: with every token, money and request
limit set on the key and the owner's plan (and a priced model), each chat is admitted by one
EVALSHA of the admit script, as Redis itself sees it (``MONITOR`` on the real server), and no
other command goes to the store per request but the (batched) settlements."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter
from typing import Any

import aiohttp
import redis as sync_redis

from gateway.server import Server
from gateway.store.redis_codec import script
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream
from tests.redis_server import RedisServer

REQUESTS = 20
END = "budgets-monitor-end"


def config(redis_url: str, upstream: str) -> str:
    key = (
        f"{{id: b, owner: acme, sha256: '{TEST_KEY_SHA}', rpm_limit: 100000, "
        "max_concurrency: 1000, daily_limit: 100000000, monthly_limit: 100000000, "
        "tpm_limit: 100000000, daily_budget_usd: 1000000, monthly_budget_usd: 1000000}"
    )
    plan = (
        "{max_keys: 5, rpm: 100000, monthly_tokens: 100000000, tpm: 100000000, "
        "monthly_budget_usd: 1000000}"
    )
    return gateway_yaml(
        {"up": upstream},
        {"m": {"upstreams": ["up"], "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}},
        extra=f"keys: {{static: [{key}]}}\nplans: {{free: {plan}}}\n"
        f"store: {{url: '{redis_url}'}}\n",
    )


class Monitor:
    """``MONITOR`` on a thread: every command clients send Redis (not those scripts run),
    until ``ECHO <END>``."""

    def __init__(self, port: int) -> None:
        self.commands: list[str] = []
        self.client = sync_redis.Redis(port=port)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self.ready.set()
            for entry in monitor.listen():
                command = str(entry["command"])
                if END in command:
                    return
                if entry.get("client_type") != "lua":  # not what a script runs inside
                    self.commands.append(command)

    def stop(self) -> list[str]:
        self.client.execute_command("ECHO", END)
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.client.close()
        return self.commands


async def chat(http: aiohttp.ClientSession, server: Server) -> int:
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
    }
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    async with http.post(url, json=body, headers=AUTH) as answer:
        await answer.read()
        assert answer.status == 200, answer.headers
        assert answer.headers["x-ratelimit-limit-tokens"] == "100000000"
        return answer.status


async def test_admission_is_one_evalsha_with_tpm_and_budgets(
    gateway_factory: GatewayFactory,
    fake: FakeUpstream,
    redis_process: RedisServer,
    redis_url: str,
) -> None:
    server = await gateway_factory(config(redis_url, fake.url))
    admit = hashlib.sha1(script("admit").encode()).hexdigest()
    settle = hashlib.sha1(script("settle").encode()).hexdigest()
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # warm: scripts loaded, the plan cached
            await chat(http, server)
        monitor = await asyncio.to_thread(Monitor, redis_process.port)
        for _ in range(REQUESTS):
            await chat(http, server)
        async with asyncio.timeout(5):  # the last settlement is written just after its answer
            while True:
                if server_settled(server) and any(settle in c for c in monitor.commands):
                    break
                await asyncio.sleep(0.02)
        commands = await asyncio.to_thread(monitor.stop)
    kinds = Counter(_kind(c, admit, settle) for c in commands)
    assert kinds["admit"] == REQUESTS, kinds
    assert 1 <= kinds["settle"] <= REQUESTS, kinds
    per_request = {k: n for k, n in kinds.items() if k not in ("admit", "settle")}
    assert all(n < REQUESTS / 4 for n in per_request.values()), kinds  # background only


def server_settled(server: Server) -> bool:
    """Nothing waits in the gateway's settlement buffer."""
    return bool(server.runtime.limiter.buffer.pending == 0)


def _kind(command: str, admit: str, settle: str) -> str:
    words = command.replace('"', "").split()
    if words and words[0].upper() == "EVALSHA" and len(words) > 1:
        return {admit: "admit", settle: "settle"}.get(words[1], "other script")
    return words[0].upper() if words else "?"
