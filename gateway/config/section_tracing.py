"""The ``tracing`` section: OpenTelemetry export settings (off while no endpoint is set)."""

from __future__ import annotations

from gateway.config import fields as lp
from gateway.config.fields import Node, Obj
from gateway.config.schema import Tracing


def read(o: Obj) -> Tracing:
    out = Tracing(
        otlp_endpoint=o.get("otlp_endpoint", lp.p_optional(lp.p_http_url), None),
        sample_ratio=o.get("sample_ratio", _ratio, 1.0),
        service_name=o.get("service_name", lp.p_nonempty, "gateway"),
        max_queue=o.get("max_queue", lp.p_int(1, 1_000_000), 2048),
    )
    o.done()
    return out


def _ratio(node: Node) -> float:
    value = lp.p_float(0.0)(node)
    if value > 1.0:
        raise lp.Invalid(f"must be from 0 to 1 (a fraction of new traces), got {value:g}")
    return value
