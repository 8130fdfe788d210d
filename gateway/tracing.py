"""OpenTelemetry traces (``tracing:``): one span per request, children for its admission, each
upstream attempt (time to first token as an event) and its settlement, exported over OTLP/HTTP in
the JSON encoding, in batches, in the background.

The request path holds one ``RequestSpan`` per request::

    with rt.tracer.request(ex, request) as span:
        with span.child("admission"):
            ...
        with span.attempt(upstream.name) as attempt:
            headers = forward_headers(request.headers, upstream, ex.request_id,
                                      attempt.trace_headers)
            ...
            attempt.event("first_token")

With tracing off the tracer is ``NO_TRACER``: every span is the one shared ``NO_SPAN``, whose
methods return at once and whose ``trace_headers`` is None (the client's own trace headers then
go to the worker untouched, as without tracing).

Context is W3C Trace Context. A client's ``traceparent`` is parsed strictly (one header line;
version ``00``, or a later version's first four fields; lowercase hex; neither id all zeros); a
malformed one is ignored: a new trace starts and the client's ``tracestate`` is dropped. The
worker gets a ``traceparent`` naming the attempt's span (and the client's ``tracestate`` when its
trace was continued). Sampling is parent-based: a valid parent's sampled flag decides; a new
trace is sampled when the low 64 bits of its random trace id fall under ``sample_ratio`` * 2**64
(OpenTelemetry's TraceIdRatioBased). A request not sampled records nothing, but its worker is
still told (flag ``00``), so the worker does not sample what the gateway did not.

A sampled request's spans go to ``gateway.otlp``'s exporter when it ends (a bounded queue,
posted in the background: no request ever waits on an export).

No secret in any attribute: a span carries what the access log carries (key id, owner, model,
upstream, tokens, status, client address), never a header, a key or a body.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from multidict import MultiMapping

from gateway.config.schema import Tracing
from gateway.errors import GatewayError
from gateway.otlp import Attr, Exporter, SpanRecord

INTERNAL, SERVER, CLIENT = 1, 2, 3  # OTLP SpanKind
MAX_TEXT = 256  # an attribute's text is cut here: a client-chosen value cannot bloat a span
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_LOW64 = (1 << 64) - 1


# -- context -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Parent:
    """A valid incoming ``traceparent``."""

    trace_id: str
    span_id: str
    sampled: bool


def parse_traceparent(values: Sequence[str]) -> Parent | None:
    """The parent named by the ``traceparent`` header lines ``values``, or None if there is not
    exactly one valid line (W3C Trace Context, level 1)."""
    if len(values) != 1:
        return None
    value = values[0]
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or (version == "00" and len(value) != 55):
        return None
    if len(value) > 55 and value[55] != "-":  # a later version may add fields, after a dash
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return Parent(trace_id, span_id, int(flags, 16) & 1 == 1)


def traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


# -- what a request span reads -------------------------------------------------------------
class Facts(Protocol):
    """What a request span reads of the request's record (``proxy.exchange.Exchange``) at its
    end: the access log's fields, no secret among them."""

    request_id: str
    key_id: str | None
    owner: str | None
    model: str | None
    upstream: str | None
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    stream: bool
    anthropic: bool
    client_ip: str | None
    region: str | None
    agent_id: str | None
    error: bool
    upstream_status: int | None


class Incoming(Protocol):
    """What a request span reads of the HTTP request (``aiohttp.web.Request`` has it)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> MultiMapping[str]: ...


# -- the API the request path calls -------------------------------------------------------------
class Span(Protocol):
    """A child span: a context manager; an exception leaving it marks it failed."""

    @property
    def trace_headers(self) -> Mapping[str, str] | None: ...
    def event(self, name: str, attributes: Mapping[str, Attr] | None = None) -> None: ...
    def set(self, key: str, value: Attr | None) -> None: ...
    def __enter__(self) -> Span: ...
    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class RequestSpan(Span, Protocol):
    def child(self, name: str) -> Span: ...
    def attempt(self, upstream: str) -> Span: ...
    def __enter__(self) -> RequestSpan: ...


class NoSpan:
    """Tracing off: one shared object for every span, doing nothing."""

    __slots__ = ()
    trace_headers: Mapping[str, str] | None = None

    def child(self, name: str) -> NoSpan:
        return self

    def attempt(self, upstream: str) -> NoSpan:
        return self

    def event(self, name: str, attributes: Mapping[str, Attr] | None = None) -> None:
        pass

    def set(self, key: str, value: Attr | None) -> None:
        pass

    def __enter__(self) -> NoSpan:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass


NO_SPAN = NoSpan()


class _Unsampled(NoSpan):
    """Tracing on, this request not sampled: nothing recorded, the worker told so."""

    __slots__ = ("trace_headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.trace_headers = headers


class _Child:
    """A recording child span of a sampled request."""

    __slots__ = ("_request", "record")

    def __init__(self, request: _Recording, name: str, kind: int) -> None:
        self._request = request
        self.record = request.tracer.new_record(
            request.record.trace_id, request.record.span_id, name, kind
        )
        request.children.append(self.record)

    @property
    def trace_headers(self) -> Mapping[str, str]:
        return self._request.propagated(self.record.span_id)

    def event(self, name: str, attributes: Mapping[str, Attr] | None = None) -> None:
        _event(self.record, name, self._request.tracer.now_ns(), attributes)

    def set(self, key: str, value: Attr | None) -> None:
        if value is not None:
            self.record.attributes[key] = _bounded(value)

    def __enter__(self) -> _Child:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.record.end_ns = self._request.tracer.now_ns()
        if exc is not None:
            _failed(self.record, exc)


class _Recording:
    """The span of a sampled request; its children's records go out with it when it ends."""

    __slots__ = ("_state", "attempts", "children", "ex", "record", "tracer")

    def __init__(
        self,
        tracer: OtlpTracer,
        ex: Facts,
        incoming: Incoming,
        trace_id: str,
        parent: Parent | None,
    ) -> None:
        self.tracer = tracer
        self.ex = ex
        self.children: list[SpanRecord] = []
        self.attempts = 0
        state = incoming.headers.getall("tracestate", []) if parent is not None else []
        self._state = ",".join(state)
        method, path = incoming.method, incoming.path
        self.record = tracer.new_record(
            trace_id, parent.span_id if parent is not None else None, f"{method} {path}", SERVER
        )
        self.record.attributes.update(
            {"http.request.method": _bounded(method), "url.path": _bounded(path)}
        )

    def propagated(self, span_id: str) -> Mapping[str, str]:
        headers = {"traceparent": traceparent(self.record.trace_id, span_id, True)}
        if self._state:
            headers["tracestate"] = self._state
        return headers

    @property
    def trace_headers(self) -> Mapping[str, str]:
        return self.propagated(self.record.span_id)

    def child(self, name: str) -> _Child:
        return _Child(self, name, INTERNAL)

    def attempt(self, upstream: str) -> _Child:
        self.attempts += 1
        span = _Child(self, "upstream", CLIENT)
        span.record.attributes.update(
            {"gateway.upstream": _bounded(upstream), "gateway.attempt": self.attempts}
        )
        return span

    def event(self, name: str, attributes: Mapping[str, Attr] | None = None) -> None:
        _event(self.record, name, self.tracer.now_ns(), attributes)

    def set(self, key: str, value: Attr | None) -> None:
        if value is not None:
            self.record.attributes[key] = _bounded(value)

    def __enter__(self) -> _Recording:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        record = self.record
        record.end_ns = self.tracer.now_ns()
        ex = self.ex
        status = ex.upstream_status or 200
        if isinstance(exc, GatewayError):
            status = exc.status
        elif isinstance(exc, asyncio.CancelledError):
            status = 499  # the client left (nginx's code, as the access log has it)
        elif exc is not None:
            status = 500
        if exc is not None:
            _failed(record, exc)
        elif ex.error:
            record.error = "the upstream failed in the middle of the answer"
            record.attributes["error.type"] = "upstream"
        record.attributes.update(_facts(ex, status))
        self.tracer.exporter.offer([record, *self.children])


def _event(record: SpanRecord, name: str, at: int, attributes: Mapping[str, Attr] | None) -> None:
    record.events.append((name, at, {k: _bounded(v) for k, v in (attributes or {}).items()}))


def _facts(ex: Facts, status: int) -> dict[str, Attr]:
    """The request span's attributes from the request's record (the access log's fields)."""
    out: dict[str, Attr] = {
        "http.response.status_code": status,
        "gateway.request_id": _bounded(ex.request_id),
        "gateway.dialect": "anthropic" if ex.anthropic else "openai",
        "gateway.stream": ex.stream,
    }
    optional: tuple[tuple[str, str | None], ...] = (
        ("gateway.key_id", ex.key_id),
        ("gateway.owner", ex.owner),
        ("gen_ai.request.model", ex.model),
        ("gateway.upstream", ex.upstream),
        ("client.address", ex.client_ip),
        ("gateway.region", ex.region),
        ("gateway.agent_id", ex.agent_id),
    )
    for key, value in optional:
        if value is not None:
            out[key] = _bounded(value)
    if ex.prompt_tokens or ex.completion_tokens:
        out["gen_ai.usage.input_tokens"] = ex.prompt_tokens
        out["gen_ai.usage.output_tokens"] = ex.completion_tokens
        out["gateway.tokens_estimated"] = ex.estimated
    return out


def _failed(record: SpanRecord, exc: BaseException) -> None:
    """An exception that left a span: a refusal (4xx) names its code and leaves the status
    unset (the caller's error, not the gateway's); anything else marks the span failed. The
    message is a ``GatewayError``'s own (what the client was told), else only the type."""
    if isinstance(exc, GatewayError):
        record.attributes["error.type"] = _bounded(exc.code)
        if exc.status >= 500:
            record.error = exc.message[:MAX_TEXT]
    elif isinstance(exc, asyncio.CancelledError):
        record.attributes["error.type"] = "client_closed"
    else:
        record.attributes["error.type"] = type(exc).__name__
        record.error = type(exc).__name__


def _bounded(value: Attr) -> Attr:
    return value[:MAX_TEXT] if isinstance(value, str) else value


# -- tracers ------------------------------------------------------------------------------------
class Tracer(Protocol):
    enabled: bool

    def request(self, ex: Facts, incoming: Incoming) -> RequestSpan: ...
    def stats(self) -> dict[str, object]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class NoTracer:
    """Tracing off."""

    enabled = False

    def request(self, ex: Facts, incoming: Incoming) -> NoSpan:
        return NO_SPAN

    def stats(self) -> dict[str, object]:
        return {"enabled": False}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


NO_TRACER = NoTracer()


class OtlpTracer:
    """Tracing on: samples requests, records their spans and hands them to the exporter."""

    enabled = True

    def __init__(
        self,
        settings: Tracing,
        exporter: Exporter | None = None,
        rand: random.Random | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if settings.otlp_endpoint is None:
            raise ValueError("tracing.otlp_endpoint is not set")
        self.settings = settings
        self.exporter = exporter or Exporter(
            settings.otlp_endpoint, settings.service_name, settings.max_queue
        )
        self._bits = (rand or random.Random()).getrandbits
        self.now_ns = now_ns
        self._bound = int(settings.sample_ratio * (1 << 64))

    def new_span_id(self) -> str:
        return f"{self._bits(64) or 1:016x}"

    def new_record(self, trace_id: str, parent_id: str | None, name: str, kind: int) -> SpanRecord:
        return SpanRecord(trace_id, self.new_span_id(), parent_id, name, kind, self.now_ns())

    def request(self, ex: Facts, incoming: Incoming) -> RequestSpan:
        parent = parse_traceparent(incoming.headers.getall("traceparent", []))
        if parent is not None:
            trace_id, sampled = parent.trace_id, parent.sampled
        else:
            bits = self._bits(128) or 1
            trace_id, sampled = f"{bits:032x}", (bits & _LOW64) < self._bound
        if sampled:
            return _Recording(self, ex, incoming, trace_id, parent)
        headers = {"traceparent": traceparent(trace_id, self.new_span_id(), False)}
        if parent is not None:
            state = incoming.headers.getall("tracestate", [])
            if state:
                headers["tracestate"] = ",".join(state)
        return _Unsampled(headers)

    def stats(self) -> dict[str, object]:
        exporter = self.exporter
        return {
            "enabled": True,
            "endpoint": exporter.shown_url,
            "sampleRatio": self.settings.sample_ratio,
            "queued": len(exporter.queue),
            "exported": exporter.exported,
            "dropped": exporter.dropped,
            "failed": exporter.failed,
        }

    async def start(self) -> None:
        await self.exporter.start()

    async def stop(self) -> None:
        await self.exporter.stop()


def build_tracer(settings: Tracing) -> Tracer:
    """The process's tracer: ``NO_TRACER`` unless ``tracing.otlp_endpoint`` is set."""
    if settings.otlp_endpoint is None:
        return NO_TRACER
    return OtlpTracer(settings)
