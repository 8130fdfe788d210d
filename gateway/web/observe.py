"""What every answered request leaves behind: its metrics and its access-log line.

Called once per request by the edge middleware, after the answer (streams included) ended.
Never a secret, never a body: only the ``Exchange``'s fields.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.logs import AccessLog
from gateway.metrics import Metrics
from gateway.proxy.exchange import Exchange


def route_of(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


class Observer:
    def __init__(self, metrics: Metrics, access: AccessLog | None) -> None:
        self.metrics = metrics
        self.access = access
        # Labelled children by label values: ``labels()`` costs a lock and a tuple each time.
        self._counted: dict[tuple[str, str, int, str], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}
        self._tokens: dict[tuple[str, bool], tuple[Any, Any]] = {}

    def done(self, request: web.Request, ex: Exchange, status: int, duration: float) -> None:
        route = route_of(request)
        dialect = "anthropic" if ex.anthropic else "openai"
        model = ex.model or ""
        m = self.metrics
        key = (route, model, status, dialect)
        counter = self._counted.get(key)
        if counter is None:
            counter = self._counted[key] = m.requests.labels(route, model, str(status), dialect)
        counter.inc()
        timer = self._timed.get((route, dialect))
        if timer is None:
            timer = self._timed[(route, dialect)] = m.duration.labels(route, dialect)
        timer.observe(duration)
        if ex.refusal is not None:
            m.refusals.labels(ex.refusal).inc()
        if ex.ttft is not None and ex.upstream is not None:
            m.ttft.labels(model, ex.upstream).observe(ex.ttft)
        if ex.prompt_tokens or ex.completion_tokens:
            tokens = self._tokens.get((model, ex.estimated))
            if tokens is None:
                estimated = "true" if ex.estimated else "false"
                tokens = self._tokens[(model, ex.estimated)] = (
                    m.tokens.labels(model, "prompt", estimated),
                    m.tokens.labels(model, "completion", estimated),
                )
            tokens[0].inc(ex.prompt_tokens)
            tokens[1].inc(ex.completion_tokens)
        if self.access is not None:
            self.access.write(self._line(request, ex, route, status, duration))

    @staticmethod
    def _line(
        request: web.Request, ex: Exchange, route: str, status: int, duration: float
    ) -> dict[str, object]:
        return {
            "request_id": ex.request_id,
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": status,
            "duration_ms": round(duration * 1000, 2),
            "ttft_ms": round(ex.ttft * 1000, 2) if ex.ttft is not None else None,
            "key_id": ex.key_id,
            "owner": ex.owner,
            "model": ex.model,
            "upstream": ex.upstream,
            "prompt_tokens": ex.prompt_tokens,
            "completion_tokens": ex.completion_tokens,
            "tokens_estimated": ex.estimated,
            "stream": ex.stream,
            "client_ip": ex.client_ip,
            "dialect": "anthropic" if ex.anthropic else "openai",
            "agent_id": ex.agent_id,
            "region": ex.region,
            "error": ex.refusal or ("upstream" if ex.error else None),
        }
