"""The console without a browser: its page and files (CSP, types, nothing else served), what the
page's sources may not do (no HTML from data, no storage of the token), and the read-only admin
routes it reads (overview, usage per day, upstreams, recent refusals) over real sockets."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import openai
import pytest

from gateway.server import Server
from gateway.web.console import CSP
from gateway.web.observe import RecentRefusals
from tests.clients import AUTH, TEST_KEY
from tests.conftest import GatewayFactory, gateway_yaml
from tests.web import ADMIN_TOKEN, admin, call, chat, until

STATIC = pathlib.Path(__file__).resolve().parents[2] / "gateway" / "web" / "console" / "static"


@pytest.fixture
async def server(gateway_factory: GatewayFactory, mock: tuple[int, Any]) -> Server:
    """The mock worker (a model priced at $1 an input token) and an upstream that refuses."""
    text = gateway_yaml(
        {"mock": f"http://127.0.0.1:{mock[0]}", "dead": "http://user:secret@127.0.0.1:1"},
        {
            "mock-model": {
                "upstreams": ["mock"],
                "pricing": {"input_per_mtok": 1_000_000, "output_per_mtok": 0},
            },
            "dead-model": {"upstreams": ["dead"]},
        },
        extra="auth: {max_failures_per_minute: 1000}\n",
        admin_token=ADMIN_TOKEN,
    )
    return await gateway_factory(text)


async def test_the_page_and_its_files_carry_a_strict_csp(server: Server) -> None:
    page = await call(server.admin_port, "GET", "/console")  # no token needed: no secret in it
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"] == CSP
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    for name in re.findall(r"/console/static/([\w.-]+)", page.raw.decode()):
        answer = await call(server.admin_port, "GET", f"/console/static/{name}")
        assert answer.status == 200, name
        assert answer.headers["Content-Security-Policy"] == CSP
    script = await call(server.admin_port, "GET", "/console/static/app.js")
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize(
    "path", ["/console/static/nope.js", "/console/static/..%2Fadmin_api.py", "/console/x"]
)
async def test_nothing_else_is_served(server: Server, path: str) -> None:
    answer = await call(server.admin_port, "GET", path)
    assert answer.status == 404
    assert answer.code == "not_found"


async def test_the_console_api_needs_the_token(server: Server) -> None:
    for path in ("overview", "usage?owner=x", "upstreams", "refusals"):
        answer = await call(server.admin_port, "GET", f"/admin/console/{path}")
        assert answer.status == 401, path
        assert answer.code == "invalid_admin_token"


def _code(text: str) -> str:
    """A JavaScript source without its comments."""
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)


def test_the_sources_never_make_html_from_data_nor_keep_the_token() -> None:
    forbidden = [
        r"\.innerHTML",
        r"\.outerHTML",
        r"insertAdjacentHTML",
        r"document\.write",
        r"\beval\(",
        r"new Function",
        r"localStorage",
        r"sessionStorage",
        r"document\.cookie",
        r"indexedDB",
        r"setAttribute\(\s*['\"]style",
    ]
    scripts = sorted(STATIC.glob("*.js"))
    assert len(scripts) >= 5
    for script in scripts:
        code = _code(script.read_text(encoding="utf-8"))
        for pattern in forbidden:
            assert not re.search(pattern, code), f"{script.name}: {pattern}"
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script"
    assert not re.search(r"<style|\sstyle=|\son\w+=", page), "inline style or handler"
    sources = page + "".join(s.read_text(encoding="utf-8") for s in scripts)
    sources = sources.replace('"http://www.w3.org/2000/svg"', "")  # a name, not an address
    assert not re.search(r"https?://", sources), "nothing from another origin"


async def test_overview(server: Server) -> None:
    answer = await admin(server)("GET", "/admin/console/overview")
    assert answer.status == 200
    body = answer.body
    assert body["tokenRequired"] is True
    assert body["owners"] == ["tests"]  # the owner of the config's declared key
    assert body["models"] == ["dead-model", "mock-model"]
    assert body["tracing"] == {"enabled": False}
    assert {p["name"] for p in body["plans"]} == {"free"}


async def test_upstreams_show_health_without_credentials(server: Server) -> None:
    api = admin(server)
    with pytest.raises(openai.APIStatusError):  # the dead upstream refuses the connection
        await chat(server, TEST_KEY, model="dead-model")
    found = {u["name"]: u for u in (await api("GET", "/admin/console/upstreams")).body}
    assert found["mock"]["healthy"] is True and found["mock"]["inFlight"] == 0
    assert found["mock"]["models"] == ["mock-model"]
    dead = found["dead"]
    assert dead["healthy"] is False and dead["failures"] == 1
    assert 0 < dead["ejectedForSeconds"] <= 1.0
    assert dead["url"] == "http://127.0.0.1:1"  # never the credentials in the URL
    assert "secret" not in (await api("GET", "/admin/console/upstreams")).raw.decode()


async def test_recent_refusals_newest_first(server: Server) -> None:
    api = admin(server)
    message = {"model": "none", "messages": [{"role": "user", "content": "hi"}]}
    await call(server.port, "POST", "/v1/chat/completions", message)
    await call(server.port, "POST", "/v1/chat/completions", message, AUTH)
    body = (await api("GET", "/admin/console/refusals")).body
    reasons = [r["reason"] for r in body["recent"]]
    assert reasons == ["model_not_found", "invalid_api_key"]
    newest, oldest = body["recent"]
    assert newest["owner"] == "tests" and newest["keyId"] == "test" and newest["status"] == 404
    assert newest["route"] == "/v1/chat/completions" and newest["clientIp"] == "127.0.0.1"
    assert oldest["owner"] is None and oldest["status"] == 401
    assert newest["time"] >= oldest["time"] > 0
    assert {r["reason"] for r in body["byReason"]} == set(reasons)
    assert sum(r["count"] for r in body["sinceStart"]) == len(reasons)
    assert (await api("GET", "/admin/console/overview")).body["owners"] == ["tests"]


def test_the_ring_is_bounded() -> None:
    ring = RecentRefusals(3)
    for i in range(5):
        ring.entries.append((float(i), "r", 429, "/x", None, f"o{i}", None, None, f"req{i}"))
    assert [r["requestId"] for r in ring.to_api()] == ["req4", "req3", "req2"]
    assert ring.owners() == {"o2", "o3", "o4"}


async def test_usage_per_day_by_model_and_key(server: Server) -> None:
    api = admin(server)
    created = await api("POST", "/admin/keys", {"owner": "acme", "name": "ci"})
    key, key_id = created.body["key"], created.body["id"]
    for _ in range(3):
        assert await chat(server, key)

    async def settled() -> bool:
        reply = await api("GET", "/admin/console/usage?owner=acme&period=7d")
        return bool(reply.body["totalRequests"] == 3)

    await until(settled)
    body = (await api("GET", "/admin/console/usage?owner=acme&period=30d")).body
    assert len(body["daily"]) == 30
    today = body["daily"][-1]
    assert today["requests"] == 3 and today["errors"] == 0 and today["errorRate"] == 0.0
    assert today["inputTokens"] > 0 and today["cost"] == pytest.approx(today["inputTokens"])
    assert today["p95Ms"] >= today["p50Ms"] > 0
    assert sum(d["requests"] for d in body["daily"][:-1]) == 0
    assert [m["model"] for m in body["byModel"]] == ["mock-model"]
    assert body["byKey"] == [
        {
            "keyId": key_id,
            "name": "ci",
            "requests": 3,
            "inputTokens": today["inputTokens"],
            "outputTokens": today["outputTokens"],
            "cost": today["cost"],
            "errors": 0,
        }
    ]
    one = await api("GET", f"/admin/console/usage?owner=acme&period=7d&keyId={key_id}")
    assert one.body["totalRequests"] == 3
    other = await api("GET", "/admin/console/usage?owner=acme&period=7d&model=dead-model")
    assert other.body["totalRequests"] == 0
    assert (await api("GET", "/admin/console/usage?owner=acme&keyId=test")).status == 404
    assert (await api("GET", "/admin/console/usage")).status == 400
    assert (await api("GET", "/admin/console/usage?owner=acme&period=1y")).status == 400
    assert ADMIN_TOKEN not in (await api("GET", "/admin/console/usage?owner=acme")).raw.decode()


async def test_an_open_admin_api_says_so(
    gateway_factory: GatewayFactory, mock: tuple[int, Any]
) -> None:
    """Without ``admin.token`` (loopback only) the console signs in with an empty token."""
    server = await gateway_factory(gateway_yaml({"mock": f"http://127.0.0.1:{mock[0]}"}))
    answer = await call(server.admin_port, "GET", "/admin/console/overview")
    assert answer.status == 200 and answer.body["tokenRequired"] is False
