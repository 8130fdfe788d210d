"""The reader of the ``alerts`` section: webhooks that receive the gateway's alert events.

Kept apart from ``config.sections`` (which calls it) for the module-size rule. A webhook's URL
is kept exactly as written (a receiver may need its trailing slash); its secret may come from
``${VAR}`` and must not be empty: every POST is signed with it.
"""

from __future__ import annotations

from gateway.config import fields as lp
from gateway.config.fields import Node, Obj
from gateway.config.schema import EVENTS, Alerts, Webhook


def read(o: Obj) -> Alerts:
    hooks: list[Webhook] = []
    for item in o.each("webhooks", "a list of webhooks"):
        hook = _webhook(item)
        if hook.url and any((h.url, h.format) == (hook.url, hook.format) for h in hooks):
            o.ctx.error(
                item.line,
                item.path,
                "another webhook has this url and format; merge their events into one",
            )
        hooks.append(hook)
    positive = lp.p_float(0.0, exclusive=True)
    out = Alerts(
        webhooks=tuple(hooks),
        **o.settings(Alerts, timeout=positive, give_up_after=positive, down_after=lp.p_float(0.0)),
    )
    o.done()
    return out


def _webhook(o: Obj) -> Webhook:
    out = Webhook(
        # the URL is not echoed in errors: a Slack-style URL carries its token in the path
        url=o.need("url", lp.p_secret_url, ""),  # "": reported already
        secret=o.need("secret", _secret, ""),
        **o.settings(Webhook, events=lp.p_some(EVENTS, "event"), format=lp.p_enum("json", "slack")),
    )
    o.done()
    return out


def _secret(node: Node) -> str:
    text = lp.p_str(node)
    if not text:
        raise lp.Invalid(
            "must not be empty: every POST is signed with it (X-Gateway-Signature); "
            'e.g. secret: "${ALERT_SECRET}"'
        )
    return text
