"""The spans of a request as the handler makes them (request, admission, upstream attempts with
the first token as an event, settlement), made by the OpenTelemetry SDK and exported as OTLP/HTTP
protobuf to a real receiver on loopback; sampling; the trace context sent to the worker; the
bounded queue; failing collectors; no secret in any span; and the no-op when tracing is off."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.config.schema import Tracing, Upstream
from gateway.errors import GatewayError, TooManyRequests, UpstreamUnavailable
from gateway.proxy.exchange import Exchange
from gateway.proxy.upstream import forward_headers
from gateway.tracing import NO_SPAN, NO_TRACER, build_tracer
from gateway.tracing.otel import SdkTracer
from tests.tracing.receiver import CLIENT, INTERNAL, SERVER, Receiver, attrs, poll

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"
SECRET = "sk_gw_k0000001_supersecretvalue0000000000000"


def incoming(**headers: str) -> web.Request:
    """A request as the handler sees it, with these headers (name_with_underscores → dashes)."""
    multi = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    return make_mocked_request("POST", "/v1/chat/completions", headers=multi)


def exchange() -> Exchange:
    ex = Exchange("req-label", time.monotonic(), "req_own_1")
    ex.key_id, ex.owner, ex.model, ex.client_ip = "k0000001", "acme", "mock-model", "10.1.2.3"
    return ex


async def started(url: str, ratio: float = 1.0, **options: Any) -> SdkTracer:
    max_queue = options.pop("max_queue", 2048)
    settings = Tracing(url, sample_ratio=ratio, service_name="gw-test", max_queue=max_queue)
    tracer = SdkTracer(settings, **options)
    await tracer.start()
    return tracer


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


def test_off_nothing_of_opentelemetry_is_loaded() -> None:
    """A gateway serving with tracing off never imports the SDK (nor needs it installed)."""
    code = (
        "import sys\n"
        "from gateway.config.load import parse_text\n"
        "from gateway.server import Server\n"
        "server = Server(parse_text('upstreams: {}\\nmodels: {}\\n', 't.yaml', env={}))\n"
        "assert not server.runtime.tracer.enabled\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_off_the_clients_trace_context_reaches_the_worker_untouched() -> None:
    upstream = Upstream("u", "http://127.0.0.1:1")
    client = CIMultiDict({"traceparent": VALID, "tracestate": "a=1", "Authorization": "x"})
    sent = forward_headers(client, upstream, "req-1", NO_SPAN.trace_headers)
    assert sent["traceparent"] == VALID and sent["tracestate"] == "a=1"
    assert "Authorization" not in sent


# -- the spans of a request, exported -----------------------------------------------------------
async def test_a_requests_spans_reach_the_collector(receiver: Receiver) -> None:
    tracer = await started(receiver.url, interval=0.05)
    upstream = Upstream("b", "http://127.0.0.1:1", api_key="worker-secret")
    request = incoming(
        traceparent=VALID,
        tracestate="vendor=abc",
        Authorization=f"Bearer {SECRET}",
        X_API_Key=SECRET,
        Cookie="session=cookie-secret",
    )
    ex = exchange()
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
    spans = await receiver.wait_for(5)  # exported in the background, not at stop
    await tracer.stop()

    assert set(receiver.content_types) == {"application/x-protobuf"}
    resource = attrs(receiver.resources()[0].resource.attributes)
    assert resource["service.name"] == "gw-test"
    assert resource["telemetry.sdk.name"] == "opentelemetry"
    by_name = {s.name: s for s in spans if s.name != "upstream"}
    root = by_name["POST /v1/chat/completions"]
    admission, settlement = by_name["admission"], by_name["settlement"]
    first, second = sorted(
        (s for s in spans if s.name == "upstream"),
        key=lambda s: attrs(s.attributes)["gateway.attempt"],
    )
    assert len(spans) == 5
    assert {s.trace_id.hex() for s in spans} == {TRACE}  # the client's trace, continued
    assert root.parent_span_id.hex() == SPAN
    for child in (admission, first, second, settlement):
        assert child.parent_span_id == root.span_id
    assert len({s.span_id for s in spans}) == 5
    assert [root.kind, admission.kind, first.kind, second.kind, settlement.kind] == [
        SERVER,
        INTERNAL,
        CLIENT,
        CLIENT,
        INTERNAL,
    ]
    assert root.start_time_unix_nano <= admission.start_time_unix_nano
    assert settlement.end_time_unix_nano <= root.end_time_unix_nano
    got = attrs(root.attributes)
    assert got["http.response.status_code"] == 200
    assert got["gateway.key_id"] == "k0000001" and got["gateway.owner"] == "acme"
    assert got["gen_ai.request.model"] == "mock-model"
    assert got["gen_ai.usage.output_tokens"] == 34 and got["gateway.stream"] is False
    assert root.status.code == root.status.STATUS_CODE_UNSET
    assert first.status.code == first.status.STATUS_CODE_ERROR
    assert first.status.message == "Upstream 'a' refused the connection; try again shortly."
    assert attrs(first.attributes)["error.type"] == "upstream_unavailable"
    assert attrs(second.attributes) == {"gateway.upstream": "b", "gateway.attempt": 2}
    assert [e.name for e in second.events] == ["first_token"]  # the time to first token
    assert second.start_time_unix_nano <= second.events[0].time_unix_nano
    worker_parent = f"00-{TRACE}-{second.span_id.hex()}-01"
    assert sent["traceparent"] == worker_parent  # the worker's parent is this attempt
    assert sent["tracestate"] == "vendor=abc"
    assert sent["Authorization"] == "Bearer worker-secret"  # the worker's key, only upstream
    exported = b"".join(receiver.raw)
    for secret in (SECRET, "Bearer", "cookie-secret", "worker-secret", "Authorization"):
        assert secret.encode() not in exported
    assert tracer.stats()["exported"] == 5 and tracer.stats()["queued"] == 0


async def test_refusals_failures_and_departures(receiver: Receiver) -> None:
    tracer = await started(receiver.url)
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
    await tracer.stop()  # exports what is queued
    roots = [s for s in receiver.spans() if s.kind == SERVER]
    assert len(roots) == 4
    roots.sort(key=lambda s: s.start_time_unix_nano)
    for root, (_, status, kind, failed) in zip(roots, cases, strict=True):
        got = attrs(root.attributes)
        assert got["http.response.status_code"] == status
        assert got["error.type"] == kind
        assert (root.status.code == root.status.STATUS_CODE_ERROR) is failed
        assert not root.events  # no exception recorded: its text may hold anything
    assert b"sk_gw_secret_in_a_message" not in b"".join(receiver.raw)


async def test_a_stream_that_failed_midway_is_an_error(receiver: Receiver) -> None:
    tracer = await started(receiver.url)
    ex = exchange()
    with tracer.request(ex, incoming()):
        ex.stream, ex.error = True, True
    await tracer.stop()
    (root,) = receiver.spans()
    assert root.status.code == root.status.STATUS_CODE_ERROR
    assert attrs(root.attributes)["error.type"] == "upstream"


async def test_client_chosen_text_is_bounded(receiver: Receiver) -> None:
    tracer = await started(receiver.url)
    ex = exchange()
    ex.agent_id = "a" * 10_000
    with tracer.request(ex, incoming()) as span:
        span.set("x", "b" * 10_000)
        span.event("e", {"y": "c" * 10_000})
    await tracer.stop()
    (root,) = receiver.spans()
    got = attrs(root.attributes)
    assert got["gateway.agent_id"] == "a" * 256 and got["x"] == "b" * 256
    assert attrs(root.events[0].attributes) == {"y": "c" * 256}


# -- sampling and the worker's context ------------------------------------------------------------
@pytest.mark.parametrize(("ratio", "expected"), [(0.0, 0), (1.0, 2000), (0.25, 500)])
async def test_new_traces_are_sampled_by_ratio(ratio: float, expected: int) -> None:
    tracer = await started("http://127.0.0.1:1", ratio, max_queue=100_000, interval=60, timeout=0.5)
    ex, request = exchange(), incoming()
    told: set[int] = set()
    for _ in range(2000):
        with tracer.request(ex, request) as span:
            flags = int(span.trace_headers["traceparent"][-2:], 16)  # type: ignore[index]
            told.add(flags & 1)  # the sampled flag (0x02, a random trace id, may be set too)
    await tracer.stop()
    counts = tracer.counts
    sampled = counts.queued + counts.exported + counts.failed
    assert abs(sampled - expected) <= 90, (ratio, sampled)
    assert told == ({0, 1} if 0 < ratio < 1 else {int(ratio)}), told


async def test_a_parents_decision_is_kept_whatever_the_ratio() -> None:
    never = await started("http://127.0.0.1:1", 0.0, interval=60, timeout=0.5)
    with never.request(exchange(), incoming(traceparent=VALID)) as span:
        headers = span.trace_headers
    assert headers is not None and headers["traceparent"].startswith(f"00-{TRACE}-")
    assert never.counts.queued == 1
    await never.stop()

    always = await started("http://127.0.0.1:1", 1.0, interval=60, timeout=0.5)
    unsampled = f"00-{TRACE}-{SPAN}-00"
    request = incoming(traceparent=unsampled, tracestate="v=1")
    with always.request(exchange(), request) as span, span.attempt("a") as attempt:
        told = attempt.trace_headers
    assert always.counts.queued == 0  # nothing recorded
    await always.stop()
    assert told is not None  # ...but the worker is told not to sample either
    assert re.fullmatch(f"00-{TRACE}-[0-9a-f]{{16}}-00", told["traceparent"])
    assert told["traceparent"] != unsampled and told["tracestate"] == "v=1"


async def test_a_malformed_parent_starts_a_new_trace_and_drops_its_state(
    receiver: Receiver,
) -> None:
    tracer = await started(receiver.url)
    bad = f"00-{TRACE}-{SPAN}-01-extra"
    request = incoming(traceparent=bad, tracestate="v=1")
    with tracer.request(exchange(), request) as span, span.attempt("a") as attempt:
        told = attempt.trace_headers
    await tracer.stop()
    attempt_span, root = receiver.spans()
    assert root.parent_span_id == b"" and root.trace_id.hex() != TRACE
    assert told is not None and list(told) == ["traceparent"]  # no tracestate
    version, trace_id, span_id, flags = told["traceparent"].split("-")
    assert (trace_id, span_id) == (root.trace_id.hex(), attempt_span.span_id.hex())
    assert version == "00" and int(flags, 16) & 1 == 1  # sampled (0x02 may mark a random id)


async def test_a_bad_tracestate_is_not_passed_on(receiver: Receiver) -> None:
    tracer = await started(receiver.url)
    request = incoming(traceparent=VALID, tracestate="ok=1,Bad Member")
    with tracer.request(exchange(), request) as span:
        told = span.trace_headers
    await tracer.stop()
    assert told is not None and "tracestate" not in told
    assert told["traceparent"].startswith(f"00-{TRACE}-")


# -- the queue and the exporter ---------------------------------------------------------------
async def test_a_full_queue_drops_and_counts() -> None:
    tracer = await started("http://127.0.0.1:1", max_queue=10, interval=60, timeout=0.5)
    for _ in range(3):
        with (
            tracer.request(exchange(), incoming()) as span,
            span.child("a"),
            span.child("b"),
            span.child("c"),
        ):
            pass
    assert tracer.stats()["queued"] == 10 and tracer.stats()["dropped"] == 2
    await tracer.stop()


async def test_a_collector_that_fails_or_hangs_never_holds_a_request(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status, receiver.delay = 400, 1.0  # answers an error, and only after a second
    tracer = await started(receiver.url, interval=0.01, timeout=0.3)
    caplog.set_level(logging.DEBUG)
    with tracer.request(exchange(), incoming()):
        pass
    await poll(lambda: bool(receiver.requests), 5, lambda: None)  # a post waits on it now
    started_at = time.perf_counter()
    for _ in range(50):  # requests end meanwhile: none of them waits for the collector
        with tracer.request(exchange(), incoming()) as span, span.child("admission"):
            pass
    # A request that waited for the collector would wait at least its 0.3 s timeout, so the 50
    # would take 15 s; unhindered they take milliseconds (0.7 s seen on a loaded CI machine).
    assert time.perf_counter() - started_at < 5.0
    await poll(lambda: tracer.counts.failed == 101, 10, lambda: None)  # all posted, all failed
    await tracer.stop()
    assert tracer.counts.exported == 0
    failures = [r for r in caplog.records if "export" in r.getMessage().lower()]
    assert [r.name for r in failures] == ["gateway.tracing"]  # said once, by the gateway


async def test_an_unreachable_collector_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    tracer = await started("http://user:pw@127.0.0.1:1", interval=0.01, timeout=1)
    with tracer.request(exchange(), incoming()):
        pass
    await poll(lambda: tracer.counts.failed == 1, 10, lambda: None)
    await tracer.stop()
    assert tracer.stats()["endpoint"] == "http://127.0.0.1:1/v1/traces"  # no credentials
    assert "pw@" not in caplog.text


async def test_a_request_that_ends_after_the_stop_is_dropped(receiver: Receiver) -> None:
    tracer = await started(receiver.url)
    with tracer.request(exchange(), incoming()):
        await tracer.stop()  # the process stops while this request is still being answered
    assert tracer.stats()["queued"] == 0 and tracer.stats()["dropped"] == 1
    assert receiver.spans() == []
    assert tracer.request(exchange(), incoming()) is NO_SPAN  # stopped: nothing is traced
