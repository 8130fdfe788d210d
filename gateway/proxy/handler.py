"""The chat recipe, top to bottom: read the body → detect the dialect → check the request →
resolve the model → translate → pick an upstream → forward or stream → account usage.

Any stage stops the request by raising a ``GatewayError``; ``web.middlewares`` renders it in the
caller's dialect (``Exchange.anthropic``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from gateway.config.schema import Upstream
from gateway.dialects import anthropic, inputs
from gateway.dialects.inputs import MAX_N, whole
from gateway.dialects.openai import (
    OpenAIRelay,
    check_request,
    max_output_tokens,
    usage_of,
    wants_usage,
)
from gateway.dialects.relay import AnthropicRelay, Relay
from gateway.dialects.sse import SSESplitter
from gateway.errors import (
    BadRequest,
    GatewayError,
    UpstreamUnavailable,
)
from gateway.proxy import attempts, govern
from gateway.proxy.apis.json_api import require
from gateway.proxy.bodies import dump_upstream, parse_json, upstream_error
from gateway.proxy.exchange import EXCHANGE, Exchange
from gateway.proxy.queued import EarlyHead
from gateway.proxy.timers import Silence, last_write
from gateway.proxy.upstream import read_chunk
from gateway.proxy.wire import Response
from gateway.records import KeyRecord
from gateway.routing.router import ModelRoute
from gateway.routing.waiting import Tick
from gateway.runtime import Runtime
from gateway.tracing import NO_SPAN

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class _EventStream(web.StreamResponse):
    """A stream answer whose head goes out with its first bytes, in one write (aiohttp sends a
    ``StreamResponse``'s head alone at ``prepare``; its ``Response`` buffers it like this). The
    relay writes at once after ``prepare``, so the head is never held back."""

    _send_headers_immediately = False


@dataclass(slots=True)  # (not frozen: that sets each field by ``object.__setattr__``)
class Outbound:
    """What goes to the upstream for a chat request, decided once."""

    payload: bytes  # OpenAI chat JSON, the model mapped to the upstream's name
    stream: bool
    client_usage: bool  # a stream whose client asked for the usage chunk itself
    limit: int | None  # the OpenAI body's ``max_output_tokens`` as sent on (Anthropic: None)


def outbound(body: dict[str, object], route: ModelRoute, is_anthropic: bool) -> Outbound:
    """The upstream's request: an Anthropic body translated (the translator asks a stream for
    usage itself; its ``max_tokens`` is required), an OpenAI one passed on with its model
    mapped, usage always asked for, and a limit when it names none: what it reserves (the
    model's ``default_max_tokens``), where a worker's own default may be its whole context."""
    if is_anthropic:
        translated = anthropic.to_openai_request(
            body, route.upstream_model, route.max_output_tokens
        )
        return Outbound(dump_upstream(translated), translated.get("stream") is True, True, None)
    stream = body.get("stream") is True
    body["model"] = route.upstream_model
    if route.max_output_tokens is not None:
        _clamp(body, route.max_output_tokens)
    limit = max_output_tokens(body)
    if limit is None:  # held to what is reserved, not the worker's default
        ceiling = route.max_output_tokens
        default = route.default_max_tokens
        limit = body["max_tokens"] = default if ceiling is None else min(default, ceiling)
    client_usage = False
    if stream:
        client_usage = wants_usage(body)
        options = body.get("stream_options")
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return Outbound(dump_upstream(body), stream, client_usage, limit)


def _choices(body: dict[str, object]) -> int:
    """How many answers a request asks for (``n``, 1 by default): a whole number, checked in
    every dialect (a worker reads the ``n`` a translation forwards, "100" as 100)."""
    return whole(body, "n", 1, MAX_N) or 1


def _clamp(body: dict[str, object], ceiling: int) -> None:
    """``max_tokens`` / ``max_completion_tokens`` above the model's ceiling lowered to it."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if type(value) is int and value > ceiling:
            body[name] = ceiling


class ChatHandler:
    """``POST`` on every chat alias."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The front of a chat request, then ``serve``. (One coroutine: every level of a
        request's await chain is walked again each time its task resumes.)"""
        rt, ex = self.rt, request[EXCHANGE]  # (its span: ``exchange.traced``, tracing on)
        record = await govern.caller(rt, request, "chat")
        raw = await govern.body(rt, request)
        try:
            parsed: object = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if parsed is None:
            parse_json(raw)  # raises the precise 400
        body = self.chat_body(request, ex, parsed)
        if needed := inputs.media_needed(raw, body):  # images need vision, audio audio (403)
            rt.keys.check_permissions(record, needed)
        name = str(body["model"])
        route = govern.model(rt, ex, record, name)
        require(route, ex.api, name)  # 400 model_not_supported
        return await self.serve(request, ex, record, route, body, len(raw) // 4)

    async def serve(
        self,
        request: web.Request,
        ex: Exchange,
        record: KeyRecord,
        route: ModelRoute,
        body: dict[str, object],
        estimate: int,
    ) -> web.StreamResponse:
        """The recipe from the model on, for a checked chat ``body`` whose prompt is about
        ``estimate`` tokens: admitted, answered, settled. Another API (Responses) calls it
        after its own front: its caller, body, model and translation into chat."""
        rt = self.rt
        out = outbound(body, route, ex.anthropic)
        ex.stream, ex.client_usage = out.stream, out.client_usage
        ex.region, ex.agent_id = _labels(body)
        ex.prompt_estimate = estimate  # a cheap over-estimate, settled to the real usage
        # (an OpenAI body's limit as ``outbound`` found it, not read again; an Anthropic one's)
        allowance = out.limit or max_output_tokens(body) or route.default_max_tokens
        if route.max_output_tokens is not None:  # what the model's workers generate at most
            allowance = min(allowance, route.max_output_tokens)
        allowance *= _choices(body)  # every choice asked for may be as long
        # Tracing off (``NO_SPAN``): no child span is opened (a ``with`` of the no-op span costs
        # ~2.6k instructions); any other span, a no-op one of an unsampled request too, is.
        span = ex.span
        admitting = govern.admit(rt, ex, record, route, ex.prompt_estimate, allowance)
        if span is NO_SPAN:
            ticket = await admitting
        else:
            with span.child("admission"):
                ticket = await admitting
        try:
            if out.stream:
                return await self._stream(request, ex, route, out.payload)
            return await self._complete(request, ex, route, out.payload)
        except GatewayError:
            ex.error = True
            raise
        finally:
            if span is NO_SPAN:
                govern.settle(rt, ex, ticket, route)
            else:
                with span.child("settlement"):
                    govern.settle(rt, ex, ticket, route)

    def chat_body(self, request: web.Request, ex: Exchange, parsed: object) -> dict[str, object]:
        """The request as a chat body of its dialect (the edge's, from the route and header,
        refined here once by the body), checked; an API that is not chat (Responses) overrides
        this to translate its body into OpenAI chat."""
        ex.anthropic = ex.anthropic or anthropic.by_body(parsed)
        return self._check_anthropic(parsed) if ex.anthropic else check_request(parsed)

    def new_relay(self, ex: Exchange, route: ModelRoute) -> Relay:
        """What turns the worker's OpenAI stream into the client's events."""
        if ex.anthropic:
            return AnthropicRelay(route.name, input_tokens=ex.prompt_estimate)
        return OpenAIRelay(ex.client_usage)

    def event_stream(self) -> web.StreamResponse:
        """The client's (unprepared) event stream: Responses keeps the answer before its end."""
        return _EventStream(headers=SSE_HEADERS)

    def answer(
        self, ex: Exchange, answer: dict[str, object], raw: bytes, route: ModelRoute
    ) -> bytes:
        """A whole answer (the worker's OpenAI JSON, parsed and raw) as the client's bytes."""
        if ex.anthropic:
            return orjson.dumps(anthropic.to_anthropic_response(answer, route.name))
        return raw

    @staticmethod
    def _check_anthropic(parsed: object) -> dict[str, object]:
        if not isinstance(parsed, dict):
            raise BadRequest("The request body must be a JSON object.")
        if not isinstance(parsed.get("model"), str) or not parsed["model"]:
            raise BadRequest("'model' is required: name the model to use.", param="model")
        messages = parsed.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest(
                "messages: required; send a non-empty list of messages.", param="messages"
            )
        return parsed

    def _open(
        self,
        request: web.Request,
        ex: Exchange,
        route: ModelRoute,
        payload: bytes,
        tick: Tick | None = None,
    ) -> Awaitable[attempts.Held[Response]]:
        """An answering upstream, its response and the whole body (a stream: its first chunk).

        A failure before any byte reached the client is retried as the model's ``retry`` says:
        on other upstreams, then on its ``fallbacks`` (``routing.chain``), within the budget.
        """
        rt = self.rt  # one way for every API (``proxy.attempts``); chat's try: a chat POST
        chain = attempts.new_chain(rt, request, ex, route, payload)
        attempt = attempts.json_attempt(rt, request, ex, rt.client.post)
        return attempts.open_with(rt, ex, chain, attempt, tick=tick)  # awaited by the caller

    def _failed(self, upstream: Upstream) -> None:
        self.rt.balancer.failed(upstream)
        self.rt.metrics.upstream_failures.labels(upstream.name).inc()

    async def _complete(
        self, request: web.Request, ex: Exchange, route: ModelRoute, payload: bytes
    ) -> web.StreamResponse:
        held = await self._open(request, ex, route, payload)
        held.release()  # the whole body is read: the upstream is given back at once
        upstream, response, raw = held.upstream, held.answer, held.body
        if response.status != 200:
            return upstream_error(ex, response.status, raw)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable(
                f"Upstream '{upstream.name}' sent an answer that is not JSON."
            ) from None
        ex.usage = usage_of(answer)
        if ex.usage is None:
            ex.completion_chunks = _answer_chars(answer) // 4
        try:
            raw = self.answer(ex, answer, raw, route)
        except (orjson.JSONEncodeError, RecursionError):  # the worker's answer, nested too deep
            raise UpstreamUnavailable(
                f"Upstream '{upstream.name}' sent an answer nested too deeply to pass on."
            ) from None
        return web.Response(body=raw, content_type="application/json", headers=ex.rate_headers)

    async def _stream(
        self, request: web.Request, ex: Exchange, route: ModelRoute, payload: bytes
    ) -> web.StreamResponse:
        client = self.event_stream()
        early = EarlyHead(request, client, ex.rate_headers)  # sent if the request must wait
        opening = self._open(request, ex, route, payload, early.tick)

        def error(err: GatewayError) -> bytes:
            return self.new_relay(ex, route).error(err)

        if (opened := await early.opening(ex, error, opening)) is None:
            return client  # failed after the head went out: an error event said so
        upstream, response, chunk = opened.upstream, opened.answer, opened.body
        if response.status != 200:  # an error answer to a stream request: read whole, bounded
            # (a refusal that stalls or breaks off after the early head: an error event too)
            raw = await early.opening(ex, error, attempts.refusal_of(opened))
            if raw is None:
                return client
            if early.sent:
                await early.refused(ex, error, response.status, raw)
                return client
            return upstream_error(ex, response.status, raw)
        relay = self.new_relay(ex, route)
        if ex.rate_headers and not early.sent:
            client.headers.update(ex.rate_headers)
        self.rt.metrics.active_streams.inc()
        task = asyncio.current_task()
        if task is not None:
            self.rt.streams.add(task)
        try:
            await client.prepare(request)
            await self._relay(ex, client, relay, response, upstream, chunk)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client left; what was produced so far is still charged
        except asyncio.CancelledError:
            if self.rt.draining:  # the drain time is over: say so before the connection goes
                await _last_words(client, relay)
            raise
        finally:
            self.rt.metrics.active_streams.dec()
            if task is not None:
                self.rt.streams.discard(task)
            response.release()  # back to the pool if read to its end, else closed
            opened.release()
            ex.usage = relay.usage
            ex.completion_chunks = relay.estimated_completion_tokens()
        return client

    async def _relay(
        self,
        ex: Exchange,
        client: web.StreamResponse,
        relay: Relay,
        response: Response,
        upstream: Upstream,
        chunk: bytes,
    ) -> None:
        splitter = SSESplitter()
        idle = upstream.timeouts.idle
        loop = asyncio.get_running_loop()
        tail = b""  # what goes out with the end of the answer, in one write
        err: GatewayError
        try:
            # One watchdog for the whole relay: the upstream's silence is timed while waiting
            # on it, and a client that takes no bytes for as long is cut (``Silence``).
            with Silence(idle) as silence:
                while chunk:
                    out = relay.relay(events) if (events := splitter.feed(chunk)) else b""
                    if response.ended:  # nothing more will come: the rest goes with the end
                        tail = out
                        break
                    await client.write(out)  # the head with the first events (or alone)
                    silence.since = loop.time()
                    chunk = await read_chunk(response, upstream)
                    silence.since = None
                    silence.moved += 1
                if not relay.done:
                    if tail:
                        await client.write(tail)
                    raise UpstreamUnavailable(
                        f"Upstream '{upstream.name}' ended the stream before it was complete."
                    )
                await client.write_eof(tail + relay.finish())
                return
        except TimeoutError:
            err = silence.timed_out(upstream.name)
        except GatewayError as exc:
            err = exc
        await self._stream_failed(ex, client, relay, upstream, err)

    async def _stream_failed(
        self,
        ex: Exchange,
        client: web.StreamResponse,
        relay: Relay,
        upstream: Upstream,
        err: GatewayError,
    ) -> None:
        """The head is sent: the client learns of the failure from an error event and the
        missing [DONE], never from a status."""
        self._failed(upstream)
        ex.error = True
        await last_write(client, relay.error(err), upstream.timeouts.idle)


async def _last_words(client: web.StreamResponse, relay: Relay) -> None:
    error = UpstreamUnavailable(
        "The gateway is shutting down and its drain time ran out; retry the request."
    )
    with contextlib.suppress(ConnectionError, TimeoutError, RuntimeError):
        async with asyncio.timeout(0.5):
            await client.write(relay.error(error))


def _answer_chars(answer: object) -> int:
    try:
        message = answer["choices"][0]["message"]  # type: ignore[index]
        return len(message.get("content") or "") + len(str(message.get("tool_calls") or ""))
    except (KeyError, IndexError, TypeError, AttributeError):
        return 0


def _labels(body: dict[str, object]) -> tuple[str | None, str | None]:
    """The body's ``region`` and ``agent_id``, each a non-empty string or None."""
    region, agent = body.get("region"), body.get("agent_id")
    return (
        region if isinstance(region, str) and region else None,
        agent if isinstance(agent, str) and agent else None,
    )
