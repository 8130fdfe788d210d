"""OpenTelemetry traces (``tracing:``): a span per request, children for its admission, each
upstream attempt (time to first token as an event) and its settlement, exported over OTLP/HTTP
by the OpenTelemetry SDK, an optional extra (``pip install 'llm-edge-gateway[tracing]'``).

The request path holds one ``RequestSpan`` per request::

    with rt.tracer.request(ex, request) as span:
        with span.child("admission"):
            ...
        with span.attempt(upstream.name) as attempt:
            headers = forward_headers(request.headers, upstream, ex.request_id,
                                      attempt.trace_headers)
            ...
            attempt.event("first_token")

Modules: ``api`` (the protocols, and the no-op ``NO_TRACER``/``NO_SPAN`` of tracing off),
``context`` (W3C trace context read strictly), ``attributes`` (what a span says), ``otel`` (the
SDK's spans and provider) and ``export`` (the bounded, counted batch export). Only ``otel`` and
``export`` import the SDK, and only ``build_tracer`` imports them, when tracing is configured:
with tracing off nothing of OpenTelemetry is loaded and the request path calls the no-op.
"""

from __future__ import annotations

import importlib.util

from gateway.config.schema import Tracing
from gateway.tracing.api import (
    NO_SPAN,
    NO_TRACER,
    Attr,
    Facts,
    Incoming,
    NoSpan,
    NoTracer,
    RequestSpan,
    Span,
    Tracer,
)
from gateway.tracing.context import Parent, parse_traceparent, parse_tracestate

__all__ = [
    "INSTALL",
    "NO_SPAN",
    "NO_TRACER",
    "Attr",
    "Facts",
    "Incoming",
    "NoSpan",
    "NoTracer",
    "Parent",
    "RequestSpan",
    "Span",
    "Tracer",
    "build_tracer",
    "parse_traceparent",
    "parse_tracestate",
    "sdk_installed",
]

INSTALL = "pip install 'llm-edge-gateway[tracing]'"
_NEEDED = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")


def sdk_installed() -> bool:
    """Whether the ``tracing`` extra (the OpenTelemetry SDK and its OTLP/HTTP exporter) is
    installed, without importing it."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in _NEEDED)
    except (ImportError, ValueError):  # a parent package missing or broken
        return False


def build_tracer(settings: Tracing) -> Tracer:
    """The process's tracer: ``NO_TRACER`` unless ``tracing.otlp_endpoint`` is set."""
    if settings.otlp_endpoint is None:
        return NO_TRACER
    if not sdk_installed():  # the config check says so first; this is for a bare caller
        raise RuntimeError(f"tracing needs the OpenTelemetry SDK, not installed: {INSTALL}")
    from gateway.tracing.otel import SdkTracer  # only when tracing is on

    return SdkTracer(settings)
