"""The ``tracing`` section: OpenTelemetry export settings (off while no endpoint is set). An
endpoint set where the ``tracing`` extra is not installed is an error naming what to install."""

from __future__ import annotations

from gateway.config import fields as lp
from gateway.config.fields import Node, Obj
from gateway.config.schema import Tracing
from gateway.tracing import INSTALL, sdk_installed


def read(o: Obj) -> Tracing:
    out = Tracing(
        **o.settings(
            Tracing,
            otlp_endpoint=_endpoint,
            sample_ratio=_ratio,
            service_name=lp.p_nonempty,
            max_queue=lp.p_int(1, 1_000_000),
        )
    )
    o.done()
    return out


def _endpoint(node: Node) -> str | None:
    value = lp.p_optional(lp.p_http_url)(node)
    if value is not None and not sdk_installed():
        raise lp.Invalid(
            "tracing needs the OpenTelemetry SDK and its OTLP/HTTP exporter, an optional extra "
            f"that is not installed: {INSTALL} (or leave otlp_endpoint empty: tracing off)"
        )
    return value


def _ratio(node: Node) -> float:
    value = lp.p_float(0.0)(node)
    if value > 1.0:
        raise lp.Invalid(f"must be from 0 to 1 (a fraction of new traces), got {value:g}")
    return value
