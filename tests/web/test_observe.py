"""What ``Observer.done`` leaves behind, checked against the plain computation it caches: the same
series with the same values on /metrics (and none made early), the same access-log line."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import generate_latest

from gateway.logs import AccessLog
from gateway.metrics import Metrics
from gateway.proxy.exchange import Exchange
from gateway.web.observe import Observer, route_of
from gateway.web.public import CHAT_PATHS
from tests.conftest import access_log_fields


def reference(
    metrics: Metrics, request: web.Request, ex: Exchange, status: int, took: float
) -> Any:
    """Every metric with a fresh ``labels()`` call, and the access line, as they were computed
    before any caching."""
    route = route_of(request)
    dialect = "anthropic" if ex.anthropic else "openai"
    model = ex.model or ""
    api = ex.api if ex.api != "chat" or route in CHAT_PATHS else ""  # a route serving no API: ""
    metrics.requests.labels(route, model, str(status), dialect, api).inc()
    metrics.duration.labels(route, dialect, api).observe(took)
    if ex.refusal is not None:
        metrics.refusals.labels(ex.refusal).inc()
    if ex.ttft is not None and ex.upstream is not None:
        metrics.ttft.labels(model, ex.upstream).observe(ex.ttft)
    if ex.prompt_tokens or ex.completion_tokens:
        estimated = "true" if ex.estimated else "false"
        metrics.tokens.labels(model, "prompt", estimated, api).inc(ex.prompt_tokens)
        metrics.tokens.labels(model, "completion", estimated, api).inc(ex.completion_tokens)
    return Observer._line(request, ex, route, status, took, api)  # the line is not cached


def text(metrics: Metrics) -> list[str]:
    """The exposition without the ``_created`` timestamps, which differ between registries."""
    return [
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if "_created" not in line
    ]


async def _ok(request: web.Request) -> web.Response:
    return web.Response()


async def request_to(app: web.Application, method: str, path: str) -> web.Request:
    request = make_mocked_request(method, path, app=app)
    request._match_info = await app.router.resolve(request)  # what the app does before handling
    return request


def exchange(request_id: str, **fields: Any) -> Exchange:
    ex = Exchange(request_id, 0.0, "own-1")
    for name, value in fields.items():
        setattr(ex, name, value)
    return ex


async def test_done_matches_the_uncached_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _ok)
    app.router.add_get("/v1/models/{name}", _ok)
    chat = await request_to(app, "POST", "/v1/chat/completions")
    model = await request_to(app, "GET", "/v1/models/m1")
    missing = await request_to(app, "GET", "/nope")
    wrong = await request_to(app, "GET", "/v1/chat/completions")
    proxied = {
        "model": "m",
        "upstream": "mock",
        "ttft": 0.012345,
        "key_id": "k",
        "owner": "o",
        "client_ip": "127.0.0.1",
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "stream": True,
        "agent_id": "a",
        "region": "r",
    }
    cases: list[tuple[web.Request, Exchange, int, float]] = [
        (chat, exchange("r1", **proxied), 200, 0.0123456),
        (chat, exchange("r2", **proxied), 200, 2.5),  # the same series again
        (chat, exchange("r3", **{**proxied, "estimated": True, "anthropic": True}), 200, 0.3),
        (chat, exchange("r4", **{**proxied, "upstream": "other", "ttft": 0.5}), 200, 0.7),
        (chat, exchange("r5", **{**proxied, "completion_tokens": 0}), 200, 0.01),
        (chat, exchange("r6", model="m", upstream="mock", error=True), 502, 0.02),
        (chat, exchange("r7", refusal="invalid_api_key"), 401, 0.001),
        (chat, exchange("r8", refusal="invalid_api_key", anthropic=True), 401, 0.001),
        (chat, exchange("r9", refusal="rate_limited", model="m"), 429, 0.002),
        (chat, exchange("r10", model="m", upstream="mock"), 200, 0.0),  # no ttft, no tokens
        (model, exchange("r11", key_id="k"), 200, 0.0004),
        (missing, exchange("r12", refusal="not_found"), 404, 0.0001),
        (wrong, exchange("r13", refusal="method_not_allowed"), 405, 0.0001),
        (chat, exchange("r14", **proxied), 200, 0.0123456),
    ]
    expected, observed = Metrics(), Metrics()
    out = io.BytesIO()
    observer = Observer(observed, AccessLog(out))
    monkeypatch.setattr("gateway.logs.time.time", lambda: 1_700_000_000.5)
    lines = []
    for request, ex, status, took in cases:
        line = reference(expected, request, ex, status, took)
        line["time"] = "2023-11-14T22:13:20.500Z"
        lines.append(line)
        observer.done(request, ex, status, took)
        assert text(observed) == text(expected)  # after every request: no series made early
    observer.access.flush()
    written = out.getvalue().splitlines()
    assert [orjson.loads(w) for w in written] == lines
    assert [list(orjson.loads(w)) for w in written] == [list(line) for line in lines]  # order
    assert written[0].startswith(b'{"request_id":"r1",')


async def test_done_without_an_access_log_counts_alike() -> None:
    app = web.Application()
    app.router.add_post("/v1/messages", _ok)
    request = await request_to(app, "POST", "/v1/messages")
    expected, observed = Metrics(), Metrics()
    observer = Observer(observed, None)
    for i in range(3):
        ex = exchange(f"r{i}", model="m", upstream="u", ttft=0.1 * i, prompt_tokens=i)
        reference(expected, request, ex, 200, 0.05 * i)
        observer.done(request, ex, 200, 0.05 * i)
    assert text(observed) == text(expected)


def test_the_access_line_has_the_documented_fields_in_their_order() -> None:
    """docs/operations.md's table, "time" last (``AccessLog.write`` adds it)."""
    fields = access_log_fields()
    out = io.BytesIO()
    log = AccessLog(out)
    request = make_mocked_request("POST", "/v1/chat/completions")
    log.write(Observer._line(request, Exchange("r", 0.0, "r"), "/v1/chat/completions", 200, 0.5))
    log.flush()
    assert fields[0] == "time"
    assert list(orjson.loads(out.getvalue())) == [*fields[1:], "time"]
