"""Every API a model worker serves beside chat, governed as chat is: the routes of legacy
completions, embeddings, rerank and score (``json_api``), audio transcription and translation and
image edits (``form_api``, multipart streamed through ``multipart``), image generation; exact
token counts through a worker's ``/tokenize`` (``tokens``). What answers count and how the
public model name is put back: ``answers``; the upstream calls and stream relay: ``forward``.

Each route is model-routed, authenticated, allow-listed, limited and metered through the steps
of ``proxy.govern``; aliases of one API are equal.
"""

from __future__ import annotations

from aiohttp import web

from gateway.proxy.apis.form_api import EDITS, TRANSCRIPTIONS, TRANSLATIONS, FormApi, FormHandler
from gateway.proxy.apis.json_api import (
    COMPLETIONS,
    EMBEDDINGS,
    IMAGES,
    RERANK,
    RERANK_V2,
    SCORE,
    JsonApi,
    JsonHandler,
    require,
)
from gateway.proxy.apis.tokens import count_tokens_exact
from gateway.proxy.exchange import traced
from gateway.runtime import Runtime

__all__ = ["ROUTES", "add_routes", "count_tokens_exact", "require"]

ROUTES: tuple[tuple[str, JsonApi | FormApi], ...] = (
    ("/v1/completions", COMPLETIONS),
    ("/completions", COMPLETIONS),
    ("/api/v1/completions", COMPLETIONS),
    ("/v1/embeddings", EMBEDDINGS),
    ("/embeddings", EMBEDDINGS),
    ("/api/embeddings", EMBEDDINGS),
    ("/v1/llm/embeddings", EMBEDDINGS),
    ("/v1/rerank", RERANK),
    ("/rerank", RERANK),
    ("/v2/rerank", RERANK_V2),
    ("/v1/score", SCORE),
    ("/score", SCORE),
    ("/v1/audio/transcriptions", TRANSCRIPTIONS),
    ("/v1/audio/translations", TRANSLATIONS),
    ("/v1/images/generations", IMAGES),
    ("/api/images/generations", IMAGES),
    ("/v1/images/edits", EDITS),
)


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """``POST`` on every route of every API above (one handler per API, shared by aliases)."""
    handlers: dict[int, JsonHandler | FormHandler] = {}
    for path, api in ROUTES:
        handler = handlers.get(id(api))
        if handler is None:
            handler = handlers[id(api)] = (
                JsonHandler(runtime, api) if isinstance(api, JsonApi) else FormHandler(runtime, api)
            )
        app.router.add_post(path, traced(runtime.tracer, handler.handle))
