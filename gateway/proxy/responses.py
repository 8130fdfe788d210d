"""The OpenAI Responses API: ``POST /v1/responses`` (and its aliases) in both modes of a model,
and ``GET``/``DELETE /v1/responses/{id}`` over the stored responses (with ``input_items`` and
``cancel``: ``proxy.responses_items``).

The front is governed as every model API is (``proxy.govern``): the key from the head with the
``chat`` permission, the body, its check (400), the model the key may use and that serves
``responses`` (400 ``model_not_supported``), the stored conversation a ``previous_response_id``
names (404 for an unknown id, another owner's included), ``vision`` when an image is in the
input. Then, by ``models.<name>.responses``:

- ``translate`` (default): the request becomes chat (``dialects.responses``) and the chat recipe
  (``ChatHandler.serve``) admits, routes, answers and settles it, through a per-request
  ``_Turn`` whose seams turn the worker's answer into a ``response`` (``answer``) or its stream
  into Responses events (``new_relay``), and keep the response before the stream's last bytes
  (``event_stream``): a client that continues from it at once finds it stored;
- ``native``: forwarded to the worker's own ``/v1/responses`` (``proxy.responses_native``).

``store`` (default true) keeps the response and the input it answered for the caller's owner for
``responses.ttl_days``; a record over ``responses.max_stored_bytes`` is not kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway.dialects import inputs
from gateway.errors import NotFound, StoreUnavailable, shown
from gateway.proxy import govern, responses_items
from gateway.proxy.apis.json_api import parse, require
from gateway.proxy.exchange import EXCHANGE, Exchange, traced
from gateway.proxy.handler import SSE_HEADERS, ChatHandler
from gateway.routing.router import ModelRoute
from gateway.runtime import Runtime
from gateway.store.base import StoreError
from gateway.store.responses_store import new_id, valid_id
from gateway.web.respond import json_response

if TYPE_CHECKING:  # imported at the first request that uses them (below): idle RSS
    from gateway.dialects.relay import Relay
    from gateway.dialects.responses_answer import Shape
    from gateway.dialects.responses_stream import ResponsesRelay

log = logging.getLogger("gateway.proxy")

PATHS = ("/v1/responses", "/responses", "/api/v1/responses", "/v1/llm/responses")
DROPPED = "x-gateway-dropped-tools"
DAY = 86_400.0


class _Keeper:
    """What stores a finished response (with the input it answered) for its owner, when asked
    to: ``keep``, or ``storing`` and ``failed`` apart (for the stream's end)."""

    __slots__ = ("body", "items", "owner", "rt")

    def __init__(self, rt: Runtime, owner: str, body: dict[str, Any], items: list[Any]) -> None:
        self.rt, self.owner, self.body, self.items = rt, owner, body, items

    def storing(self, response_id: str, response: bytes) -> Awaitable[None] | None:
        """The store's write of the response (its failure a ``StoreError``, for ``failed``),
        or None when it is not to be kept."""
        if self.body.get("store") is False:
            return None
        try:
            record = b"".join(
                (b'{"response":', response, b',"input":', orjson.dumps(self.items), b"}")
            )
        except (orjson.JSONEncodeError, RecursionError):
            return None  # nested past what can be written: answered, not kept
        settings = self.rt.config.responses
        if len(record) > settings.max_stored_bytes:
            log.info("response %s not stored: %d bytes", response_id, len(record))
            return None
        return self.rt.responses.put(self.owner, response_id, record, settings.ttl_days * DAY)

    def failed(self) -> None:
        """The answer is given already; only its continuation is lost."""
        self.rt.keys.on_store_error("responses")

    async def keep(self, response_id: str, response: bytes) -> None:
        storing = self.storing(response_id, response)
        if storing is not None:
            try:
                await storing
            except StoreError:
                self.failed()


class _KeptStream(web.StreamResponse):
    """The client's event stream; before its end goes out, the response is stored (``turn``'s
    ``storing``), so nothing the client reads comes before the response is kept. Once: aiohttp
    calls ``write_eof`` again when the handler returns, which ends nothing more."""

    _send_headers_immediately = False  # the head goes with the first events, as for chat
    _turn: _Turn | None = None  # (set once made: no __init__ of its own, a step less)

    async def write_eof(self, data: bytes = b"") -> None:
        turn, self._turn = self._turn, None
        if turn is not None and (storing := turn.storing()) is not None:
            try:  # (awaited here, not in a coroutine of its own: a step less in the await
                await storing  # chain while Redis answers)
            except StoreError:
                turn.keeper.failed()
        await super().write_eof(data)


class _Turn(ChatHandler):
    """The chat recipe for one translated Responses request: its seams answer in Responses."""

    def __init__(self, runtime: Runtime, shape: Shape, keeper: _Keeper, headers: dict[str, str]):
        self.rt = runtime  # (ChatHandler's __init__, written out: one per request)
        self.shape, self.keeper, self.headers = shape, keeper, headers
        self.relay: ResponsesRelay | None = None
        self.final: bytes | None = None  # a whole answer, encoded

    def new_relay(self, ex: Exchange, route: ModelRoute) -> Relay:
        # (the Responses dialect is imported at its first use: a gateway whose clients never
        # call /v1/responses does not keep its translators resident, ~0.3 MB idle RSS)
        from gateway.dialects.responses_stream import ResponsesRelay

        self.relay = ResponsesRelay(self.shape, ex.prompt_estimate)
        return self.relay

    def answer(
        self, ex: Exchange, answer: dict[str, object], raw: bytes, route: ModelRoute
    ) -> bytes:
        from gateway.dialects.responses_answer import encode_response  # (lazy: see new_relay)

        estimate = (ex.prompt_estimate, ex.completion_chunks)
        self.final = encode_response(answer, self.shape, estimate)[0]
        return self.final

    def event_stream(self) -> web.StreamResponse:
        headers = {**SSE_HEADERS, **self.headers} if self.headers else SSE_HEADERS
        stream = _KeptStream(headers=headers)
        stream._turn = self
        return stream

    def storing(self) -> Awaitable[None] | None:
        """The store's write of the response, if the stream ended well and it is kept."""
        if self.relay is not None and self.relay.final is not None:
            return self.keeper.storing(self.shape.id, self.relay.final)
        return None


class ResponsesHandler:
    """Every Responses route: create on each alias, retrieve and delete by id."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def create(self, request: web.Request) -> web.StreamResponse:
        # (the Responses dialect and the native mode are imported at the first request: a
        # gateway whose clients never call /v1/responses keeps them out of its idle RSS)
        from gateway.dialects import responses
        from gateway.proxy import responses_native

        rt, ex = self.rt, request[EXCHANGE]
        ex.anthropic, ex.api = False, "responses"  # an OpenAI API, whatever headers came
        record = await govern.caller(rt, request, "chat")
        raw = await govern.body(rt, request)
        body = responses.check(parse(raw))
        asked: str = body["model"]
        route = govern.model(rt, ex, record, asked)
        require(route, "responses", asked)
        previous = body.get("previous_response_id")
        history, size = await self._history(record.owner, previous) if previous else ([], 0)
        items = responses.items_of(body)
        if history or inputs.may_carry_media(raw):  # a text request pays a few byte searches
            needed = inputs.media_permissions({"input": [*history, *items]})
            rt.keys.check_permissions(record, needed)  # 403 naming vision or audio
        estimate = (len(raw) + size) // 4
        keeper = _Keeper(rt, record.owner, body, history + items)
        model = rt.config.models.get(route.name)
        if model is not None and model.responses == "native":
            return await responses_native.create(
                rt, request, ex, (record, route), body, history, estimate, keeper.keep
            )
        # translated: served here, not in a coroutine of its own (every level of the await
        # chain is walked again each time the request's task resumes)
        turn, chat = self._turn(body, (history, items), keeper)
        answer = await turn.serve(request, ex, record, route, chat, estimate)
        storing = keeper.storing(turn.shape.id, turn.final) if turn.final is not None else None
        if storing is not None:  # (awaited here, not in keep: a step less in the await chain)
            try:
                await storing
            except StoreError:
                keeper.failed()
        if turn.headers and not answer.prepared:
            answer.headers.update(turn.headers)
        return answer

    def _turn(
        self,
        body: dict[str, Any],
        conversation: tuple[list[Any], list[Any]],  # the stored history, the body's own items
        keeper: _Keeper,
    ) -> tuple[_Turn, dict[str, Any]]:
        """The translated request's turn (its response's shape) and its chat body."""
        from gateway.dialects import responses  # (lazy: see create)
        from gateway.dialects.responses_answer import shape

        rt, (history, items) = self.rt, conversation
        plan = responses.translate(body, history, rt.config.responses.hosted_tools, items)
        # (a max_tokens past the model's ceiling is lowered by the chat recipe, ``outbound``,
        # which compares whole numbers only: a forwarded one of another type is its 400)
        headers = {DROPPED: ", ".join(plan.dropped)} if plan.dropped else {}
        made = shape(body, new_id(), int(rt.clock.time()), body["model"], plan.names)
        return _Turn(rt, made, keeper, headers), plan.chat

    async def _history(self, owner: str, previous: object) -> tuple[list[Any], int]:
        """The conversation a ``previous_response_id`` continues (its input, then its output)
        and the stored record's size; 404 when the owner has no such response."""
        if previous is None:
            return [], 0
        raw = await self._stored(owner, str(previous), "previous_response_id")
        response, items = _record(raw)
        return [*items, *response["output"]], len(raw)

    async def _stored(self, owner: str, response_id: str, param: str | None = None) -> bytes:
        found = None
        if valid_id(response_id):
            try:
                found = await self.rt.responses.get(owner, response_id)
            except StoreError:
                self.rt.keys.on_store_error("responses")
                raise StoreUnavailable("The response store is unavailable; try again.") from None
        if found is None:
            raise NotFound(
                f"No response with id '{shown(response_id)}' is stored for this key's owner "
                "(responses are kept when sent with store: true, for responses.ttl_days).",
                param=param,
            )
        return found

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/responses/{id}``: the stored response."""
        ex = request[EXCHANGE]
        ex.anthropic, ex.api = False, "responses"  # an OpenAI API, whatever headers came
        record = await govern.caller(self.rt, request, "chat")
        raw = await self._stored(record.owner, request.match_info["id"])
        return json_response(_record(raw)[0])

    async def input_items(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/responses/{id}/input_items``: the input the stored response answered."""
        ex = request[EXCHANGE]
        ex.anthropic, ex.api = False, "responses"  # an OpenAI API, whatever headers came
        record = await govern.caller(self.rt, request, "chat")
        response_id = request.match_info["id"]
        items = _record(await self._stored(record.owner, response_id))[1]
        return json_response(responses_items.page(response_id, items, request.query))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/responses/{id}/cancel``: a 400 for a stored response (none runs in the
        background), a 404 for an unknown one."""
        ex = request[EXCHANGE]
        ex.anthropic, ex.api = False, "responses"  # an OpenAI API, whatever headers came
        record = await govern.caller(self.rt, request, "chat")
        response_id = request.match_info["id"]
        await self._stored(record.owner, response_id)
        raise responses_items.not_cancellable(response_id)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /v1/responses/{id}``: the stored response removed."""
        ex = request[EXCHANGE]
        ex.anthropic, ex.api = False, "responses"  # an OpenAI API, whatever headers came
        record = await govern.caller(self.rt, request, "chat")
        response_id = request.match_info["id"]
        await self._stored(record.owner, response_id)
        try:
            await self.rt.responses.delete(record.owner, response_id)
        except StoreError:
            self.rt.keys.on_store_error("responses")
            raise StoreUnavailable("The response store is unavailable; try again.") from None
        return json_response({"id": response_id, "object": "response", "deleted": True})


def _record(raw: bytes) -> tuple[dict[str, Any], list[Any]]:
    """A stored record's response and the input it answered (a record this version cannot
    read is a response no longer there)."""
    try:
        record = orjson.loads(raw)
        response, items = record["response"], record["input"]
        output = response.get("output") if isinstance(response, dict) else None
        if isinstance(output, list) and isinstance(items, list):
            return response, items
    except (orjson.JSONDecodeError, TypeError, KeyError):
        pass
    raise NotFound("The stored response can no longer be read; create it again.")


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """``POST`` on every alias; ``GET`` and ``DELETE`` of ``<alias>/{id}``; ``GET`` of its
    ``input_items`` and ``POST`` of its ``cancel`` (``proxy.responses_items``)."""
    handler = ResponsesHandler(runtime)
    for path in PATHS:
        app.router.add_post(path, traced(runtime.tracer, handler.create))
        app.router.add_get(path + "/{id}", handler.retrieve, allow_head=False)
        app.router.add_delete(path + "/{id}", handler.delete)
        app.router.add_get(path + "/{id}/input_items", handler.input_items, allow_head=False)
        app.router.add_post(path + "/{id}/cancel", handler.cancel)
