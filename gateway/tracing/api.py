"""What the request path calls: a ``Tracer`` hands out one ``RequestSpan`` per request, whose
children are the request's admission, each upstream attempt and its settlement.

With tracing off the tracer is ``NO_TRACER`` and every span is the one shared ``NO_SPAN``: its
methods return at once, it is never copied, and nothing of OpenTelemetry is imported. This module
imports no SDK, so a gateway without the ``tracing`` extra runs it as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Protocol

from multidict import MultiMapping

Attr = str | int | float | bool


class Facts(Protocol):
    """What a request span reads of the request's record (``proxy.exchange.Exchange``) at its
    end: the access log's fields, no secret among them."""

    request_id: str
    key_id: str | None
    owner: str | None
    model: str | None
    upstream: str | None
    api: str
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


class Span(Protocol):
    """A child span: a context manager; an exception leaving it marks it failed (and is never
    swallowed)."""

    @property
    def trace_headers(self) -> Mapping[str, str] | None:
        """What the worker is sent (``traceparent``, maybe ``tracestate``); None: tracing off,
        the client's own trace headers go to the worker untouched."""

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
