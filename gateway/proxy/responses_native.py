"""Responses in native mode (``models.<name>.responses: native``): the request forwarded to the
worker's own ``/v1/responses``, governed as translate mode is (admitted with the same
reservation, settled to the ``usage`` of the worker's response), its answer with the public
model name, and its stream relayed without buffering (``dialects.responses_native``).

The gateway keeps the conversation state itself: a ``previous_response_id`` is expanded into the
stored input and output before the worker sees the request, and the worker is asked not to store
(``store: false``); the worker's response is kept for the owner under the worker's own id.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.dialects import responses
from gateway.dialects.responses_native import NativeRelay, chat_usage
from gateway.errors import GatewayError, UpstreamUnavailable
from gateway.proxy import govern
from gateway.proxy.apis import answers, forward
from gateway.proxy.apis.json_api import answered_as, refused
from gateway.proxy.attempts import Held
from gateway.proxy.bodies import dump_upstream
from gateway.proxy.exchange import Exchange
from gateway.proxy.queued import EarlyHead
from gateway.proxy.wire import Response
from gateway.records import KeyRecord
from gateway.routing.router import ModelRoute
from gateway.runtime import Runtime

Keep = Callable[[str, bytes], Awaitable[None]]  # a finished response: its id, its JSON
Opened = Held[Response]
PATH = "/v1/responses"


def payload(
    body: dict[str, Any], history: list[Any], route: ModelRoute, ceiling: int | None
) -> bytes:
    """The worker's request: the model mapped, the stored conversation in ``input``,
    ``max_output_tokens`` lowered to the model's ``ceiling``, and, when the body names none,
    the one it reserved (``default_max_tokens``): a worker's own default may be its whole
    context."""
    out = dict(body)
    out["model"] = route.upstream_model
    if responses.max_output_tokens(body) is None:
        default = route.default_max_tokens
        out["max_output_tokens"] = default if ceiling is None else min(default, ceiling)
    elif ceiling is not None and (out.get("max_output_tokens") or 0) > ceiling:
        out["max_output_tokens"] = ceiling
    if history:
        out["input"] = [*history, *responses.items_of(body)]
    out.pop("previous_response_id", None)
    out["store"] = False
    return dump_upstream(out)


async def create(
    rt: Runtime,
    request: web.Request,
    ex: Exchange,
    who: tuple[KeyRecord, ModelRoute],
    body: dict[str, Any],
    history: list[Any],
    estimate: int,
    keep: Keep,
) -> web.StreamResponse:
    record, route = who
    model = rt.config.models.get(route.name)
    ceiling = model.max_output_tokens if model is not None else None
    sent = payload(body, history, route, ceiling)
    ex.stream = body.get("stream") is True
    region, agent = body.get("region"), body.get("agent_id")
    ex.region = region if isinstance(region, str) and region else None
    ex.agent_id = agent if isinstance(agent, str) and agent else None
    ex.prompt_estimate = estimate
    limit = responses.max_output_tokens(body) or route.default_max_tokens
    limit = min(limit, ceiling) if ceiling is not None else limit
    ticket = await govern.admit(rt, ex, record, route, estimate, limit)
    try:
        post = ("responses", forward.poster(rt, PATH))
        early = forward.early_head(request, ex) if ex.stream else None
        head = (early, NativeRelay().error) if early is not None else None
        opened = await forward.open_answer(rt, request, ex, route, post, sent, head)
        if opened is None:  # failed after an early head: an error event said so
            assert early is not None
            return early.client
        response, first = opened.answer, opened.body
        asked = str(body["model"])
        worker, public = answered_as(rt, ex, route, asked)
        if ex.stream and response.status == 200:
            ending = (answers.renamer(worker, public), keep)
            return await _stream(rt, request, ex, opened, (public, ending), early)
        if not ex.stream:
            opened.release()
        if response.status != 200:
            return refused(ex, "responses", asked, response.status, first)
        return await _whole(ex, public, first, keep)
    except GatewayError:
        ex.error = True
        raise
    finally:
        govern.settle(rt, ex, ticket, route)


async def _whole(ex: Exchange, public: str, raw: bytes, keep: Keep) -> web.Response:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        raise UpstreamUnavailable(f"Upstream '{ex.upstream}' sent an answer that is not JSON.")
    ex.usage = chat_usage(answer.get("usage"))
    if ex.usage is None:
        ex.completion_chunks = len(raw) // 4
    answer["model"] = public
    try:
        body = orjson.dumps(answer)
    except (orjson.JSONEncodeError, RecursionError):  # the worker's answer, nested too deep
        raise UpstreamUnavailable(
            f"Upstream '{ex.upstream}' sent an answer nested too deeply to pass on."
        ) from None
    await _keep(keep, answer)
    return web.Response(body=body, content_type="application/json", headers=ex.rate_headers)


async def _keep(keep: Keep, response: dict[str, Any]) -> None:
    """Store the worker's response (under the worker's id) when it can be written."""
    response_id = response.get("id")
    if isinstance(response_id, str) and response_id:
        try:
            await keep(response_id, orjson.dumps(response))
        except (orjson.JSONEncodeError, RecursionError):
            pass  # nested past what can be written: answered, not kept


class _EventStream(web.StreamResponse):
    _send_headers_immediately = False  # the head goes with the first events


Ending = tuple[str, tuple[re.Pattern[bytes] | None, Keep]]  # public name, rename, keep


async def _stream(
    rt: Runtime,
    request: web.Request,
    ex: Exchange,
    opened: Opened,
    ending: Ending,
    early: EarlyHead | None = None,
) -> web.StreamResponse:
    relay = NativeRelay()
    client = await forward.relay_with(
        rt,
        request,
        ex,
        opened,
        relay,
        lambda client: _pump(rt, ex, client, relay, opened, ending),
        early,
    )
    if relay.usage is None and relay.done and not ex.error:
        ex.estimated = True
    return client


async def _pump(
    rt: Runtime,
    ex: Exchange,
    client: web.StreamResponse,
    relay: NativeRelay,
    opened: Opened,
    ending: Ending,
) -> None:
    """Relay until the worker's stream ends; the response is kept before its terminal event
    goes out. A failure after the head is an ``error`` event."""
    kept = False

    async def deliver(events: list[bytes]) -> None:
        nonlocal kept
        kept = await _deliver(client, relay, events, ending, kept)

    await forward.pump(rt, ex, client, relay, opened, deliver)


async def _deliver(
    client: web.StreamResponse, relay: NativeRelay, events: list[bytes], ending: Ending, kept: bool
) -> bool:
    """Write a batch of events with the public model name; before the terminal event, keep
    the response (once). Whether it is kept."""
    public, (pattern, keep) = ending
    head, tail = relay.relay(events)
    await client.write(answers.rename(head, pattern, public, False))
    if tail:
        if relay.final is not None and not kept:
            kept = True
            relay.final["model"] = public
            await _keep(keep, relay.final)
        await client.write(answers.rename(tail, pattern, public, False))
    return kept
