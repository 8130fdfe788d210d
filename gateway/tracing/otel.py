"""Tracing on: the request path's spans made with the OpenTelemetry SDK (the optional
``tracing`` extra; ``gateway.tracing.build_tracer`` imports this module only when tracing is
configured).

Each process builds its own ``TracerProvider`` when it starts (after a fork), never the global
one: sampling ``ParentBased(TraceIdRatioBased(sample_ratio))`` (a valid client parent's sampled
flag decides; a new trace by its id, so every process decides alike), attribute text cut at 256
characters, and the bounded, counted batch export of ``gateway.tracing.export``.

A client's ``traceparent`` and ``tracestate`` are read strictly (``gateway.tracing.context``)
and become the remote parent; the worker is sent the attempt's context by the SDK's W3C
propagator. No span is ever made current (no context variable is touched) and no exception is
recorded: a span says an error's code and, for the gateway's own failures, what the client was
told, never an exception's text or a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from types import TracebackType
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace import Span as OtelSpan
from opentelemetry.trace import Tracer as OtelTracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.config.schema import Tracing
from gateway.tracing.api import NO_SPAN, Attr, Facts, Incoming, NoSpan
from gateway.tracing.attributes import MAX_TEXT, bounded, facts, failure, request_status
from gateway.tracing.context import Parent, parse_traceparent, parse_tracestate
from gateway.tracing.export import Bounded, Counted, Counts

BATCH = 512
INTERVAL = 1.0  # seconds between exports (sooner when a batch waits)
TIMEOUT = 10.0  # seconds one export may take, its retries included
_PROPAGATOR = TraceContextTextMapPropagator()


def _remote(parent: Parent) -> Context:
    """The client's span as the remote parent of the request span."""
    flags = TraceFlags(TraceFlags.SAMPLED if parent.sampled else TraceFlags.DEFAULT)
    context = SpanContext(
        int(parent.trace_id, 16),
        int(parent.span_id, 16),
        is_remote=True,
        trace_flags=flags,
        trace_state=TraceState(list(parent.state)),
    )
    return set_span_in_context(NonRecordingSpan(context))


def _ended(span: OtelSpan, exc: BaseException | None) -> None:
    if exc is not None:
        kind, message = failure(exc)
        span.set_attribute("error.type", kind)
        if message is not None:
            span.set_status(Status(StatusCode.ERROR, message))
    span.end()


class _Child:
    """A child span: admission, an upstream attempt, settlement."""

    __slots__ = ("span",)

    def __init__(self, span: OtelSpan) -> None:
        self.span = span

    @property
    def trace_headers(self) -> Mapping[str, str]:
        return _injected(self.span)

    def event(self, name: str, attributes: Mapping[str, Attr] | None = None) -> None:
        self.span.add_event(name, attributes)

    def set(self, key: str, value: Attr | None) -> None:
        if value is not None:
            self.span.set_attribute(key, value)

    def __enter__(self) -> _Child:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _ended(self.span, exc)


def _root(tracer: OtelTracer, incoming: Incoming) -> OtelSpan:
    """The request's span: the client's trace continued, or a new one (the sampler decides)."""
    headers = incoming.headers
    parent = parse_traceparent(headers.getall("traceparent", ()))
    context = None
    if parent is not None:
        state = parse_tracestate(headers.getall("tracestate", ()))
        context = _remote(Parent(parent.trace_id, parent.span_id, parent.sampled, state))
    method, path = incoming.method, incoming.path
    return tracer.start_span(
        f"{method} {path}"[:MAX_TEXT],
        context,
        SpanKind.SERVER,
        {"http.request.method": bounded(method), "url.path": bounded(path)},
    )


def _injected(span: OtelSpan) -> dict[str, str]:
    headers: dict[str, str] = {}
    _PROPAGATOR.inject(headers, set_span_in_context(span))
    return headers


class _Unsampled(NoSpan):
    """Tracing on, this request not sampled: nothing recorded (no child span is even made),
    but the worker is told, so that it does not sample what the gateway did not."""

    __slots__ = ("trace_headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.trace_headers = headers


class _Request(_Child):
    """The span of one sampled request (the server span); its end reads the request's
    record."""

    __slots__ = ("_attempts", "_context", "_ex", "_tracer")

    def __init__(self, tracer: OtelTracer, ex: Facts, span: OtelSpan) -> None:
        super().__init__(span)
        self._tracer, self._ex, self._attempts = tracer, ex, 0
        self._context = set_span_in_context(span)

    def child(self, name: str) -> _Child:
        return _Child(self._tracer.start_span(name, self._context, SpanKind.INTERNAL))

    def attempt(self, upstream: str) -> _Child:
        self._attempts += 1
        attributes = {"gateway.upstream": bounded(upstream), "gateway.attempt": self._attempts}
        return _Child(
            self._tracer.start_span("upstream", self._context, SpanKind.CLIENT, attributes)
        )

    def __enter__(self) -> _Request:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span, ex = self.span, self._ex
        span.set_attributes(facts(ex, request_status(ex, exc)))
        if exc is None and ex.error:
            span.set_attribute("error.type", "upstream")
            span.set_status(Status(StatusCode.ERROR, "the upstream failed midway"))
        _ended(span, exc)


def shown(url: str) -> str:
    """A URL as logs and the console show it: without credentials."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class SdkTracer:
    """Tracing on: samples requests, records their spans, exports them in the background."""

    enabled = True

    def __init__(
        self, settings: Tracing, interval: float = INTERVAL, timeout: float = TIMEOUT
    ) -> None:
        if settings.otlp_endpoint is None:
            raise ValueError("tracing.otlp_endpoint is not set")
        self.settings = settings
        self.url = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        self.interval, self.timeout = interval, timeout
        self.counts = Counts(settings.max_queue)
        self._provider: TracerProvider | None = None
        self._tracer: OtelTracer | None = None

    def request(self, ex: Facts, incoming: Incoming) -> _Request | NoSpan:
        tracer = self._tracer
        if tracer is None:  # not started yet, or stopped: nothing to export to
            return NO_SPAN
        span = _root(tracer, incoming)
        if span.is_recording():
            return _Request(tracer, ex, span)
        return _Unsampled(_injected(span))

    def stats(self) -> dict[str, object]:
        counts = self.counts
        return {
            "enabled": True,
            "endpoint": shown(self.url),
            "sampleRatio": self.settings.sample_ratio,
            "queued": counts.queued,
            "exported": counts.exported,
            "dropped": counts.dropped,
            "failed": counts.failed,
        }

    async def start(self) -> None:
        """Build this process's provider (its export thread starts here, after any fork)."""
        settings = self.settings
        exporter = Counted(
            OTLPSpanExporter(endpoint=self.url, timeout=self.timeout), self.counts, shown(self.url)
        )
        batches = BatchSpanProcessor(
            exporter,
            max_queue_size=settings.max_queue + 1,  # never full: ``Bounded`` drops first
            schedule_delay_millis=self.interval * 1000,
            max_export_batch_size=min(BATCH, settings.max_queue),
        )
        self._provider = provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
            resource=Resource.create({"service.name": settings.service_name}),
            span_limits=SpanLimits(max_attribute_length=MAX_TEXT),
            shutdown_on_exit=False,  # stop() flushes, bounded; an exit never waits on a collector
        )
        provider.add_span_processor(Bounded(batches, self.counts))
        self._tracer = provider.get_tracer("gateway", __version__)

    async def stop(self) -> None:
        """Export what is queued and stop, waiting at most the export timeout: the shutdown runs
        on a thread of its own, which a hung collector may keep but never the process."""
        provider, self._provider, self._tracer = self._provider, None, None
        if provider is None:
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def shut() -> None:
            try:
                provider.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be gone by then
                    loop.call_soon_threadsafe(_settle, done)

        threading.Thread(target=shut, name="gateway-trace-shutdown", daemon=True).start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), self.timeout + 1)


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
