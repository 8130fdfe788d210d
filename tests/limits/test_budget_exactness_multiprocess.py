"""Budgets and tokens per minute stay exact across processes: two ``gateway run`` processes on
one real Redis take 200 requests at once, and what the worker served never passes the limit.

The worker is this test's own (a real aiohttp server on loopback): each answer reports the
gateway's own prompt estimate as its prompt tokens and the whole ``max_tokens`` as its
completion, so every request uses all it reserved (the worst case; nothing is refunded at
settlement) and the worker's count of tokens and cost per request is exact. Sizes vary between
requests. A limiter that counted per process would serve about twice the limit here.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.dialects.anthropic import estimate_tokens
from tests.multiprocess.conftest import ADMIN_TOKEN, Gateway, admin_call
from tests.redis_server import free_port

BUDGET_USD, BUDGET_MICROS = 0.01, 10_000
TPM = 1000
REQUESTS = 200
WINDOW = 60.0


@dataclass
class Worker:
    """The upstream: answers every chat with the usage described above, after a short
    generation time (so that the 200 requests overlap), and records what it served."""

    served: list[tuple[float, int, int]] = field(default_factory=list)  # (time, prompt, compl.)
    port: int = 0

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt, completion = estimate_tokens(body), int(body["max_tokens"])
        await asyncio.sleep(0.1)  # generating
        self.served.append((asyncio.get_running_loop().time(), prompt, completion))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        return web.json_response(
            {
                "id": "chatcmpl-x",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                             "finish_reason": "length"}],
                "usage": {**usage, "total_tokens": prompt + completion},
            }
        )  # fmt: skip

    def cost_micros(self) -> int:
        return sum(p * 1 + c * 2 for _, p, c in self.served)

    def most_in_a_window(self) -> int:
        """The most tokens served in any 60 s window (each window starting at a request)."""
        times = sorted(self.served)
        best = total = start = 0
        for end in range(len(times)):
            total += times[end][1] + times[end][2]
            while times[end][0] - times[start][0] >= WINDOW:
                total -= times[start][1] + times[start][2]
                start += 1
            best = max(best, total)
        return best


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    made = Worker()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", made.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    made.port = int(runner.addresses[0][1])
    yield made
    await runner.cleanup()


def config(port: int, admin_port: int, redis_url: str, worker: int, plan: str) -> str:
    return f"""\
listen: {{host: 127.0.0.1, port: {port}, drain_timeout: 2}}
admin: {{host: 127.0.0.1, port: {admin_port}, token: {ADMIN_TOKEN}}}
store: {{url: "{redis_url}", timeout_ms: 2000}}
upstreams: {{w: {{url: "http://127.0.0.1:{worker}"}}}}
models: {{m: {{upstreams: [w], pricing: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}}}
# µ$1 an input token, µ$2 an output token
plans:
  free: {{max_keys: null, monthly_tokens: null, rpm: null}}
  capped: {{max_keys: null, monthly_budget_usd: {BUDGET_USD}}}
  tpm: {{max_keys: null, tpm: {TPM}}}
default_plan: {plan}
log: {{level: warning, access: false}}
"""


async def start_gateway(
    tmp: pathlib.Path, make: Callable[[int, int], str], started: list[Gateway]
) -> Gateway:
    """A gateway process, in ``started`` from its spawn (so a failed start elsewhere still
    stops it), once it is ready."""
    port, admin_port = free_port(), free_port()
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(make(port, admin_port))
    log = tmp / f"gateway-{port}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", "--config", str(path),
            stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    gateway = Gateway(port, admin_port, process, log)
    started.append(gateway)
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        while True:
            try:
                async with http.get(f"{gateway.admin}/readyz") as r:
                    if r.status == 200:
                        return gateway
            except aiohttp.ClientError:
                pass
            assert process.returncode is None, log.read_text()[-2000:]
            await asyncio.sleep(0.05)


Pair = Callable[[str], Awaitable[tuple[Gateway, Gateway]]]


@pytest.fixture
async def pair(tmp_path: pathlib.Path, redis_url: str, worker: Worker) -> AsyncIterator[Pair]:
    """Start two gateways on one Redis with ``default_plan`` as given."""
    started: list[Gateway] = []

    async def start(plan: str) -> tuple[Gateway, Gateway]:
        def make(port: int, admin_port: int) -> str:
            return config(port, admin_port, redis_url, worker.port, plan)

        a, b = await asyncio.gather(
            start_gateway(tmp_path, make, started), start_gateway(tmp_path, make, started)
        )
        return a, b

    yield start
    for gateway in started:
        if gateway.process.returncode is None:
            gateway.process.terminate()
    codes = [await gateway.process.wait() for gateway in started]
    for gateway, code in zip(started, codes, strict=True):
        assert code == 0, gateway.log.read_text()[-2000:]


async def new_key(gateway: Gateway, owner: str, **limits: Any) -> str:
    status, body = await admin_call(gateway, "POST", "/admin/keys", {"owner": owner, **limits})
    assert status == 201, body
    return str(body["key"])


async def flood(gateways: tuple[Gateway, Gateway], keys: list[str], size: int) -> dict[Any, int]:
    """200 chats at once, alternating gateways and keys; answers counted by (status, code).
    Request i asks for ``size + 10 * (i % 7)`` tokens, with a prompt of its own length."""

    async def one(http: aiohttp.ClientSession, i: int) -> tuple[int, str | None]:
        body = {
            "model": "m",
            "max_tokens": size + 10 * (i % 7),
            "messages": [{"role": "user", "content": "x" * (4 * (i % 5)) + "hi"}],
        }
        gateway, key = gateways[i % 2], keys[i % len(keys)]
        headers = {"Authorization": f"Bearer {key}"}
        async with http.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers) as r:
            answer = await r.json()
            return r.status, (answer.get("error") or {}).get("code")

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        results = await asyncio.gather(*(one(http, i) for i in range(REQUESTS)))
    counts: dict[Any, int] = {}
    for result in results:
        counts[result] = counts.get(result, 0) + 1
    return counts


async def usage_written(gateway: Gateway, owner: str, requests: int) -> dict[str, Any]:
    """The owner's usage summary once it counts ``requests`` (settlements are written just
    after each answer), within 10 s."""
    async with asyncio.timeout(10):
        while True:
            status, summary = await admin_call(
                gateway, "GET", f"/admin/usage/summary?owner={owner}&period=7d"
            )
            assert status == 200, summary
            if summary["totalRequests"] >= requests:
                assert summary["totalRequests"] == requests, summary
                return dict(summary)
            await asyncio.sleep(0.05)


async def test_a_keys_budget_across_two_processes(pair: Pair, worker: Worker) -> None:
    a, b = await pair("free")
    key = await new_key(a, "spender", monthlyBudgetUsd=BUDGET_USD)
    counts = await flood((a, b), [key], size=60)
    served = len(worker.served)
    assert counts == {(200, None): served, (429, "budget_exceeded"): REQUESTS - served}, counts
    assert 0.7 * BUDGET_MICROS <= worker.cost_micros() <= BUDGET_MICROS, worker.cost_micros()
    summary = await usage_written(b, "spender", served)
    assert summary["cost"] <= BUDGET_USD + 1e-12
    assert abs(summary["cost"] - worker.cost_micros() / 1e6) < 1e-9


async def test_an_owners_plan_budget_across_two_processes_and_keys(
    pair: Pair, worker: Worker
) -> None:
    a, b = await pair("capped")
    keys = [await new_key(a, "team"), await new_key(b, "team")]
    counts = await flood((a, b), keys, size=60)
    served = len(worker.served)
    assert counts == {(200, None): served, (429, "budget_exceeded"): REQUESTS - served}, counts
    assert 0.7 * BUDGET_MICROS <= worker.cost_micros() <= BUDGET_MICROS, worker.cost_micros()
    await usage_written(a, "team", served)
    status, owner = await admin_call(b, "GET", "/admin/owners/team")
    assert status == 200 and owner["limits"]["monthlyBudgetUsd"] == BUDGET_USD
    assert owner["usage"]["cost"] <= BUDGET_USD + 1e-12
    assert abs(owner["usage"]["cost"] - worker.cost_micros() / 1e6) < 1e-9


async def test_a_keys_tpm_across_two_processes(pair: Pair, worker: Worker) -> None:
    a, b = await pair("free")
    key = await new_key(a, "minute", tpmLimit=TPM)
    counts = await flood((a, b), [key], size=20)
    served = len(worker.served)
    assert counts == {(200, None): served, (429, "tpm_exceeded"): REQUESTS - served}, counts
    assert 0.7 * TPM <= worker.most_in_a_window() <= TPM, worker.served


async def test_an_owners_plan_tpm_across_two_processes_and_keys(pair: Pair, worker: Worker) -> None:
    a, b = await pair("tpm")
    keys = [await new_key(a, "crew"), await new_key(b, "crew")]
    counts = await flood((a, b), keys, size=20)
    served = len(worker.served)
    assert counts == {(200, None): served, (429, "tpm_exceeded"): REQUESTS - served}, counts
    assert 0.7 * TPM <= worker.most_in_a_window() <= TPM, worker.served
