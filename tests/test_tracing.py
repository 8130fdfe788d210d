"""Tracing (``gateway.tracing``, exported by ``gateway.otlp``): W3C trace context parsed
strictly, parent-based ratio sampling, the spans of a request as the handler makes them (request,
admission, upstream attempts with the first token as an event, settlement) exported as OTLP/HTTP
JSON to a real receiver on loopback, the trace context sent to the worker, the bounded queue,
failed exports, no secret in any span, and the no-op tracer when tracing is off."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.config.load import ConfigError, parse_text
from gateway.config.schema import Tracing, Upstream
from gateway.errors import GatewayError, TooManyRequests, UpstreamUnavailable
from gateway.otlp import Exporter, SpanRecord, encode
from gateway.proxy.exchange import Exchange
from gateway.proxy.upstream import forward_headers
from gateway.server import Server
from gateway.tracing import (
    NO_SPAN,
    NO_TRACER,
    OtlpTracer,
    Parent,
    build_tracer,
    parse_traceparent,
)
from tests.conftest import GatewayFactory, gateway_yaml

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
SECRET = "sk_gw_k0000001_supersecretvalue0000000000000"


class Receiver:
    """An OTLP/HTTP receiver on loopback: keeps every request's JSON (and headers)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.content_types: list[str] = []
        self.status = 200
        self.delay = 0.0
        self.got = asyncio.Event()

    async def traces(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.raw.append(raw)
        self.content_types.append(request.content_type)
        self.bodies.append(orjson.loads(raw))
        self.got.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(body=b"{}", status=self.status, content_type="application/json")

    def spans(self) -> list[dict[str, Any]]:
        return [
            span
            for body in self.bodies
            for resource in body["resourceSpans"]
            for scope in resource["scopeSpans"]
            for span in scope["spans"]
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield found, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def incoming(**headers: str) -> web.Request:
    """A request as the handler sees it, with these headers (name_with_underscores → dashes)."""
    multi = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    return make_mocked_request("POST", "/v1/chat/completions", headers=multi)


def exchange() -> Exchange:
    ex = Exchange("req-label", time.monotonic(), "req_own_1")
    ex.key_id, ex.owner, ex.model, ex.client_ip = "k0000001", "acme", "mock-model", "10.1.2.3"
    return ex


def tracer_for(url: str, ratio: float = 1.0, seed: int = 7, **exporter: Any) -> OtlpTracer:
    settings = Tracing(otlp_endpoint=url, sample_ratio=ratio, service_name="gw-test")
    sink = Exporter(url, settings.service_name, **exporter)
    return OtlpTracer(settings, sink, rand=random.Random(seed))


# -- trace context ------------------------------------------------------------------------------
VALID = f"00-{TRACE}-{SPAN}-01"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([VALID], Parent(TRACE, SPAN, True)),
        ([f"00-{TRACE}-{SPAN}-00"], Parent(TRACE, SPAN, False)),
        ([f"00-{TRACE}-{SPAN}-09"], Parent(TRACE, SPAN, True)),  # other flags are ignored
        ([f"01-{TRACE}-{SPAN}-01-later-fields"], Parent(TRACE, SPAN, True)),  # a later version
        ([f"01-{TRACE}-{SPAN}-01"], Parent(TRACE, SPAN, True)),
        ([], None),
        ([VALID, VALID], None),  # two header lines
        ([VALID.upper()], None),
        ([f"ff-{TRACE}-{SPAN}-01"], None),  # version ff is invalid
        ([f"00-{TRACE}-{SPAN}-01-x"], None),  # version 00 has exactly four fields
        ([f"01-{TRACE}-{SPAN}-01x"], None),
        ([f"00-{'0' * 32}-{SPAN}-01"], None),
        ([f"00-{TRACE}-{'0' * 16}-01"], None),
        ([f"00-{TRACE[:-1]}-{SPAN}-01"], None),
        ([f"00-{TRACE}-{SPAN}-1"], None),
        ([f" {VALID}"], None),
        ([f"00_{TRACE}_{SPAN}_01"], None),
        (["garbage"], None),
        ([""], None),
    ],
)
def test_traceparent_is_parsed_strictly(values: list[str], expected: Parent | None) -> None:
    assert parse_traceparent(values) == expected


# -- tracing off --------------------------------------------------------------------------------
def test_off_every_span_is_one_object_that_does_nothing() -> None:
    assert build_tracer(Tracing()) is NO_TRACER
    span = NO_TRACER.request(exchange(), incoming(traceparent=VALID))
    assert span is NO_SPAN
    with span as entered:
        assert entered is NO_SPAN
        assert span.child("admission") is NO_SPAN and span.attempt("a") is NO_SPAN
        with span.attempt("a") as attempt:
            attempt.event("first_token")
            attempt.set("x", 1)
            assert attempt.trace_headers is None
    with pytest.raises(TooManyRequests), span, span.child("admission"):
        raise TooManyRequests("no")  # never swallowed
    assert NO_TRACER.stats() == {"enabled": False}


def test_off_the_clients_trace_context_reaches_the_worker_untouched() -> None:
    upstream = Upstream("u", "http://127.0.0.1:1")
    client = CIMultiDict({"traceparent": VALID, "tracestate": "a=1", "Authorization": "x"})
    sent = forward_headers(client, upstream, "req-1", NO_SPAN.trace_headers)
    assert sent["traceparent"] == VALID and sent["tracestate"] == "a=1"
    assert "Authorization" not in sent


# -- sampling ---------------------------------------------------------------------------------
def test_new_traces_are_sampled_by_ratio() -> None:
    ex, request = exchange(), incoming()
    for ratio, expected in ((0.0, 0), (1.0, 4000), (0.25, 1000)):
        tracer = tracer_for("http://127.0.0.1:1", ratio=ratio, max_queue=100_000)
        for _ in range(4000):
            with tracer.request(ex, request):
                pass
        sampled = len(tracer.exporter.queue)
        assert abs(sampled - expected) <= 120, (ratio, sampled)


def test_a_parents_decision_is_kept_whatever_the_ratio() -> None:
    never = tracer_for("http://127.0.0.1:1", ratio=0.0)
    with never.request(exchange(), incoming(traceparent=VALID)) as span:
        headers = span.trace_headers
    assert headers is not None and headers["traceparent"].startswith(f"00-{TRACE}-")
    assert [r.parent_id for r in never.exporter.queue] == [SPAN]

    always = tracer_for("http://127.0.0.1:1", ratio=1.0)
    unsampled = f"00-{TRACE}-{SPAN}-00"
    request = incoming(traceparent=unsampled, tracestate="v=1")
    with always.request(exchange(), request) as span, span.attempt("a") as attempt:
        told = attempt.trace_headers
    assert always.exporter.queue == []  # nothing recorded
    assert told is not None
    assert re.fullmatch(f"00-{TRACE}-[0-9a-f]{{16}}-00", told["traceparent"])
    assert told["traceparent"] != unsampled and told["tracestate"] == "v=1"


def test_a_malformed_parent_starts_a_new_trace_and_drops_its_state() -> None:
    tracer = tracer_for("http://127.0.0.1:1")
    bad = f"00-{TRACE}-{SPAN}-01-extra"
    request = incoming(traceparent=bad, tracestate="v=1")
    with tracer.request(exchange(), request) as span, span.attempt("a") as attempt:
        told = attempt.trace_headers
    record = tracer.exporter.queue[0]
    assert record.parent_id is None and record.trace_id != TRACE
    assert told == {"traceparent": f"00-{record.trace_id}-{tracer.exporter.queue[1].span_id}-01"}


# -- the spans of a request, exported -----------------------------------------------------------
async def test_a_requests_spans_reach_the_collector(receiver: tuple[Receiver, str]) -> None:
    found, url = receiver
    tracer = tracer_for(url, interval=0.05)
    await tracer.start()
    upstream = Upstream("b", "http://127.0.0.1:1", api_key="worker-secret")
    request = incoming(
        traceparent=VALID,
        tracestate="vendor=abc",
        Authorization=f"Bearer {SECRET}",
        X_API_Key=SECRET,
        Cookie="session=cookie-secret",
    )
    ex = exchange()
    sent: dict[str, str] = {}
    with tracer.request(ex, request) as span:
        with span.child("admission"):
            pass
        with pytest.raises(UpstreamUnavailable), span.attempt("a"):
            raise UpstreamUnavailable("Upstream 'a' refused the connection; try again shortly.")
        with span.attempt("b") as attempt:
            sent = forward_headers(request.headers, upstream, ex.request_id, attempt.trace_headers)
            attempt.event("first_token")
        ex.upstream, ex.prompt_tokens, ex.completion_tokens = "b", 12, 34
        with span.child("settlement"):
            pass
    await asyncio.wait_for(found.got.wait(), 5)
    await tracer.stop()

    assert found.content_types == ["application/json"]
    body = found.bodies[0]
    resource = {a["key"]: a["value"] for a in body["resourceSpans"][0]["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "gw-test"}
    spans = found.spans()
    assert [s["name"] for s in spans] == [
        "POST /v1/chat/completions",
        "admission",
        "upstream",
        "upstream",
        "settlement",
    ]
    root, admission, first, second, _ = spans
    assert {s["traceId"] for s in spans} == {TRACE}
    assert root["parentSpanId"] == SPAN
    assert all(s["parentSpanId"] == root["spanId"] for s in spans[1:])
    assert len({s["spanId"] for s in spans}) == 5
    assert [s["kind"] for s in spans] == [2, 1, 3, 3, 1]
    for span in spans:
        assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"])
        assert span["startTimeUnixNano"].isdigit() and span["endTimeUnixNano"].isdigit()
        assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"])
    attrs = {a["key"]: a["value"] for a in root["attributes"]}
    assert attrs["http.response.status_code"] == {"intValue": "200"}
    assert attrs["gateway.key_id"] == {"stringValue": "k0000001"}
    assert attrs["gateway.owner"] == {"stringValue": "acme"}
    assert attrs["gen_ai.request.model"] == {"stringValue": "mock-model"}
    assert attrs["gen_ai.usage.output_tokens"] == {"intValue": "34"}
    assert attrs["gateway.stream"] == {"boolValue": False}
    assert root["status"] == {} and admission["status"] == {}
    assert first["status"] == {
        "code": 2,
        "message": "Upstream 'a' refused the connection; try again shortly.",
    }
    first_attrs = {a["key"]: a["value"] for a in first["attributes"]}
    assert first_attrs["error.type"] == {"stringValue": "upstream_unavailable"}
    assert first_attrs["gateway.attempt"] == {"intValue": "1"}
    second_attrs = {a["key"]: a["value"] for a in second["attributes"]}
    assert second_attrs["gateway.upstream"] == {"stringValue": "b"}
    assert second_attrs["gateway.attempt"] == {"intValue": "2"}
    assert [e["name"] for e in second["events"]] == ["first_token"]
    assert int(second["startTimeUnixNano"]) <= int(second["events"][0]["timeUnixNano"])
    assert sent["traceparent"] == f"00-{TRACE}-{second['spanId']}-01"  # the worker's parent
    assert sent["tracestate"] == "vendor=abc"
    assert sent["Authorization"] == "Bearer worker-secret"  # the worker's key, only upstream
    text = found.raw[0].decode()
    for secret in (SECRET, "Bearer", "cookie-secret", "worker-secret", "Authorization"):
        assert secret not in text
    assert tracer.stats()["exported"] == 5


async def test_refusals_failures_and_departures(receiver: tuple[Receiver, str]) -> None:
    found, url = receiver
    tracer = tracer_for(url)
    await tracer.start()
    cases: list[tuple[BaseException, int, str, bool]] = [
        (TooManyRequests("slow down"), 429, "rate_limit_exceeded", False),
        (GatewayError("broken"), 500, "internal_error", True),
        (asyncio.CancelledError(), 499, "client_closed", False),
        (KeyError("sk_gw_secret_in_a_message"), 500, "KeyError", True),
    ]
    for exc, *_ in cases:
        with (
            pytest.raises(type(exc)),
            tracer.request(exchange(), incoming()) as span,
            span.child("admission"),
        ):
            raise exc
    await tracer.stop()  # posts what is queued
    roots = [s for s in found.spans() if s["kind"] == 2]
    assert len(roots) == 4
    for root, (_, status, kind, failed) in zip(roots, cases, strict=True):
        attrs = {a["key"]: a["value"] for a in root["attributes"]}
        assert attrs["http.response.status_code"] == {"intValue": str(status)}
        assert attrs["error.type"] == {"stringValue": kind}
        assert (root["status"].get("code") == 2) is failed
    assert "sk_gw_secret_in_a_message" not in b"".join(found.raw).decode()


async def test_a_stream_that_failed_midway_is_an_error(receiver: tuple[Receiver, str]) -> None:
    found, url = receiver
    tracer = tracer_for(url)
    await tracer.start()
    ex = exchange()
    with tracer.request(ex, incoming()):
        ex.stream, ex.error = True, True
    await tracer.stop()
    (root,) = found.spans()
    assert root["status"]["code"] == 2
    assert {"key": "error.type", "value": {"stringValue": "upstream"}} in root["attributes"]


async def test_client_chosen_text_is_bounded() -> None:
    tracer = tracer_for("http://127.0.0.1:1")
    ex = exchange()
    ex.agent_id = "a" * 10_000
    with tracer.request(ex, incoming()) as span:
        span.set("x", "b" * 10_000)
        span.event("e", {"y": "c" * 10_000})
    root = tracer.exporter.queue[0]
    assert root.attributes["gateway.agent_id"] == "a" * 256
    assert root.attributes["x"] == "b" * 256 and root.events[0][2]["y"] == "c" * 256


# -- the queue and the exporter ---------------------------------------------------------------
def test_a_full_queue_drops_and_counts() -> None:
    tracer = tracer_for("http://127.0.0.1:1", max_queue=10)
    for _ in range(3):
        with (
            tracer.request(exchange(), incoming()) as span,
            span.child("a"),
            span.child("b"),
            span.child("c"),
        ):
            pass
    assert len(tracer.exporter.queue) == 8 and tracer.exporter.dropped == 4
    assert tracer.stats()["dropped"] == 4 and tracer.stats()["queued"] == 8


async def test_a_collector_that_fails_or_hangs_never_holds_a_request(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    found, url = receiver
    found.status, found.delay = 503, 1.0  # answers an error, and only after a second
    tracer = tracer_for(url, interval=0.01, timeout=0.3)
    await tracer.start()
    caplog.set_level(logging.WARNING, "gateway.tracing")
    with tracer.request(exchange(), incoming()):
        pass
    await asyncio.wait_for(found.got.wait(), 5)  # a post is now waiting on the collector
    request = incoming()
    started = time.perf_counter()
    for _ in range(50):  # requests end meanwhile: none of them waits for the collector
        with tracer.request(exchange(), request) as span, span.child("admission"):
            pass
    assert time.perf_counter() - started < 0.5
    await asyncio.sleep(0.5)  # the first post timed out; the next batch goes and fails too
    await tracer.stop()
    assert tracer.exporter.failed == 101 and tracer.exporter.exported == 0
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1  # said once


async def test_an_unreachable_collector_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    tracer = tracer_for("http://user:pw@127.0.0.1:1", interval=0.01, timeout=1)
    await tracer.start()
    with tracer.request(exchange(), incoming()):
        pass
    await tracer.stop()
    assert tracer.exporter.failed == 1
    assert tracer.stats()["endpoint"] == "http://127.0.0.1:1/v1/traces"  # no credentials
    assert "pw@" not in caplog.text


def test_the_json_encoding() -> None:
    record = SpanRecord(TRACE, SPAN, None, "n", 2, 1_000, 2_000)
    record.attributes.update({"s": "x", "i": 7, "f": 0.5, "b": True})
    record.events.append(("e", 1_500, {}))
    body = orjson.loads(encode("svc", [record]))
    (span,) = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert span == {
        "traceId": TRACE,
        "spanId": SPAN,
        "name": "n",
        "kind": 2,
        "startTimeUnixNano": "1000",
        "endTimeUnixNano": "2000",
        "attributes": [
            {"key": "s", "value": {"stringValue": "x"}},
            {"key": "i", "value": {"intValue": "7"}},
            {"key": "f", "value": {"doubleValue": 0.5}},
            {"key": "b", "value": {"boolValue": True}},
        ],
        "status": {},
        "events": [{"timeUnixNano": "1500", "name": "e", "attributes": []}],
    }
    assert body["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"] == "gateway"


# -- configuration and wiring -----------------------------------------------------------------
def test_the_tracing_section() -> None:
    base = "upstreams: {}\nmodels: {}\n"
    assert parse_text(base, "t.yaml", env={}).tracing == Tracing()
    config = parse_text(
        base + "tracing: {otlp_endpoint: 'http://collector:4318/', sample_ratio: 0.1,"
        " service_name: edge, max_queue: 100}\n",
        "t.yaml",
        env={},
    )
    assert config.tracing == Tracing("http://collector:4318", 0.1, "edge", 100)
    empty = parse_text(base + "tracing: {otlp_endpoint: '${OTEL:-}'}\n", "t.yaml", env={})
    assert empty.tracing.otlp_endpoint is None
    for bad, path in [
        ("{sample_ratio: 1.5}", "tracing.sample_ratio"),
        ("{sample_ratio: -0.1}", "tracing.sample_ratio"),
        ("{otlp_endpoint: 'grpc://c:4317'}", "tracing.otlp_endpoint"),
        ("{max_queue: 0}", "tracing.max_queue"),
        ("{service_name: ''}", "tracing.service_name"),
        ("{headers: {}}", "tracing.headers"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(path)):
            parse_text(base + f"tracing: {bad}\n", "t.yaml", env={})


async def test_a_gateway_with_tracing_exports_in_the_background_and_flushes_at_stop(
    gateway_factory: GatewayFactory, mock: tuple[int, Any], receiver: tuple[Receiver, str]
) -> None:
    found, url = receiver
    text = gateway_yaml(
        {"mock": f"http://127.0.0.1:{mock[0]}"},
        extra=f"tracing: {{otlp_endpoint: '{url}', service_name: edge}}\n",
    )
    server: Server = await gateway_factory(text)
    tracer = server.runtime.tracer
    assert isinstance(tracer, OtlpTracer) and tracer.stats()["enabled"] is True
    with tracer.request(exchange(), incoming()):
        pass
    await server.stop()  # the queued span goes out before the process ends
    assert [s["name"] for s in found.spans()] == ["POST /v1/chat/completions"]


def test_ids_come_from_the_injected_randomness() -> None:
    one, two = tracer_for("http://127.0.0.1:1", seed=1), tracer_for("http://127.0.0.1:1", seed=1)
    assert [one.new_span_id() for _ in range(3)] == [two.new_span_id() for _ in range(3)]
