"""What every answered request leaves behind: its metrics, its access-log line, and (refusals
only) an entry in the process's ring of recent refusals that the console shows.

Called once per request by the edge middleware, after the answer (streams included) ended.
Never a secret, never a body: only the ``Exchange``'s fields.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from aiohttp import web

from gateway.logs import AccessLog
from gateway.metrics import Metrics
from gateway.proxy.exchange import Exchange


def route_of(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


RECENT_REFUSALS = 200

# The access line's fields, in their order (docs/operations.md; ``AccessLog.write`` appends
# "time"): each line is a copy of this, filled in.
_LINE: dict[str, object] = dict.fromkeys(
    [
        "request_id",
        "method",
        "route",
        "path",
        "status",
        "duration_ms",
        "ttft_ms",
        "queue_ms",
        "key_id",
        "owner",
        "model",
        "api",
        "upstream",
        "prompt_tokens",
        "completion_tokens",
        "tokens_estimated",
        "stream",
        "client_ip",
        "dialect",
        "agent_id",
        "region",
        "error",
    ]
)

# One refused request: (epoch seconds, reason, status, route, key id, owner, model, client IP,
# request id).
Refused = tuple[float, str, int, str, str | None, str | None, str | None, str | None, str]


class RecentRefusals:
    """The last ``RECENT_REFUSALS`` refusals of this process, newest last: one bounded deque,
    appended to once per refused request (never on an admitted one)."""

    def __init__(self, size: int = RECENT_REFUSALS) -> None:
        self.entries: deque[Refused] = deque(maxlen=size)

    def owners(self) -> set[str]:
        return {entry[5] for entry in self.entries if entry[5]}

    def to_api(self) -> list[dict[str, Any]]:
        """Newest first, as the console's API serves them."""
        return [
            {
                "time": at,
                "reason": reason,
                "status": status,
                "route": route,
                "keyId": key_id,
                "owner": owner,
                "model": model,
                "clientIp": client_ip,
                "requestId": request_id,
            }
            for at, reason, status, route, key_id, owner, model, client_ip, request_id in reversed(
                self.entries
            )
        ]


class Observer:
    def __init__(
        self, metrics: Metrics, access: AccessLog | None, recent: RecentRefusals | None = None
    ) -> None:
        self.metrics = metrics
        self.tally = metrics.tally
        self.access = access
        self.recent = recent.entries if recent is not None else None
        # Labelled children by label values: ``labels()`` costs a lock, a tuple and a ``str`` of
        # every value each time. A child is made when the original call would have made it (a
        # child is a series on /metrics from then on, even at zero).
        self._answered: dict[tuple[str, str, int, str, str], tuple[Any, Any]] = {}
        self._tokens: dict[tuple[str, bool, str], tuple[Any, Any]] = {}
        self._ttft: dict[tuple[str, str], Any] = {}
        self._refused: dict[str, Any] = {}
        # The route label of each route a request matched (routes are registered: bounded; an
        # unmatched request's route is made per request, so it is never kept).
        self._routes: dict[object, str] = {}
        # Imported here: the public routes import the runtime, which imports this module.
        from gateway.web.public import CHAT_PATHS

        self._chat_routes = frozenset(CHAT_PATHS)

    def api_of(self, ex: Exchange, route: str) -> str:
        """The ``api`` label: the API the route serves (one of ``metrics.API_LABELS``; each
        handler of another API names its own before anything can refuse), empty for a route
        that serves none. An exchange starts as chat, so only chat's own routes keep it."""
        api = ex.api
        if api == "chat" and route not in self._chat_routes:
            return ""
        return api

    def done(self, request: web.Request, ex: Exchange, status: int, duration: float) -> None:
        matched = request.match_info.route
        route = self._routes.get(matched)
        if route is None:
            route = route_of(request)
            if route != "unmatched":
                self._routes[matched] = route
        dialect = "anthropic" if ex.anthropic else "openai"
        model = ex.model or ""
        api = self.api_of(ex, route)
        key = (route, model, status, dialect, api)
        answered = self._answered.get(key)
        if answered is None:  # the request counter's child and the duration histogram's
            answered = self._answered[key] = (
                self.metrics.requests.labels(route, model, str(status), dialect, api),
                self.metrics.duration.labels(route, dialect, api),
            )
        tally = self.tally  # added to the metrics in bulk (``gateway.tally``)
        tally.inc(answered[0])
        tally.observe(answered[1], duration)
        refusal = ex.refusal
        if refusal is not None:
            refused = self._refused.get(refusal)
            if refused is None:
                refused = self._refused[refusal] = self.metrics.refusals.labels(refusal)
            tally.inc(refused)
            if self.recent is not None:
                self.recent.append(
                    (
                        time.time(),
                        refusal,
                        status,
                        route,
                        ex.key_id,
                        ex.owner,
                        ex.model,
                        ex.client_ip,
                        ex.request_id,
                    )
                )
        ttft = ex.ttft
        upstream = ex.upstream
        if ttft is not None and upstream is not None:
            first = self._ttft.get((model, upstream))
            if first is None:
                first = self._ttft[(model, upstream)] = self.metrics.ttft.labels(model, upstream)
            tally.observe(first, ttft)
        if ex.prompt_tokens or ex.completion_tokens:
            tokens = self._tokens.get((model, ex.estimated, api))
            if tokens is None:
                estimated = "true" if ex.estimated else "false"
                tokens = self._tokens[(model, ex.estimated, api)] = (
                    self.metrics.tokens.labels(model, "prompt", estimated, api),
                    self.metrics.tokens.labels(model, "completion", estimated, api),
                )
            tally.inc(tokens[0], ex.prompt_tokens)
            tally.inc(tokens[1], ex.completion_tokens)
        if not tally.open:  # nothing else in flight: the counts go in now
            tally.flush()
        if self.access is not None:
            self.access.write(self._line(request, ex, route, status, duration, api))

    @staticmethod
    def _line(
        request: web.Request,
        ex: Exchange,
        route: str,
        status: int,
        duration: float,
        api: str | None = None,
    ) -> dict[str, object]:
        """The access line (docs/operations.md), in this key order; ``AccessLog.write``
        appends "time".
        ``api``: the API the route serves (``api_of``; empty: null); by default the exchange's."""
        ttft = ex.ttft
        line = _LINE.copy()  # (a copy filled in costs less than a dict display of 22 keys)
        line["request_id"] = ex.request_id
        line["method"] = request.method
        line["route"] = route
        line["path"] = request.path
        line["status"] = status
        line["duration_ms"] = round(duration * 1000, 2)
        line["ttft_ms"] = round(ttft * 1000, 2) if ttft is not None else None
        line["queue_ms"] = round(ex.queue_wait * 1000, 2) if ex.queue_wait is not None else None
        line["key_id"] = ex.key_id
        line["owner"] = ex.owner
        line["model"] = ex.model
        line["api"] = (ex.api if api is None else api) or None
        line["upstream"] = ex.upstream
        line["prompt_tokens"] = ex.prompt_tokens
        line["completion_tokens"] = ex.completion_tokens
        line["tokens_estimated"] = ex.estimated
        line["stream"] = ex.stream
        line["client_ip"] = ex.client_ip
        line["dialect"] = "anthropic" if ex.anthropic else "openai"
        line["agent_id"] = ex.agent_id
        line["region"] = ex.region
        line["error"] = ex.refusal or ("upstream" if ex.error else None)
        return line
