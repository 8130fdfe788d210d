"""An OTLP/HTTP receiver on loopback, as a collector is: it takes ``POST /v1/traces`` with an
``application/x-protobuf`` body, decodes it as an ``ExportTraceServiceRequest`` (the generated
code of opentelemetry-proto) and keeps every request's raw bytes and spans."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

SERVER, INTERNAL, CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_CLIENT


class Receiver:
    """Every export request that reached it, decoded; ``status``/``delay`` script its answer."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.raw: list[bytes] = []
        self.content_types: list[str] = []
        self.status = 200
        self.delay = 0.0
        self.url = ""

    async def traces(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.raw.append(raw)
        self.content_types.append(request.content_type)
        decoded = ExportTraceServiceRequest()
        decoded.ParseFromString(raw)  # raises on anything that is not the protobuf
        self.requests.append(decoded)
        if self.delay:
            await asyncio.sleep(self.delay)
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, status=self.status, content_type="application/x-protobuf")

    def resources(self) -> list[ResourceSpans]:
        return [rs for request in self.requests for rs in request.resource_spans]

    def spans(self) -> list[Span]:
        return [s for rs in self.resources() for scope in rs.scope_spans for s in scope.spans]

    async def wait_for(self, count: int, within: float = 10.0) -> list[Span]:
        """The spans once at least ``count`` arrived (polled, with a deadline)."""
        return await poll(lambda: len(self.spans()) >= count, within, self.spans)


async def poll(done: Callable[[], bool], within: float, then: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)
    return then()


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def attrs(pairs: Any) -> dict[str, Any]:
    """A span's (or event's, or resource's) attributes as a dict of Python values."""
    return {kv.key: value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield found
    await runner.cleanup()
