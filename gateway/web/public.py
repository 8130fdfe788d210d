"""The public listener's routes: every chat and models alias, and (added by later stages) the key
and usage APIs and pass-through routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.dialects import anthropic, inputs
from gateway.errors import BadRequest
from gateway.proxy import apis, govern, responses
from gateway.proxy.access import authenticate
from gateway.proxy.bodies import parse_json
from gateway.proxy.exchange import EXCHANGE, traced
from gateway.proxy.handler import ChatHandler
from gateway.runtime import Runtime
from gateway.web import keys_api
from gateway.web.respond import json_response

CHAT_PATHS = (
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/llm/chat",
    "/v1/llm/chat/completions",
    "/api/chat/completions",
    "/v1/messages",
    "/api/v1/messages",
)
MODELS_PATHS = ("/v1/models", "/models", "/v1/llm/models", "/api/chat/models", "/api/models")


def models_handler(runtime: Runtime) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def models(request: web.Request) -> web.StreamResponse:
        record = await authenticate(runtime, request)
        listed = [m for m in runtime.router.models() if m.allowed_by(record.models)]
        if request[EXCHANGE].anthropic:  # the edge's: an anthropic-version header
            return json_response(anthropic.models_list([(m.name, m.created) for m in listed]))
        return json_response(
            {
                "object": "list",
                "data": [  # every name a client may send: the model's, then its aliases
                    {
                        "id": name,
                        "object": "model",
                        "created": m.created,
                        "owned_by": m.owned_by,
                        "apis": list(m.apis),
                    }
                    for m in listed
                    for name in (m.name, *m.aliases)
                ],
            }
        )

    return models


def count_tokens_handler(
    runtime: Runtime,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``POST /v1/messages/count_tokens``: the model's own count when one of its workers serves
    ``/tokenize``, else an ESTIMATE (about four characters a token); the
    ``X-Gateway-Token-Count`` header says which (``exact`` or ``estimate``).

    Admitted against the key's and its plan's request limits (rpm, concurrency) like any
    request, reserving no tokens: a worker tokenizes the whole body in a capacity slot. The
    admission is given back when the count is answered (no usage: nothing was generated)."""

    async def count_tokens(request: web.Request) -> web.StreamResponse:
        ex = request[EXCHANGE]  # Anthropic: the edge knows its route
        record = await govern.caller(runtime, request, "chat")  # before any of the body is held
        raw = await govern.body(runtime, request)
        body = parse_json(raw)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise BadRequest("messages: a list of messages is required.", param="messages")
        # the worker tokenizes the image or the audio
        runtime.keys.check_permissions(record, inputs.media_needed(raw, body))
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise BadRequest("'model' is required: name the model to use.", param="model")
        route = govern.model(runtime, ex, record, name)
        ticket = await govern.admit(runtime, ex, record, route, 0)
        try:
            exact = await apis.count_tokens_exact(runtime, route, body, ex.request_id)
        finally:
            runtime.limiter.release(ticket, route.name)
        count = exact if exact is not None else anthropic.estimate_tokens(body)
        answer = json_response({"input_tokens": count}, headers=ex.rate_headers)
        answer.headers["X-Gateway-Token-Count"] = "estimate" if exact is None else "exact"
        return answer

    return count_tokens


async def probe(request: web.Request) -> web.StreamResponse:
    """``HEAD /`` and ``GET /`` (and Claude Code's ``/api/hello``): a 200 without a key, as the
    Anthropic API answers the probes an agent sends before its first request."""
    return web.Response(status=200)


# Answered by ``probe`` unless a configured pass-through route serves the path.
PROBE_PATHS = ("/", "/api/hello")


def add_routes(app: web.Application, runtime: Runtime) -> None:
    chat = ChatHandler(runtime)
    for path in PROBE_PATHS:
        if not any(path.startswith(route.prefix) for route in runtime.config.routes):
            app.router.add_get(path, probe)  # and HEAD
    models = models_handler(runtime)
    for path in CHAT_PATHS:
        app.router.add_post(path, traced(runtime.tracer, chat.handle))
    for path in MODELS_PATHS:
        app.router.add_get(path, models, allow_head=False)
    for path in sorted(p for p in anthropic.MESSAGES_PATHS if p.endswith("/count_tokens")):
        app.router.add_post(path, count_tokens_handler(runtime))
    keys_api.add_routes(app, runtime)
    apis.add_routes(app, runtime)
    responses.add_routes(app, runtime)
    # After the gateway's own routes, which win over a configured prefix such as /api/.
    if runtime.config.routes:
        # (imported only when routes are configured: the app is built once, at start, so a
        # gateway without them never needs it: some tens of kB of idle RSS)
        from gateway.proxy.passthrough import PassThrough

        passthrough = PassThrough(runtime)
        for route in runtime.config.routes:
            app.router.add_route("*", route.prefix + "{tail:.*}", passthrough.handle)
