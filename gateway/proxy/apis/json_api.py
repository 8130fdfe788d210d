"""The JSON APIs beside chat — legacy completions, embeddings, rerank and score, image
generation — as one recipe over the governed steps of ``proxy.govern``, each API a table row
(``JsonApi``): its permission, its worker path, its body check, what it reserves and what it
counts.

The recipe: the key from the head → the body → its check (400), and ``vision``/``audio`` for
media in it (403, as chat) → the model the key may use (403/404) and that serves the API (400
``model_not_supported``) → the admission (429) → the worker (attempted as chat's are:
``proxy.attempts``) → the answer, with the public model name → settlement: the worker's usage,
else (every API but images, counted in images) the prompt reserved, marked estimated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.dialects import inputs
from gateway.dialects.openai import OpenAIRelay, wants_usage
from gateway.errors import BadRequest, GatewayError, UpstreamUnavailable, shown
from gateway.proxy import govern
from gateway.proxy.apis import answers, forward
from gateway.proxy.apis.answers import Counted
from gateway.proxy.bodies import dump_upstream, upstream_error
from gateway.proxy.exchange import EXCHANGE, Exchange
from gateway.routing.router import ModelRoute
from gateway.runtime import Runtime

NOTHING = {"prompt_tokens": 0, "completion_tokens": 0}  # an answer that counts no tokens


Reserve = Callable[[dict[str, Any], ModelRoute, int], tuple[int, int]]


def estimated_input(body: dict[str, Any], route: ModelRoute, estimate: int) -> tuple[int, int]:
    """Embeddings, rerank, score: the input alone (nothing is generated)."""
    return estimate, 0


def paired_input(body: dict[str, Any], route: ModelRoute, estimate: int) -> tuple[int, int]:
    """Rerank and score: the body, and one side read again for every pair the worker scores."""
    chars, pairs = inputs.scored_pairs(body)
    return estimate + chars // 4 * pairs, 0


OPENAI_COMPLETIONS_DEFAULT = (
    16  # legacy completions' max_tokens when none is sent (OpenAI's, vLLM's)
)


def completion_limit(body: dict[str, Any], route: ModelRoute) -> int:
    """The ``max_tokens`` a completions request is sent with, and reserved for: its own, else
    the API's default of 16 when absent, else (``null``: no limit named) the model's
    ``default_max_tokens``; at most the model's ``max_output_tokens``. A worker is never left
    to its own default (vLLM: the rest of the context for ``null``; llama.cpp: no end), which
    ``ignore_eos`` or ``min_tokens`` would make it generate in full, unreserved."""
    if "max_tokens" not in body:
        limit = min(OPENAI_COMPLETIONS_DEFAULT, route.default_max_tokens)
    else:
        limit = body["max_tokens"] or route.default_max_tokens
    ceiling = route.max_output_tokens
    return min(limit, ceiling) if ceiling is not None else limit


def generated(body: dict[str, Any], route: ModelRoute, estimate: int) -> tuple[int, int]:
    """Completions: the prompt, and the most every completion asked for may generate."""
    return estimate, completion_limit(body, route) * inputs.completions_wanted(body)


def no_tokens(body: dict[str, Any], route: ModelRoute, estimate: int) -> tuple[int, int]:
    """Image generation: counted in images, not tokens."""
    return 0, 0


def _wanted(body: dict[str, Any]) -> int:
    """The images a request asks for (``n``, 1 by default)."""
    n = body.get("n")
    return n if type(n) is int and n > 0 else 1


def counted_images(raw: bytes) -> Counted:
    try:
        return answers.images(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return Counted()


@dataclass(frozen=True, slots=True)
class JsonApi:
    """One JSON API: what ``models.<name>.apis`` calls it, and how it is governed."""

    api: str  # completions | embeddings | rerank | images
    permission: str
    path: str  # on the worker (under its root; a /v1 base URL is understood)
    check: Callable[[object], dict[str, Any]]
    reserve: Reserve  # the (prompt, completion) tokens an admission reserves
    counts: Callable[[bytes], Counted]
    estimates: bool  # without reported usage, charge the prompt reserved (else: no tokens)
    streams: bool = False


COMPLETIONS = JsonApi(
    "completions",
    "chat",
    "/v1/completions",
    inputs.check_completions,
    generated,
    answers.tokens,
    True,
    True,
)
EMBEDDINGS = JsonApi(
    "embeddings",
    "embeddings",
    "/v1/embeddings",
    inputs.check_embeddings,
    estimated_input,
    answers.tokens,
    True,
)
RERANK = JsonApi(
    "rerank",
    "embeddings",
    "/v1/rerank",
    inputs.check_rerank,
    paired_input,
    answers.tokens,
    True,
)
RERANK_V2 = JsonApi(
    "rerank",
    "embeddings",
    "/v2/rerank",
    inputs.check_rerank,
    paired_input,
    answers.tokens,
    True,
)
SCORE = JsonApi(
    "rerank", "embeddings", "/v1/score", inputs.check_score, paired_input, answers.tokens, True
)
IMAGES = JsonApi(
    "images",
    "images",
    "/v1/images/generations",
    inputs.check_images,
    no_tokens,
    counted_images,
    False,
)


def require(route: ModelRoute, api: str, asked: str) -> None:
    """400 ``model_not_supported`` when the model does not serve ``api``."""
    if api not in route.apis:
        raise BadRequest(
            f"The model '{shown(asked)}' does not serve the {api} API (it serves "
            f"{', '.join(route.apis)}); use a model that does: GET /v1/models lists each "
            "model's apis.",
            code="model_not_supported",
            param="model",
        )


def answered_as(rt: Runtime, ex: Exchange, route: ModelRoute, asked: str) -> tuple[str, str]:
    """The worker's name of the model that answered, and the name its answer carries: the one
    the client asked for, or a fallback's own name (``ex.model``) when a fallback answered."""
    if ex.model == route.name:
        return route.upstream_model, asked
    used = rt.router.resolve(ex.model or route.name) or route
    return used.upstream_model, used.name


def parse(raw: bytes) -> object:
    """The body as JSON, or the 400 saying why not."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not raw.strip():
            raise BadRequest("The request body is empty; send a JSON object.") from None
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None


def refused(ex: Exchange, api: str, asked: str, status: int, raw: bytes) -> web.Response:
    """A worker's own 4xx in the client's form; its 404 (no such path or model there) is the
    model not serving the API, never a 404 the client would take for its own mistake."""
    if status == 404:
        ex.upstream_status = status
        raise BadRequest(
            f"The model '{shown(asked)}' does not serve the {api} API: its worker answered 404 "
            "(the operator's models.<name>.apis may be wrong).",
            code="model_not_supported",
            param="model",
        )
    return upstream_error(ex, status, raw)


class JsonHandler:
    """``POST`` on every alias of one JSON API."""

    def __init__(self, runtime: Runtime, api: JsonApi) -> None:
        self.rt = runtime
        self.api = api
        self.post = (api.api, forward.poster(runtime, api.path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rt, api, ex = self.rt, self.api, request[EXCHANGE]
        ex.anthropic, ex.api = False, api.api
        record = await govern.caller(rt, request, api.permission)
        raw = await govern.body(rt, request)
        body = api.check(parse(raw))
        # multimodal embeddings, rerank, score: as chat's (403 naming vision or audio)
        rt.keys.check_permissions(record, inputs.media_needed(raw, body))
        asked = str(body["model"])
        route = govern.model(rt, ex, record, asked)
        require(route, api.api, asked)
        payload = self._outbound(ex, body, route)
        prompt, completion = api.reserve(body, route, len(raw) // 4 if api.estimates else 0)
        ex.prompt_estimate = prompt  # what is settled (marked estimated) if no usage comes
        images = _wanted(body) if api.api == "images" else 0  # priced per image
        ticket = await govern.admit(rt, ex, record, route, prompt, completion, images)
        try:
            early = forward.early_head(request, ex) if ex.stream else None
            relay = OpenAIRelay(ex.client_usage)
            head = (early, relay.error) if early is not None else None
            opened = await forward.open_answer(rt, request, ex, route, self.post, payload, head)
            if opened is None:  # failed after an early head: an error event said so
                assert early is not None
                return early.client
            response, answer = opened.answer, opened.body
            worker, public = answered_as(rt, ex, route, asked)
            if ex.stream and response.status == 200:
                renamed = forward.renaming(answers.renamer(worker, public), public)
                return await forward.relay_stream(rt, request, ex, opened, relay, renamed, early)
            if not ex.stream:
                opened.release()
            if response.status != 200:
                return refused(ex, api.api, asked, response.status, answer)
            return self._answer(ex, (worker, public), answer)
        except GatewayError:
            ex.error = True
            raise
        finally:
            govern.settle(rt, ex, ticket, route)

    def _outbound(self, ex: Exchange, body: dict[str, Any], route: ModelRoute) -> bytes:
        """The worker's request: the model mapped to its name there; a stream always asks for
        the usage (dropped again unless the client asked for it too)."""
        if body.get("stream") is True:
            if not self.api.streams:
                raise BadRequest(
                    f"'stream' is not supported on the {self.api.api} API through the gateway; "
                    "send stream: false.",
                    param="stream",
                )
            ex.stream, ex.client_usage = True, wants_usage(body)
            options = body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        body["model"] = route.upstream_model
        if self.api.api == "completions":
            body["max_tokens"] = completion_limit(body, route)
        region, agent = body.get("region"), body.get("agent_id")
        ex.region = region if isinstance(region, str) and region else None
        ex.agent_id = agent if isinstance(agent, str) and agent else None
        return dump_upstream(body)

    def _answer(self, ex: Exchange, names: tuple[str, str], raw: bytes) -> web.Response:
        if raw.lstrip()[:1] != b"{":  # not parsed whole (it may be large): a JSON object at least
            raise UpstreamUnavailable(f"Upstream '{ex.upstream}' sent an answer that is not JSON.")
        counted = self.api.counts(raw)
        ex.usage = counted.usage()
        if ex.usage is None:
            if self.api.estimates:
                ex.completion_chunks = len(raw) // 4 if self.api.streams else 0
            else:
                ex.usage = NOTHING
        ex.images = counted.images
        worker, public = names
        raw = answers.rename(raw, answers.renamer(worker, public), public, True)
        return web.Response(body=raw, content_type="application/json", headers=ex.rate_headers)
