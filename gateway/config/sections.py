"""The readers of each configuration section, and the checks that span sections.

Called by ``config.load`` with an ``Obj`` over the file's top mapping; returns a ``Config``
whatever the errors (the loader raises if any were collected).
"""

from __future__ import annotations

import ipaddress
import os

from gateway import paths
from gateway.config import fields as lp
from gateway.config import routing_sections as rs
from gateway.config import (
    section_alerts,
    section_keys,
    section_responses,
    section_scheduling,
    section_tracing,
)
from gateway.config.fields import Ctx, Node, Obj
from gateway.config.schema import (
    APIS,
    Admin,
    Auth,
    Config,
    Listen,
    Log,
    MockWorker,
    Model,
    Network,
    Plan,
    Pricing,
    Route,
    Store,
    Timeouts,
    Tls,
    Upstream,
)

FREE: str = lp.default(Config, "default_plan")  # the one plan when no plans are configured


def build(top: Obj, ctx: Ctx, source: str) -> Config:
    listen = _listen(top.obj("listen"))
    admin = _admin(top.obj("admin"))
    store = _store(top.obj("store"))
    network = _network(top.obj("network"))
    keys = section_keys.keys(top.obj("keys"))
    plans = section_keys.plans(top.obj("plans"))
    default_plan = top.get("default_plan", lp.p_nonempty, FREE)
    auth = _auth(top.obj("auth"))
    upstreams = _upstreams(top.obj("upstreams"))
    models = _models(top.obj("models"), upstreams)
    routes = _routes(top, upstreams)
    log = _log(top.obj("log"))
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
        if default_plan != FREE:
            ctx.error(
                top.items["default_plan"].line,
                "default_plan",
                f"{default_plan!r} is not a plan: with no plans section the only plan is "
                f"{FREE!r}; define it under plans (plans: {{{default_plan}: {{...}}}})",
            )
        plans = {FREE: Plan(FREE)}
        default_plan = FREE
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
        tls=tls,
        **o.settings(
            Listen,
            host=lp.p_nonempty,
            port=lp.p_int(0, 65535),
            workers=lp.p_int(1, 256),
            drain_timeout=lp.p_float(0.0),
        ),
    )
    o.done()
    return out


def _auth(o: Obj) -> Auth:
    out = Auth(**o.settings(Auth, max_failures_per_minute=lp.p_int(1)))
    o.done()
    return out


def _log(o: Obj) -> Log:
    out = Log(
        **o.settings(Log, level=lp.p_enum("debug", "info", "warning", "error"), access=lp.p_bool)
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
        **o.settings(
            Admin, host=lp.p_nonempty, port=lp.p_int(0, 65535), token=lp.p_optional(lp.p_str)
        )
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
        **o.settings(
            Store,
            url=_store_url,
            on_error=lp.p_enum("closed", "open"),
            timeout_ms=lp.p_int(1, 60_000),
            buffer_max=lp.p_int(0),
        )
    )
    o.done()
    return out


def _network(o: Obj) -> Network:
    positive = lp.p_float(0.0, exclusive=True)
    out = Network(
        **o.settings(
            Network,
            trusted_proxies=lp.p_list(lp.p_network, o.ctx, o.sub("trusted_proxies")),
            max_body_bytes=lp.p_int(1),
            header_timeout=positive,
            body_timeout=positive,
            security_headers=lp.p_bool,
            hsts=lp.p_bool,
        )
    )
    o.done()
    return out


def _upstreams(o: Obj) -> dict[str, Upstream]:
    out = {}
    for name, u in o.entries():
        out[name] = Upstream(
            name=name,
            url=u.need("url", lp.p_http_url, "http://invalid"),
            timeouts=_timeouts(u.obj("timeouts")),
            **u.settings(
                Upstream,
                api_key=lp.p_optional(lp.p_str),
                region=lp.p_optional(lp.p_str),
                weight=lp.p_float(0.0, exclusive=True),
                max_concurrency=lp.p_optional(lp.p_int(1)),
                health_path=lp.p_optional(lp.p_str),
            ),
            **rs.upstream_settings(u),
        )
        u.done()
    return out


def _timeouts(o: Obj) -> Timeouts:
    positive = lp.p_float(0.0, exclusive=True)
    out = Timeouts(**o.settings(Timeouts, connect=positive, first_byte=positive, idle=positive))
    o.done()
    return out


def _pricing(o: Obj) -> Pricing:
    price = lp.p_float(0.0)
    out = Pricing(
        **o.settings(
            Pricing,
            input_per_mtok=price,
            output_per_mtok=price,
            per_image=price,
            per_audio_second=price,
            per_request=price,
        )
    )
    o.done()
    return out


def _models(o: Obj, upstreams: dict[str, Upstream]) -> dict[str, Model]:
    out: dict[str, Model] = {}
    names: dict[str, str] = {}
    for name, m in o.entries():
        refs_node = m.node("upstreams")
        refs = _upstream_refs(m, refs_node, upstreams)
        out[name] = model = Model(
            name,
            refs,
            m.get("upstream_model", lp.p_nonempty, name),  # by default the model's own name
            pricing=_pricing(m.obj("pricing")),
            routing=rs.model_routing(m.obj("routing")),
            retry=rs.retry(m.obj("retry")),
            **m.settings(
                Model,
                aliases=lp.p_list(lp.p_name, m.ctx, m.sub("aliases")),
                owned_by=lp.p_nonempty,
                default_max_tokens=lp.p_int(1),
                apis=lp.p_some(APIS, "API"),
                fallbacks=lp.p_list(lp.p_nonempty, m.ctx, m.sub("fallbacks")),
                max_output_tokens=lp.p_optional(lp.p_int(1)),
                responses=section_responses.mode,
            ),
        )
        m.done()
        for alias in (name, *model.aliases):
            if alias in names and names[alias] != name:
                m.ctx.error(
                    m.line, m.sub("aliases"), f"{alias!r} already names model {names[alias]!r}"
                )
            names[alias] = name
    rs.check_fallbacks(o, out)
    return out


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
    for r in top.each("routes"):
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
                **r.settings(
                    Route,
                    auth=lp.p_enum("none", "key", "optional"),
                    ip_rpm=lp.p_optional(lp.p_int(1)),
                    max_body_bytes=lp.p_optional(lp.p_int(1)),
                ),
            )
        )
        r.done()
    return tuple(out)


def _mock_worker(o: Obj) -> MockWorker:
    out = MockWorker(
        **o.settings(
            MockWorker, host=lp.p_nonempty, port=lp.p_int(0, 65535), token_delay=lp.p_float(0.0)
        )
    )
    o.done()
    return out
