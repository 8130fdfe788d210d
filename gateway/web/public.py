"""The public listener's routes: every chat and models alias, and (added by later stages) the key
and usage APIs and pass-through routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.dialects import anthropic
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
        listed = runtime.router.models()
        if "anthropic-version" in request.headers:
            return json_response(anthropic.models_list([(m.name, m.created) for m in listed]))
        return json_response(
            {
                "object": "list",
                "data": [
                    {"id": m.name, "object": "model", "created": m.created, "owned_by": m.owned_by}
                    for m in listed
                ],
            }
        )

    return models


def add_routes(app: web.Application, runtime: Runtime) -> None:
    chat = ChatHandler(runtime)
    models = models_handler(runtime)
    for path in CHAT_PATHS:
        app.router.add_post(path, chat.handle)
    for path in MODELS_PATHS:
        app.router.add_get(path, models, allow_head=False)
    keys_api.add_routes(app, runtime)
