"""Tokens per minute, money budgets and plan overage through a real gateway on every backend:
reservations priced at the model's prices, refusals with their codes and true Retry-After, and
an overage plan that keeps serving."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, completion

PRICED = {"pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}  # µ$1 / µ$2 a token


@pytest.fixture(params=["memory", "redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def config(store: str, upstream: str, key: str = "", plan: str = "monthly_tokens: null") -> str:
    return gateway_yaml(
        {"up": upstream},
        {"m": {"upstreams": ["up"], **PRICED}},
        extra=f"keys: {{static: [{{id: b, owner: acme, sha256: '{TEST_KEY_SHA}'{key}}}]}}\n"
        f"plans: {{free: {{max_keys: 5, rpm: null, {plan}}}}}\n"
        f"store: {{url: '{store}'}}\n",
        admin_token="admin-token-0123456789",
    )


async def chat(port: int, **body: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=payload, headers=AUTH) as r,
    ):
        return r.status, dict(r.headers), await r.json()


async def test_tpm_refuses_what_the_minute_cannot_hold(
    gateway_factory: Any, fake: FakeUpstream, store_url: str
) -> None:
    """A request held open keeps its reservation in the minute; the next one that does not
    fit is refused tpm_exceeded, with the minute's time to wait; the headers report the minute
    (the tightest token limit)."""
    release, arrived = asyncio.Event(), asyncio.Event()

    async def held(request: Any, body: Any) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.json_response(completion("late"))

    fake.script = held
    server: Server = await gateway_factory(
        config(store_url, fake.url, key=", tpm_limit: 1000, daily_limit: 100000")
    )
    first = asyncio.create_task(chat(server.port, max_tokens=600))
    await asyncio.wait_for(arrived.wait(), 5)
    status, headers, body = await chat(server.port, max_tokens=600)
    assert status == 429 and body["error"]["code"] == "tpm_exceeded", body
    assert 50 <= int(headers["Retry-After"]) <= 60
    release.set()
    status, headers, _ = await first
    assert status == 200 and headers["x-ratelimit-limit-tokens"] == "1000"
    fake.script = None
    # the first settles to what it used (12), written just after its answer
    deadline = asyncio.get_running_loop().time() + 2
    while (answer := await chat(server.port, max_tokens=600))[0] == 429:
        assert asyncio.get_running_loop().time() < deadline, answer
        await asyncio.sleep(0.02)
    status, headers, _ = answer
    assert status == 200 and int(headers["x-ratelimit-remaining-tokens"]) < 400


async def test_a_daily_budget_is_reserved_at_the_models_prices(
    gateway_factory: Any, fake: FakeUpstream, store_url: str
) -> None:
    """µ$1000 a day; max_tokens 600 may cost µ$1200 at µ$2 an output token: refused before it
    runs. 300 fits, and settles to what the answer really cost."""
    server: Server = await gateway_factory(
        config(store_url, fake.url, key=", daily_budget_usd: 0.001")
    )
    status, headers, body = await chat(server.port, max_tokens=600)
    assert status == 429 and body["error"]["code"] == "budget_exceeded", body
    assert int(headers["Retry-After"]) >= 1
    for _ in range(3):  # each settles to ~µ$30 (prompt and completion of the fake's answer)
        assert (await chat(server.port, max_tokens=300))[0] == 200
    assert (await chat(server.port, max_tokens=480))[0] == 429


async def test_a_plan_monthly_budget_spans_the_owners_keys(
    gateway_factory: Any, fake: FakeUpstream, store_url: str
) -> None:
    server: Server = await gateway_factory(
        config(store_url, fake.url, plan="monthly_budget_usd: 0.0005")
    )
    status, _, body = await chat(server.port, max_tokens=300)
    assert status == 429 and body["error"]["code"] == "budget_exceeded"
    assert "plan 'free'" in body["error"]["message"]


async def admin(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"http://127.0.0.1:{server.admin_port}{path}",
            json=body,
            headers={"Authorization": "Bearer admin-token-0123456789"},
        ) as r,
    ):
        return r.status, await r.json()


async def test_an_owners_own_monthly_budget_takes_the_plans_place(
    gateway_factory: Any, fake: FakeUpstream, store_url: str
) -> None:
    """``PUT /admin/owners/:owner {"monthlyBudgetUsd"}``: a budget of the owner's own over its
    plan's (here none), refusing at once (other processes drop their cached plan on the store's
    broadcast, as when the plan changes); null gives the plan's back."""
    server: Server = await gateway_factory(config(store_url, fake.url))
    assert (await chat(server.port, max_tokens=300))[0] == 200  # the plan has no budget
    status, answer = await admin(server, "PUT", "/admin/owners/acme", {"monthlyBudgetUsd": 0.0005})
    assert (status, answer) == (200, {"owner": "acme", "monthlyBudgetUsd": 0.0005})
    status, _, body = await chat(server.port, max_tokens=300)  # µ$600 reserved > µ$500
    assert status == 429 and body["error"]["code"] == "budget_exceeded"
    view = (await admin(server, "GET", "/admin/owners/acme"))[1]
    assert view["limits"]["monthlyBudgetUsd"] == 0.0005
    assert view["limits"]["budgetSource"] == "owner"
    for bad in (0, -1, "5", True, 2e9):
        status, answer = await admin(server, "PUT", "/admin/owners/acme", {"monthlyBudgetUsd": bad})
        assert status == 400 and answer["error"]["param"] == "monthlyBudgetUsd", bad
    assert (await admin(server, "PUT", "/admin/owners/acme", {}))[0] == 400
    status, answer = await admin(server, "PUT", "/admin/owners/acme", {"monthlyBudgetUsd": None})
    assert (status, answer) == (200, {"owner": "acme", "monthlyBudgetUsd": None})
    assert (await chat(server.port, max_tokens=300))[0] == 200
    view = (await admin(server, "GET", "/admin/owners/acme"))[1]
    assert view["limits"]["monthlyBudgetUsd"] is None
    assert view["limits"]["budgetSource"] == "plan"


async def test_overage_allow_serves_past_the_plans_monthly_tokens(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    blocked: Server = await gateway_factory(
        config("memory://", fake.url, plan="monthly_tokens: 30")
    )
    allowed: Server = await gateway_factory(
        config("memory://", fake.url, plan="monthly_tokens: 30, overage: allow")
    )
    assert [(await chat(blocked.port, max_tokens=5))[0] for _ in range(3)][-1] == 429
    assert [(await chat(allowed.port, max_tokens=5))[0] for _ in range(4)] == [200] * 4
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{allowed.admin_port}/admin/owners/acme",
            headers={"Authorization": "Bearer admin-token-0123456789"},
        ) as r,
    ):
        owner = await r.json()
    tokens = owner["usage"]["tokens"]
    assert owner["limits"]["overage"] == "allow" and tokens > 30
    assert owner["usage"]["overageTokens"] == tokens - 30
    cost = owner["usage"]["cost"]
    assert 0 < owner["usage"]["overageCost"] == round(cost * (tokens - 30) / tokens, 6) < cost


async def test_owners_show_prints_the_spend_against_the_plan(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """``gateway owners show`` (a subprocess): the month's spend against the plan's budget, its
    tpm, and the tokens past an overage plan's monthly tokens."""
    plan = "monthly_tokens: 20, overage: allow, tpm: 5000, monthly_budget_usd: 2.5"
    server: Server = await gateway_factory(config("memory://", fake.url, plan=plan))
    for _ in range(3):  # 10 prompt + 3 completion tokens each at µ$1 / µ$2: µ$16 a request
        assert (await chat(server.port, max_tokens=5))[0] == 200
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "owners", "show", "acme",
        "--admin-url", f"http://127.0.0.1:{server.admin_port}",
        "--admin-token", "admin-token-0123456789",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    text = out.decode()
    assert re.search(r"^spend\s+\$0\.000\d+ of \$2\.50 in \d{4}-\d\d$", text, re.M), text
    assert re.search(r"^tpm\s+5,000 tokens a minute across its keys$", text, re.M), text
    tokens = re.search(r"^tokens\s+(\d+) of 20 tokens .*overage allowed: (\d+) tokens", text, re.M)
    assert tokens and int(tokens[2]) == int(tokens[1]) - 20 > 0, text


async def test_owners_set_gives_an_owner_a_budget_of_its_own(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    server: Server = await gateway_factory(config("memory://", fake.url))

    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "owners", *args,
            "--admin-url", f"http://127.0.0.1:{server.admin_port}",
            "--admin-token", "admin-token-0123456789",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, (out + err).decode()

    code, text = await cli("set", "acme", "--monthly-budget", "12.5")
    assert (code, text.strip()) == (0, "Owner acme has a monthly budget of $12.50 of its own."), (
        text
    )
    code, text = await cli("show", "acme")
    assert code == 0 and re.search(r"^spend\s+\$0 of \$12\.50 in ", text, re.M), text
    code, text = await cli("set", "acme", "--monthly-budget", "none", "--plan", "free")
    assert code == 0 and "is now on plan free and has its plan's monthly budget" in text, text
    assert (await cli("set", "acme", "--monthly-budget", "-3"))[0] == 2
    assert (await cli("set", "acme"))[0] == 2
