"""What every answered request leaves behind: its metrics and its access-log line.

Called once per request by the edge middleware, after the answer (streams included) ended.
Never a secret, never a body: only the ``Exchange``'s fields.
"""

from __future__ import annotations

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

    def done(self, request: web.Request, ex: Exchange, status: int, duration: float) -> None:
        route = route_of(request)
        dialect = "anthropic" if ex.anthropic else "openai"
        model = ex.model or ""
        m = self.metrics
        m.requests.labels(route, model, str(status), dialect).inc()
        m.duration.labels(route, dialect).observe(duration)
        if ex.refusal is not None:
            m.refusals.labels(ex.refusal).inc()
        if ex.ttft is not None and ex.upstream is not None:
            m.ttft.labels(model, ex.upstream).observe(ex.ttft)
        if ex.prompt_tokens or ex.completion_tokens:
            estimated = "true" if ex.estimated else "false"
            m.tokens.labels(model, "prompt", estimated).inc(ex.prompt_tokens)
            m.tokens.labels(model, "completion", estimated).inc(ex.completion_tokens)
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
