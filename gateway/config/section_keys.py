"""The readers of the ``keys`` section (the key prefix, keys declared by their hash, the demo
key) and of ``plans`` (what an owner's keys may use together).

Kept apart from ``config.sections`` (which calls them) for the module-size rule; same contract.
"""

from __future__ import annotations

import re

from gateway.config import fields as lp
from gateway.config import section_scheduling
from gateway.config.fields import Node, Obj
from gateway.config.schema import PERMISSIONS, Keys, Plan, StaticKey

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,15}(_[A-Za-z0-9]{1,16})?$")


def keys(o: Obj) -> Keys:
    static = tuple(_static_key(item) for item in o.each("static"))
    seen: dict[str, str] = {}
    for key in static:
        for label, value in (("id", key.id), ("sha256", key.sha256)):
            if value and f"{label}:{value}" in seen:
                o.ctx.error(o.line, o.sub("static"), f"two keys share the {label} {value[:12]!r}")
            seen[f"{label}:{value}"] = key.id
    out = Keys(static=static, **o.settings(Keys, prefix=_key_prefix, demo=lp.p_bool))
    o.done()
    return out


def plans(o: Obj) -> dict[str, Plan]:
    limit = lp.p_optional(lp.p_int(1))
    out = {}
    for name, p in o.entries():
        out[name] = Plan(
            name,
            **p.settings(
                Plan,
                max_keys=lp.p_optional(lp.p_int(0)),
                monthly_tokens=limit,
                rpm=limit,
                tpm=limit,
                monthly_budget_usd=_budget,
                overage=lp.p_enum("block", "allow"),
            ),
            **section_scheduling.plan_settings(p),
        )
        p.done()
    return out


def _sha256(node: Node) -> str:
    text = lp.p_str(node).strip().lower()
    if not _HEX64.match(text):
        raise lp.Invalid("expected the SHA-256 of the key as 64 hex digits (never the key itself)")
    return str(text)


def _permissions(node: Node) -> frozenset[str]:
    if not isinstance(node.value, list):
        raise lp.Invalid(f"expected a list of {', '.join(sorted(PERMISSIONS))}")
    values = {lp.p_str(item) for item in node.value}
    bad = values - PERMISSIONS
    if bad:
        raise lp.Invalid(
            f"unknown permission {sorted(bad)[0]!r}; use {', '.join(sorted(PERMISSIONS))}"
        )
    return frozenset(values)


def _static_key(o: Obj) -> StaticKey:
    limit = lp.p_optional(lp.p_int(1))
    names = lp.p_optional(lp.p_list(lp.p_name, o.ctx, o.sub("models")))
    out = StaticKey(
        id=o.need("id", lp.p_name, ""),
        owner=o.need("owner", lp.p_name, ""),
        sha256=o.need("sha256", _sha256, ""),
        **o.settings(
            StaticKey,
            name=lp.p_str,
            permissions=_permissions,
            models=lambda node: None if (found := names(node)) is None else frozenset(found),
            ip_whitelist=lp.p_list(lp.p_network, o.ctx, o.sub("ip_whitelist")),
            rpm_limit=limit,
            max_concurrency=limit,
            daily_limit=limit,
            monthly_limit=limit,
            expires_at=lp.p_optional(lp.p_timestamp),
            tpm_limit=limit,
            daily_budget_usd=_budget,
            monthly_budget_usd=_budget,
        ),
    )
    o.done()
    return out


def _budget(node: Node) -> float | None:
    """A budget in dollars (null: none)."""
    if node.value is None:
        return None
    return lp.p_float(0.0, exclusive=True)(node)


def _key_prefix(node: Node) -> str:
    prefix = lp.p_nonempty(node)
    if not _PREFIX.match(prefix):
        raise lp.Invalid(
            f"{prefix!r} must be letters and digits with at most one underscore, e.g. sk_gw"
        )
    return prefix
