"""The readers of the routing settings: a model's ``routing`` and ``retry`` and the check of its
``fallbacks``, an upstream's ``metrics_path`` and ``discover``, and the top-level ``routing``
section.

Apart from ``config.sections`` (which calls them) to keep that module within its size; same
contract: each reader takes an ``Obj`` and returns frozen settings, errors go to the ``Ctx``.
"""

from __future__ import annotations

from typing import Any

from gateway.config import fields as lp
from gateway.config.fields import Node, Obj
from gateway.config.schema import RETRY_KINDS, Model, ModelRouting, Retry, Routing, Upstream

POLICIES = ("least_loaded", "round_robin", "random", "affinity")


def routing(o: Obj) -> Routing:
    """The top-level ``routing`` section."""
    out = Routing(
        **o.settings(
            Routing,
            expose_headers=lp.p_bool,
            signals_interval=lp.p_float(0.0, exclusive=True),
        )
    )
    o.done()
    return out


def model_routing(o: Obj) -> ModelRouting:
    """``models.<name>.routing``."""
    out = ModelRouting(
        **o.settings(
            ModelRouting,
            policy=lp.p_enum(*POLICIES),
            affinity_prefix_tokens=lp.p_int(1, 1_000_000),
            load_factor=lp.p_float(1.0),
        )
    )
    o.done()
    return out


def retry(o: Obj) -> Retry:
    """``models.<name>.retry``."""
    out = Retry(
        **o.settings(
            Retry,
            attempts=lp.p_int(1, 16),
            on=_kinds,
            budget_percent=_percent,
            timeout=lp.p_optional(lp.p_float(0.0, exclusive=True)),
        )
    )
    o.done()
    return out


def check_fallbacks(o: Obj, models: dict[str, Model]) -> None:
    """Every fallback names another model (by its own name: an alias is a client's word)."""
    for name, model in models.items():
        entry = o.items[name]
        node = entry.value.get("fallbacks") if isinstance(entry.value, dict) else None
        line = node.line if isinstance(node, Node) else entry.line
        for i, other in enumerate(model.fallbacks):
            where = f"{o.sub(name)}.fallbacks[{i}]"
            if other == name:
                o.ctx.error(line, where, "a model cannot be its own fallback")
            elif other not in models:
                o.ctx.error(line, where, f"unknown model {other!r}; name a model under models")


def upstream_settings(u: Obj) -> dict[str, Any]:
    """An upstream's ``metrics_path``, ``discover`` and ``discover_interval``, as keywords."""
    return u.settings(
        Upstream,
        metrics_path=lp.p_optional(_path),
        discover=lp.p_optional(lp.p_enum("dns")),
        discover_interval=lp.p_float(0.0, exclusive=True),
    )


def _path(node: Node) -> str:
    text = lp.p_nonempty(node)
    if not text.startswith("/"):
        raise lp.Invalid(f"{text!r} must be a path starting with '/', e.g. /metrics")
    return text


def _kinds(node: Node) -> frozenset[str]:
    if not isinstance(node.value, list):
        raise lp.Invalid(f"expected a list of {', '.join(RETRY_KINDS)}")
    values = {str(item.value) for item in node.value}
    bad = sorted(values - set(RETRY_KINDS))
    if bad:
        raise lp.Invalid(f"unknown failure {bad[0]!r}; use {', '.join(RETRY_KINDS)}")
    return frozenset(values)


def _percent(node: Node) -> float:
    value = lp.p_float(0.0)(node)
    if value > 100.0:
        raise lp.Invalid(f"must be from 0 to 100 (a percentage), got {value:g}")
    return value
