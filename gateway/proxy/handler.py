"""The chat recipe, top to bottom: read the body → detect the dialect → check the request →
resolve the model → translate → pick an upstream → forward or stream → account usage.

Any stage stops the request by raising a ``GatewayError``; ``web.middlewares`` renders it in the
caller's dialect (``Exchange.anthropic``).
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import orjson
from aiohttp import web

from gateway.config.schema import Upstream
from gateway.dialects import anthropic
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
    NotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
    shown,
)
from gateway.limits.limiter import Ticket
from gateway.proxy.access import authenticate
from gateway.proxy.bodies import (
    dump_upstream,
    parse_json,
    read_request_body,
    too_large,
    upstream_error,
)
from gateway.proxy.exchange import EXCHANGE, Exchange
from gateway.proxy.upstream import forward_headers, read_body, read_chunk
from gateway.proxy.wire import Response
from gateway.records import KeyRecord
from gateway.routing.router import ModelRoute
from gateway.runtime import Runtime

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


class ChatHandler:
    """``POST`` on every chat alias."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ex: Exchange = request[EXCHANGE]
        rt = self.rt
        network = rt.config.network
        # The path and header already tell the dialect of a refusal before the body is read.
        ex.anthropic = ex.anthropic or request.path.endswith("/messages")
        # The caller is known from the head before any of its body is held (an unauthenticated
        # client can never make the gateway buffer a body); only a declared size comes first.
        refuse_declared_size(request, network.max_body_bytes)
        record = await self._authorize(request, ex)
        raw = await read_request_body(request, network.max_body_bytes, network.header_timeout)
        try:
            parsed: object = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        ex.anthropic = anthropic.is_anthropic(
            request.path, "anthropic-version" in request.headers, parsed
        )
        if parsed is None:
            parse_json(raw)  # raises the precise 400
        body = check_request(parsed) if not ex.anthropic else self._check_anthropic(parsed)
        model = str(body["model"])
        found = rt.router.resolve(model)
        rt.keys.check_model(
            record,
            model,
            found.allowed_by(record.models) if found else model in (record.models or ()),
        )
        route = self._known(ex, model, found)
        payload = self._upstream_body(ex, body, route)
        ex.prompt_estimate = len(raw) // 4  # a cheap over-estimate, settled to the real usage
        ticket = await rt.limiter.admit(
            ex.id,
            record,
            ex.prompt_estimate + (max_output_tokens(body) or route.default_max_tokens),
            ex.anthropic,
            route.name,
        )
        ex.rate_headers = ticket.headers
        try:
            if ex.stream:
                return await self._stream(request, ex, route, payload)
            return await self._complete(request, ex, route, payload)
        except GatewayError:
            ex.error = True
            raise
        finally:
            self._settle(ex, ticket, route.name)

    async def _authorize(self, request: web.Request, ex: Exchange) -> KeyRecord:
        """Who is calling, and may they chat from where they are (SPEC 4, rows 2-6)."""
        record = await authenticate(self.rt, request)
        self.rt.keys.check_permission(record, "chat")
        return record

    def _settle(self, ex: Exchange, ticket: Ticket, model: str) -> None:
        usage = ex.usage
        if usage is not None:
            ex.prompt_tokens = _count(usage.get("prompt_tokens"))
            ex.completion_tokens = _count(usage.get("completion_tokens"))
        elif ex.upstream is not None and not ex.error:
            ex.estimated = True  # no usage from upstream: estimate what was produced
            ex.prompt_tokens = ex.prompt_estimate
            ex.completion_tokens = ex.completion_chunks
        error = ex.error or (ex.upstream_status is not None and ex.upstream_status >= 400)
        self.rt.limiter.settle(
            ticket, model, ex.prompt_tokens, ex.completion_tokens, error, ex.estimated
        )

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

    @staticmethod
    def _known(ex: Exchange, name: str, route: ModelRoute | None) -> ModelRoute:
        if route is None:
            raise NotFound(
                f"The model '{shown(name)}' does not exist; list the models with GET /v1/models.",
                code="model_not_found",
                param="model",
            )
        ex.model = route.name
        return route

    def _upstream_body(self, ex: Exchange, body: dict[str, object], route: ModelRoute) -> bytes:
        ex.region = _str_or_none(body.get("region"))
        ex.agent_id = _str_or_none(body.get("agent_id"))
        if ex.anthropic:
            translated = anthropic.to_openai_request(body, route.upstream_model)
            ex.stream = translated.get("stream") is True
            ex.client_usage = True  # the translator asks a stream for usage itself
            return dump_upstream(translated)
        ex.stream = body.get("stream") is True
        body["model"] = route.upstream_model
        if ex.stream:
            ex.client_usage = wants_usage(body)
            options = body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return dump_upstream(body)

    async def _open(
        self, request: web.Request, ex: Exchange, route: ModelRoute, payload: bytes
    ) -> tuple[Upstream, Response, bytes]:
        """An answering upstream, its response and the whole body (a stream: its first chunk).

        A failure before any byte reached the client is retried once on another upstream.
        """
        balancer, tried = self.rt.balancer, list[str]()
        error: GatewayError | None = None
        for _ in range(2):
            upstream = balancer.pick(route.upstreams, tried, ex.region)
            if upstream is None:
                break
            tried.append(upstream.name)
            balancer.acquire(upstream)
            try:
                response, first = await self._attempt(request, ex, upstream, payload)
            except GatewayError as err:
                balancer.release(upstream)
                self._failed(upstream)
                error = err
                continue
            balancer.succeeded(upstream)
            ex.upstream = upstream.name
            return upstream, response, first
        raise error or UpstreamUnavailable(
            f"No upstream of model '{route.name}' is available; try again shortly.", status=503
        )

    def _failed(self, upstream: Upstream) -> None:
        self.rt.balancer.failed(upstream)
        self.rt.metrics.upstream_failures.labels(upstream.name).inc()

    async def _attempt(
        self, request: web.Request, ex: Exchange, upstream: Upstream, payload: bytes
    ) -> tuple[Response, bytes]:
        headers = forward_headers(request.headers, upstream, ex.request_id)
        client = self.rt.client
        if not ex.stream:  # the whole answer, read here: an answer broken off is retried too
            answer = _usable(upstream, await client.post(upstream, payload, headers))
            try:
                return answer, await read_body(answer, upstream)
            finally:
                answer.release()
        response: Response | None = None
        try:  # one timer for the head and the first chunk: the time to first token
            async with asyncio.timeout(upstream.timeouts.first_byte):
                response = _usable(
                    upstream, await client.post(upstream, payload, headers, stream=True)
                )
                if response.status != 200:
                    return response, b""
                first = await read_chunk(response, upstream)
        except TimeoutError:
            if response is not None:
                response.close()
            raise UpstreamTimeout(
                f"Upstream '{upstream.name}' sent nothing within "
                f"{upstream.timeouts.first_byte:g} s."
            ) from None
        except GatewayError:
            if response is not None:
                response.close()
            raise
        ex.ttft = self.rt.clock.monotonic() - ex.started
        return response, first

    async def _complete(
        self, request: web.Request, ex: Exchange, route: ModelRoute, payload: bytes
    ) -> web.StreamResponse:
        upstream, response, raw = await self._open(request, ex, route, payload)
        self.rt.balancer.release(upstream)
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
        if ex.anthropic:
            raw = orjson.dumps(anthropic.to_anthropic_response(answer, route.name))
        return web.Response(body=raw, content_type="application/json", headers=ex.rate_headers)

    async def _stream(
        self, request: web.Request, ex: Exchange, route: ModelRoute, payload: bytes
    ) -> web.StreamResponse:
        upstream, response, chunk = await self._open(request, ex, route, payload)
        if response.status != 200:
            try:  # an error answer to a stream request: bounded like a whole answer
                async with asyncio.timeout(upstream.timeouts.first_byte):
                    raw = await read_body(response, upstream)
            except TimeoutError:
                raise UpstreamTimeout(
                    f"Upstream '{upstream.name}' stalled while sending its answer."
                ) from None
            finally:
                response.release()
                self.rt.balancer.release(upstream)
            return upstream_error(ex, response.status, raw)
        relay: Relay = (
            AnthropicRelay(route.name, input_tokens=ex.prompt_estimate)
            if ex.anthropic
            else OpenAIRelay(ex.client_usage)
        )
        client = _EventStream(headers=SSE_HEADERS)
        if ex.rate_headers:
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
            self.rt.balancer.release(upstream)
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
        try:
            # The upstream's silence is timed only while waiting on it (a slow client's
            # backpressure is not the upstream's silence), by one watchdog for the whole relay.
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
            if not relay.done:
                if tail:
                    await client.write(tail)
                    tail = b""
                raise UpstreamUnavailable(
                    f"Upstream '{upstream.name}' ended the stream before it was complete."
                )
            tail += relay.finish()
        except TimeoutError:
            await self._stream_failed(
                ex,
                client,
                relay,
                upstream,
                UpstreamTimeout(
                    f"Upstream '{upstream.name}' went silent for {idle:g} s in the middle of the "
                    "answer."
                ),
            )
        except GatewayError as err:
            await self._stream_failed(ex, client, relay, upstream, err)
        await client.write_eof(tail)

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
        await client.write(relay.error(err))


class Silence:
    """``with Silence(limit) as s``: the task is cancelled (and the block raises TimeoutError)
    once a wait that began at ``s.since`` has lasted ``limit`` seconds; ``s.since = None``
    between waits. One timer re-armed at most once per ``limit``, where rescheduling an
    ``asyncio.timeout`` around every wait cost two timer operations per stream chunk."""

    __slots__ = ("_cancelling", "_fired", "_handle", "_limit", "_loop", "_task", "since")

    def __init__(self, limit: float) -> None:
        self.since: float | None = None
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self._fired = False

    def __enter__(self) -> Silence:
        self._cancelling = self._task.cancelling()
        self._handle = self._loop.call_later(self._limit, self._check)
        return self

    def _check(self) -> None:
        since, now = self.since, self._loop.time()
        if since is not None and now - since >= self._limit:
            self._handle, self._fired = None, True
            self._task.cancel()
        else:
            start = since if since is not None else now
            self._handle = self._loop.call_at(max(start + self._limit, now + 0.001), self._check)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fired:
            ours = self._task.uncancel() <= self._cancelling  # no one else cancelled the task
            if ours and kind is asyncio.CancelledError:
                raise TimeoutError from exc


def refuse_declared_size(request: web.Request, limit: int) -> None:
    """413 at once for a body whose declared length is over the limit (read or not)."""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)


def _usable(upstream: Upstream, response: Response) -> Response:
    """The response, unless the upstream failed (5xx, 429): then it counts as a failure."""
    if response.status >= 500 or response.status == 429:
        response.close()
        raise UpstreamUnavailable(
            f"Upstream '{upstream.name}' answered {response.status}; try again shortly."
        )
    return response


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


def _count(value: object) -> int:
    """A token count an upstream reported: a whole number ≥ 0, else 0 (never a crash)."""
    if type(value) is int and value > 0:
        return value
    if type(value) is float and 0 < value < 1e15:
        return int(value)
    return 0


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
