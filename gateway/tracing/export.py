"""The way out for finished spans: the OpenTelemetry SDK's ``BatchSpanProcessor`` (its own
thread, batches of 512, every second) feeding its OTLP/HTTP protobuf exporter, wrapped to bound
and count what waits.

``Bounded`` lets a finished span into the batch queue only while fewer than ``max_queue`` wait;
past that it is dropped and counted, never held. ``Counted`` wraps the exporter: it counts what
went out and what failed, and logs once when the collector stops taking spans and once when it
takes them again (the SDK's own per-batch export lines are quietened). Nothing here is ever
awaited by a request: the request path only appends to a queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("gateway.tracing")
QUIETENED = ("opentelemetry.exporter.otlp.common.http", "opentelemetry.exporter.otlp.proto.http")


class Counts:
    """Spans waiting, exported, failed and dropped (updated from two threads, hence a lock)."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.queued = self.exported = self.failed = self.dropped = 0
        self.lock = threading.Lock()

    def admit(self, open_: bool = True) -> bool:
        """Whether one more finished span may wait (``open_``: the exporter still runs)."""
        with self.lock:
            if not open_ or self.queued >= self.max_queue:
                self.dropped += 1
                return False
            self.queued += 1
            return True

    def taken(self, count: int, ok: bool) -> None:
        with self.lock:
            self.queued -= count
            if ok:
                self.exported += count
            else:
                self.failed += count


class Bounded(SpanProcessor):
    """The batch processor behind a bound of ``counts.max_queue`` waiting spans."""

    def __init__(self, inner: SpanProcessor, counts: Counts) -> None:
        self.inner = inner
        self.counts = counts
        self.open = True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self.counts.admit(self.open):  # a request that ends after the stop: dropped
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.open = False
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Counted(SpanExporter):
    """The OTLP exporter, counted, saying once when exports stop and start working."""

    def __init__(self, inner: SpanExporter, counts: Counts, shown_url: str) -> None:
        self.inner = inner
        self.counts = counts
        self.shown_url = shown_url
        self._working: bool | None = None
        for name in QUIETENED:  # this wrapper says it once, with the URL, instead
            logging.getLogger(name).setLevel(logging.CRITICAL)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # a bug in an export must not end the exports for good
            log.exception("trace export failed")
            result = SpanExportResult.FAILURE
        ok = result is SpanExportResult.SUCCESS
        self.counts.taken(len(spans), ok)
        self._say(ok)
        return result

    def _say(self, ok: bool) -> None:
        if not ok and self._working is not False:
            log.warning(
                f"trace export to {self.shown_url} failed; spans are dropped until it works",
                extra={"url": self.shown_url},
            )
        elif ok and self._working is False:
            log.warning(
                f"trace export to {self.shown_url} works again", extra={"url": self.shown_url}
            )
        self._working = ok

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
