"""OTLP/HTTP export of finished spans (the ``tracing:`` section; ``gateway.tracing`` records
them): a bounded queue, and a background task that posts them as an ``ExportTraceServiceRequest``
in the JSON encoding (lowerCamelCase keys, hex ids, 64-bit integers as decimal strings, enums as
integers) to ``{otlp_endpoint}/v1/traces``.

A request's spans are offered when it ends: past ``max_queue`` waiting spans they are dropped
and counted, never held. The task posts every second, or at once when a batch of 512 waits; a
post that fails (an error status, no answer within the timeout, no connection) is dropped and
counted, not retried, and the log says once when the collector stops taking spans and once when
it takes them again. Nothing here is ever awaited by a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway import __version__

log = logging.getLogger("gateway.tracing")

Attr = str | int | float | bool
STATUS_ERROR = 2  # OTLP Status.code
BATCH = 512
INTERVAL = 1.0
TIMEOUT = 10.0


@dataclass(slots=True)
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int = 0
    attributes: dict[str, Attr] = field(default_factory=dict)
    events: list[tuple[str, int, dict[str, Attr]]] = field(default_factory=list)
    error: str | None = None  # the status message of a failed span


def _value(value: Attr) -> dict[str, object]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # 64-bit integers are strings in OTLP JSON
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value}


def _attributes(attributes: Mapping[str, Attr]) -> list[dict[str, object]]:
    return [{"key": k, "value": _value(v)} for k, v in attributes.items()]


def _span(record: SpanRecord) -> dict[str, object]:
    out: dict[str, object] = {
        "traceId": record.trace_id,
        "spanId": record.span_id,
        "name": record.name,
        "kind": record.kind,
        "startTimeUnixNano": str(record.start_ns),
        "endTimeUnixNano": str(record.end_ns or record.start_ns),
        "attributes": _attributes(record.attributes),
        "status": {"code": STATUS_ERROR, "message": record.error} if record.error else {},
    }
    if record.parent_id is not None:
        out["parentSpanId"] = record.parent_id
    if record.events:
        out["events"] = [
            {"timeUnixNano": str(at), "name": name, "attributes": _attributes(attrs)}
            for name, at, attrs in record.events
        ]
    return out


def encode(service_name: str, spans: Sequence[SpanRecord]) -> bytes:
    """An OTLP ``ExportTraceServiceRequest`` in the JSON encoding (lowerCamelCase keys, hex
    ids, 64-bit integers as decimal strings, enums as integers)."""
    resource = {
        "service.name": service_name,
        "telemetry.sdk.name": "llm-edge-gateway",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": __version__,
    }
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": _attributes(resource)},
                    "scopeSpans": [
                        {
                            "scope": {"name": "gateway", "version": __version__},
                            "spans": [_span(s) for s in spans],
                        }
                    ],
                }
            ]
        }
    )


class Exporter:
    """The bounded queue of finished spans and the background task that posts them."""

    def __init__(
        self,
        endpoint: str,
        service_name: str,
        max_queue: int = 2048,
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
    ) -> None:
        self.url = endpoint.rstrip("/") + "/v1/traces"
        parts = urlsplit(self.url)  # what logs and the console show: no credentials
        self.shown_url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        self.service_name = service_name
        self.max_queue = max_queue
        self.interval = interval
        self.timeout = timeout
        self.queue: list[SpanRecord] = []
        self.exported = 0  # spans the collector accepted
        self.dropped = 0  # spans dropped: the queue was full
        self.failed = 0  # spans of posts that failed
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reachable: bool | None = None

    def offer(self, spans: list[SpanRecord]) -> None:
        """Queue a finished request's spans, or drop and count them when the queue is full."""
        if len(self.queue) + len(spans) > self.max_queue:
            self.dropped += len(spans)
            return
        self.queue.extend(spans)
        if len(self.queue) >= BATCH:
            self._wake.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the task, post what is queued (bounded by the timeout), close the session."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self.flush()
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # a bug must not end the exports for good
                log.exception("trace export failed")

    async def flush(self) -> None:
        """Post everything queued, a batch at a time."""
        while self.queue:
            batch = self.queue[:BATCH]
            del self.queue[:BATCH]
            await self._post(batch)

    async def _post(self, batch: list[SpanRecord]) -> None:
        if self._session is None:
            self.failed += len(batch)
            return
        body = encode(self.service_name, batch)
        problem = None
        try:
            async with self._session.post(
                self.url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                if not 200 <= response.status < 300:
                    problem = f"answered {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            problem = type(exc).__name__
        except asyncio.CancelledError:  # stopped in the middle of a post: counted, not lost
            self.failed += len(batch)
            raise
        if problem is None:
            self.exported += len(batch)
        else:
            self.failed += len(batch)
        self._say(problem)

    def _say(self, problem: str | None) -> None:
        """Log when the collector stops taking spans and when it takes them again."""
        if problem is not None and self._reachable is not False:
            log.warning(
                f"trace export to {self.shown_url} failed ({problem}); spans are dropped until "
                "it works",
                extra={"url": self.shown_url},
            )
        elif problem is None and self._reachable is False:
            log.warning(
                f"trace export to {self.shown_url} works again", extra={"url": self.shown_url}
            )
        self._reachable = problem is None
