"""The readers of each configuration section, and the checks that span sections.

Called by ``config.load`` with an ``Obj`` over the file's top mapping; returns a ``Config``
whatever the errors (the loader raises if any were collected).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, cast

from gateway import paths
from gateway.config import fields as lp
from gateway.config import routing_sections as rs
from gateway.config import section_alerts, section_responses, section_scheduling, section_tracing
from gateway.config.fields import Ctx, Node, Obj
from gateway.config.schema import (
    APIS,
    DEFAULT_APIS,
    DEFAULT_MAX_TOKENS,
    PERMISSIONS,
    Admin,
    Auth,
    Config,
    Keys,
    Listen,
    Log,
    MockWorker,
    Model,
    Network,
    Overage,
    Plan,
    Pricing,
    Route,
    StaticKey,
    Store,
    Timeouts,
    Tls,
    Upstream,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,15}(_[A-Za-z0-9]{1,16})?$")


def build(top: Obj, ctx: Ctx, source: str) -> Config:
    listen = _listen(top.obj("listen"))
    admin = _admin(top.obj("admin"))
    store = _store(top.obj("store"))
    network = _network(top.obj("network"))
    keys = _keys(top.obj("keys"))
    plans = _plans(top.obj("plans"))
    default_plan = top.get("default_plan", lp.p_nonempty, "free")
    auth_obj = top.obj("auth")
    auth = Auth(auth_obj.get("max_failures_per_minute", lp.p_int(1), 20))
    auth_obj.done()
    upstreams = _upstreams(top.obj("upstreams"))
    models = _models(top.obj("models"), upstreams)
    routes = _routes(top, upstreams)
    log_obj = top.obj("log")
    log = Log(
        level=cast(
            Any, log_obj.get("level", lp.p_enum("debug", "info", "warning", "error"), "info")
        ),
        access=log_obj.get("access", lp.p_bool, True),
    )
    log_obj.done()
    mock = _mock_worker(top.obj("mock_worker")) if top.has("mock_worker") else None
    alerts = section_alerts.read(top.obj("alerts"))
    tracing = section_tracing.read(top.obj("tracing"))
    routing = rs.routing(top.obj("routing"))
    responses = section_responses.read(top.obj("responses"))
    scheduling = section_scheduling.read(top.obj("scheduling"))
    top.done()
    if plans and default_plan not in plans:
        ctx.error(
            top.items["default_plan"].line if top.has("default_plan") else 1,
            "default_plan",
            f"{default_plan!r} is not one of the plans ({', '.join(plans)})",
        )
    if not plans:
        if default_plan != "free":
            ctx.error(
                top.items["default_plan"].line,
                "default_plan",
                f"{default_plan!r} is not a plan: with no plans section the only plan is "
                f"'free'; define it under plans (plans: {{{default_plan}: {{...}}}})",
            )
        plans = {"free": Plan("free", max_keys=None, monthly_tokens=None, rpm=None)}
        default_plan = "free"
    check_workers(ctx, top, listen.workers, store)
    if keys.demo and not store.is_memory:
        ctx.error(
            top.items["keys"].line,
            "keys.demo",
            "a demo key is only issued with the memory:// store",
        )
    if not _is_loopback(admin.host) and not admin.token:
        line = top.items["admin"].line if top.has("admin") else 1
        ctx.error(line, "admin.token", f"required when admin.host is {admin.host!r} (not loopback)")
    return Config(
        listen,
        admin,
        store,
        network,
        keys,
        plans,
        default_plan,
        auth,
        upstreams,
        models,
        routes,
        log,
        mock,
        source,
        routing=routing,
        alerts=alerts,
        tracing=tracing,
        responses=responses,
        scheduling=scheduling,
    )


def workers_problem(workers: int, store: Store) -> str | None:
    """Why ``workers`` processes cannot share ``store``, or None."""
    if workers > 1 and store.is_memory:
        return (
            f"memory:// cannot be shared by {workers} worker processes; "
            "set store.url to a redis:// URL or run one worker"
        )
    return None


def check_workers(ctx: Ctx, top: Obj, workers: int, store: Store) -> None:
    problem = workers_problem(workers, store)
    if problem:
        node = top.items.get("listen")
        ctx.error(node.line if node else 1, "listen.workers", problem)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(o: Obj) -> Listen:
    tls_obj = o.obj("tls") if o.has("tls") and o.items["tls"].value is not None else None
    tls = None
    if tls_obj is not None:
        tls = Tls(tls_obj.need("cert", _readable, ""), tls_obj.need("key", _readable, ""))
        tls_obj.done()
    else:
        o.node("tls")
    out = Listen(
        host=o.get("host", lp.p_nonempty, "0.0.0.0"),
        port=o.get("port", lp.p_int(0, 65535), 8080),
        workers=o.get("workers", lp.p_int(1, 256), 1),
        tls=tls,
        drain_timeout=o.get("drain_timeout", lp.p_float(0.0), 30.0),
    )
    o.done()
    return out


def _readable(node: Node) -> str:
    path = lp.p_nonempty(node)
    if not os.path.isfile(path):
        raise lp.Invalid(f"{path!r} not found (a PEM file)")
    if not os.access(path, os.R_OK):
        raise lp.Invalid(f"{path!r} is not readable by this user")
    return str(path)


def _admin(o: Obj) -> Admin:
    out = Admin(
        host=o.get("host", lp.p_nonempty, "127.0.0.1"),
        port=o.get("port", lp.p_int(0, 65535), 9090),
        token=o.get("token", lp.p_optional(lp.p_str), None),
    )
    o.done()
    return out


def _store_url(node: Node) -> str:
    url = lp.p_nonempty(node)
    if url == "memory://" or url.startswith(("redis://", "rediss://", "redis+cluster://")):
        return str(url)
    raise lp.Invalid(
        f"{url.split('://')[0]!r} is not a store; use memory://, redis://, rediss:// "
        "or redis+cluster://"
    )


def _store(o: Obj) -> Store:
    out = Store(
        url=o.get("url", _store_url, "memory://"),
        on_error=cast(Any, o.get("on_error", lp.p_enum("closed", "open"), "closed")),
        timeout_ms=o.get("timeout_ms", lp.p_int(1, 60_000), 250),
        buffer_max=o.get("buffer_max", lp.p_int(0), 100_000),
    )
    o.done()
    return out


def _network(o: Obj) -> Network:
    out = Network(
        trusted_proxies=o.get(
            "trusted_proxies", lp.p_list(lp.p_network, o.ctx, o.sub("trusted_proxies")), ()
        ),
        max_body_bytes=o.get("max_body_bytes", lp.p_int(1), 52_428_800),
        header_timeout=o.get("header_timeout", lp.p_float(0.0, exclusive=True), 10.0),
        body_timeout=o.get("body_timeout", lp.p_float(0.0, exclusive=True), 60.0),
        security_headers=o.get("security_headers", lp.p_bool, True),
        hsts=o.get("hsts", lp.p_bool, True),
    )
    o.done()
    return out


def _name(node: Node) -> str:
    text = lp.p_nonempty(node)
    if not _NAME.match(text):
        raise lp.Invalid(f"{text!r} is not a valid name (letters, digits and ._:/@+- only)")
    return str(text)


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
    models = o.get("models", lp.p_optional(lp.p_list(_name, o.ctx, o.sub("models"))), None)
    out = StaticKey(
        id=o.need("id", _name, ""),
        owner=o.need("owner", _name, ""),
        sha256=o.need("sha256", _sha256, ""),
        name=o.get("name", lp.p_str, ""),
        permissions=o.get("permissions", _permissions, frozenset({"chat"})),
        models=frozenset(models) if models is not None else None,
        ip_whitelist=o.get(
            "ip_whitelist", lp.p_list(lp.p_network, o.ctx, o.sub("ip_whitelist")), ()
        ),
        rpm_limit=o.get("rpm_limit", limit, None),
        max_concurrency=o.get("max_concurrency", limit, None),
        daily_limit=o.get("daily_limit", limit, None),
        monthly_limit=o.get("monthly_limit", limit, None),
        expires_at=o.get("expires_at", lp.p_optional(lp.p_timestamp), None),
        tpm_limit=o.get("tpm_limit", limit, None),
        daily_budget_usd=o.get("daily_budget_usd", _budget, None),
        monthly_budget_usd=o.get("monthly_budget_usd", _budget, None),
    )
    o.done()
    return out


def _budget(node: Node) -> float | None:
    """A budget in dollars (null: none)."""
    if node.value is None:
        return None
    return lp.p_float(0.0, exclusive=True)(node)


def _each(o: Obj, name: str) -> list[Obj]:
    """The items of a list of mappings, each as an ``Obj``."""
    node = o.node(name)
    if node is None or node.value is None:
        return []
    if not isinstance(node.value, list):
        o.ctx.error(node.line, o.sub(name), "expected a list")
        return []
    return [lp.Obj(o.ctx, item, f"{o.sub(name)}[{i}]") for i, item in enumerate(node.value)]


def _entries(o: Obj) -> list[tuple[str, Obj]]:
    """The entries of a mapping of named mappings (``upstreams``, ``models``, ``plans``)."""
    out = []
    for name, node in o.items.items():
        o.taken.add(name)
        if not _NAME.match(name):
            o.ctx.error(node.line, o.sub(name), f"{name!r} is not a valid name")
        out.append((name, lp.Obj(o.ctx, node, o.sub(name))))
    return out


def _keys(o: Obj) -> Keys:
    prefix = o.get("prefix", lp.p_nonempty, "sk_gw")
    if not _PREFIX.match(prefix):
        o.ctx.error(
            o.items["prefix"].line,
            o.sub("prefix"),
            f"{prefix!r} must be letters and digits with at most one underscore, e.g. sk_gw",
        )
    static = tuple(_static_key(item) for item in _each(o, "static"))
    seen: dict[str, str] = {}
    for key in static:
        for label, value in (("id", key.id), ("sha256", key.sha256)):
            if value and f"{label}:{value}" in seen:
                o.ctx.error(o.line, o.sub("static"), f"two keys share the {label} {value[:12]!r}")
            seen[f"{label}:{value}"] = key.id
    demo = o.get("demo", lp.p_bool, False)
    o.done()
    return Keys(prefix=prefix, static=static, demo=demo)


def _plans(o: Obj) -> dict[str, Plan]:
    limit = lp.p_optional(lp.p_int(1))
    plans = {}
    for name, p in _entries(o):
        plans[name] = Plan(
            name,
            p.get("max_keys", lp.p_optional(lp.p_int(0)), None),
            p.get("monthly_tokens", limit, None),
            p.get("rpm", limit, None),
            p.get("tpm", limit, None),
            p.get("monthly_budget_usd", _budget, None),
            cast(Overage, p.get("overage", lp.p_enum("block", "allow"), "block")),
            **section_scheduling.plan_settings(p),
        )
        p.done()
    return plans


def _upstreams(o: Obj) -> dict[str, Upstream]:
    out = {}
    for name, u in _entries(o):
        t = u.obj("timeouts")
        positive = lp.p_float(0.0, exclusive=True)
        timeouts = Timeouts(
            t.get("connect", positive, 5.0),
            t.get("first_byte", positive, 300.0),
            t.get("idle", positive, 120.0),
        )
        t.done()
        out[name] = Upstream(
            name=name,
            url=u.need("url", lp.p_http_url, "http://invalid"),
            api_key=u.get("api_key", lp.p_optional(lp.p_str), None),
            region=u.get("region", lp.p_optional(lp.p_str), None),
            weight=u.get("weight", lp.p_float(0.0, exclusive=True), 1.0),
            max_concurrency=u.get("max_concurrency", lp.p_optional(lp.p_int(1)), None),
            timeouts=timeouts,
            health_path=u.get("health_path", lp.p_optional(lp.p_str), None),
            **rs.upstream_settings(u),
        )
        u.done()
    return out


def _models(o: Obj, upstreams: dict[str, Upstream]) -> dict[str, Model]:
    out: dict[str, Model] = {}
    names: dict[str, str] = {}
    for name, m in _entries(o):
        refs_node = m.node("upstreams")
        refs = _upstream_refs(m, refs_node, upstreams)
        aliases: tuple[str, ...] = m.get("aliases", lp.p_list(_name, m.ctx, m.sub("aliases")), ())
        pr = m.obj("pricing")
        pricing = Pricing(
            pr.get("input_per_mtok", lp.p_float(0.0), 0.0),
            pr.get("output_per_mtok", lp.p_float(0.0), 0.0),
            pr.get("per_image", lp.p_float(0.0), 0.0),
            pr.get("per_audio_second", lp.p_float(0.0), 0.0),
            pr.get("per_request", lp.p_float(0.0), 0.0),
        )
        pr.done()
        out[name] = Model(
            name,
            refs,
            m.get("upstream_model", lp.p_nonempty, name),
            aliases,
            m.get("owned_by", lp.p_nonempty, "gateway"),
            pricing,
            m.get("default_max_tokens", lp.p_int(1), DEFAULT_MAX_TOKENS),
            m.get("apis", _apis, DEFAULT_APIS),
            routing=rs.model_routing(m.obj("routing")),
            fallbacks=rs.fallbacks(m),
            retry=rs.retry(m.obj("retry")),
            max_output_tokens=m.get("max_output_tokens", lp.p_optional(lp.p_int(1)), None),
            responses=m.get("responses", section_responses.mode, "translate"),
        )
        m.done()
        for alias in (name, *aliases):
            if alias in names and names[alias] != name:
                m.ctx.error(
                    m.line, m.sub("aliases"), f"{alias!r} already names model {names[alias]!r}"
                )
            names[alias] = name
    rs.check_fallbacks(o, out)
    return out


def _apis(node: Node) -> tuple[str, ...]:
    """A non-empty list of the APIs a model serves, kept in the order of ``APIS``."""
    if not isinstance(node.value, list) or not node.value:
        raise lp.Invalid(f"expected a non-empty list of {', '.join(APIS)}")
    values = {lp.p_str(item) for item in node.value}
    bad = sorted(values - set(APIS))
    if bad:
        raise lp.Invalid(f"unknown API {bad[0]!r}; use {', '.join(APIS)}")
    return tuple(api for api in APIS if api in values)


def _upstream_refs(m: Obj, node: Node | None, upstreams: dict[str, Upstream]) -> tuple[str, ...]:
    if node is None:
        m.ctx.error(m.line, m.sub("upstreams"), "is required: name at least one upstream")
        return ()
    if not isinstance(node.value, list) or not node.value:
        m.ctx.error(node.line, m.sub("upstreams"), "expected a non-empty list of upstream names")
        return ()
    refs = []
    for i, item in enumerate(node.value):
        if item.value not in upstreams:
            m.ctx.error(
                item.line,
                f"{m.sub('upstreams')}[{i}]",
                f"unknown upstream {item.value!r}; define it under upstreams",
            )
        else:
            refs.append(str(item.value))
    return tuple(refs)


def _prefix(node: Node) -> str:
    text = lp.p_nonempty(node)
    if not text.startswith("/") or not text.endswith("/"):
        raise lp.Invalid(f"{text!r} must start and end with '/', e.g. /api/files/")
    # request paths are normalized before routing: another prefix could never match
    if "%" in text or not paths.is_normal(text):
        raise lp.Invalid(f"{text!r} must be a normal path: no '%', '.', '..' or '//' segments")
    return str(text)


def _routes(top: Obj, upstreams: dict[str, Upstream]) -> tuple[Route, ...]:
    out = []
    for r in _each(top, "routes"):
        upstream = r.need("upstream", lp.p_nonempty, "")
        if upstream and upstream not in upstreams:
            r.ctx.error(
                r.items["upstream"].line,
                r.sub("upstream"),
                f"unknown upstream {upstream!r}; define it under upstreams",
            )
        out.append(
            Route(
                prefix=r.need("prefix", _prefix, "/"),
                upstream=upstream,
                auth=cast(Any, r.get("auth", lp.p_enum("none", "key", "optional"), "key")),
                ip_rpm=r.get("ip_rpm", lp.p_optional(lp.p_int(1)), None),
                max_body_bytes=r.get("max_body_bytes", lp.p_optional(lp.p_int(1)), None),
            )
        )
        r.done()
    return tuple(out)


def _mock_worker(o: Obj) -> MockWorker:
    out = MockWorker(
        host=o.get("host", lp.p_nonempty, "127.0.0.1"),
        port=o.get("port", lp.p_int(0, 65535), 8001),
        token_delay=o.get("token_delay", lp.p_float(0.0), 0.0),
    )
    o.done()
    return out
