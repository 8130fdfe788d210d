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
        # Labelled children by label values: ``labels()`` costs a lock, a tuple and a ``str`` of
        # every value each time. A child is made when the original call would have made it (a
        # child is a series on /metrics from then on, even at zero).
        self._answered: dict[tuple[str, str, int, str], tuple[Any, Any]] = {}
        self._tokens: dict[tuple[str, bool], tuple[Any, Any]] = {}
        self._ttft: dict[tuple[str, str], Any] = {}
        self._refused: dict[str, Any] = {}

    def done(self, request: web.Request, ex: Exchange, status: int, duration: float) -> None:
        route = route_of(request)
        dialect = "anthropic" if ex.anthropic else "openai"
        model = ex.model or ""
        key = (route, model, status, dialect)
        answered = self._answered.get(key)
        if answered is None:  # the request counter's child and the duration histogram's
            answered = self._answered[key] = (
                self.metrics.requests.labels(route, model, str(status), dialect),
                self.metrics.duration.labels(route, dialect),
            )
        answered[0].inc()
        answered[1].observe(duration)
        refusal = ex.refusal
        if refusal is not None:
            refused = self._refused.get(refusal)
            if refused is None:
                refused = self._refused[refusal] = self.metrics.refusals.labels(refusal)
            refused.inc()
        ttft = ex.ttft
        upstream = ex.upstream
        if ttft is not None and upstream is not None:
            first = self._ttft.get((model, upstream))
            if first is None:
                first = self._ttft[(model, upstream)] = self.metrics.ttft.labels(model, upstream)
            first.observe(ttft)
        if ex.prompt_tokens or ex.completion_tokens:
            tokens = self._tokens.get((model, ex.estimated))
            if tokens is None:
                estimated = "true" if ex.estimated else "false"
                tokens = self._tokens[(model, ex.estimated)] = (
                    self.metrics.tokens.labels(model, "prompt", estimated),
                    self.metrics.tokens.labels(model, "completion", estimated),
                )
            tokens[0].inc(ex.prompt_tokens)
            tokens[1].inc(ex.completion_tokens)
        if self.access is not None:
            self.access.write(self._line(request, ex, route, status, duration))

    @staticmethod
    def _line(
        request: web.Request, ex: Exchange, route: str, status: int, duration: float
    ) -> dict[str, object]:
        """The access line (SPEC 8), in this key order; ``AccessLog.write`` appends "time"."""
        ttft = ex.ttft
        return {
            "request_id": ex.request_id,
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": status,
            "duration_ms": round(duration * 1000, 2),
            "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
            "key_id": ex.key_id,
            "owner": ex.owner,
            "model": ex.model,
            "api": ex.api,
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
