"""JSON requests of the non-chat APIs to a model's workers, over the lean pool
(``proxy.wire``) the chat path uses: the worker's path for the API (under a root or a ``/v1``
base URL), the attempts as chat makes them (``proxy.attempts``: the model's upstream queue,
retries and fallbacks before any byte reached the client), and the relay of a streamed answer
(legacy completions) event by event.

Timeouts are the upstream's, as for chat: ``first_byte`` for the head and first chunk (a whole
answer: each silence), ``idle`` between the chunks of a stream.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gateway.config.schema import Upstream
from gateway.dialects.openai import OpenAIRelay
from gateway.dialects.sse import SSESplitter
from gateway.errors import GatewayError, UpstreamUnavailable
from gateway.proxy import attempts
from gateway.proxy.apis.answers import rename
from gateway.proxy.attempts import Held, Post
from gateway.proxy.exchange import Exchange
from gateway.proxy.queued import EarlyHead
from gateway.proxy.timers import Silence, last_write
from gateway.proxy.upstream import read_chunk
from gateway.proxy.wire import Response
from gateway.routing.router import ModelRoute
from gateway.runtime import Runtime

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


@functools.lru_cache(maxsize=256)
def api_path(url: str, path: str) -> str:
    """The path of ``path`` (``/v1/…``, ``/v2/…`` or a root path such as ``/tokenize``) on an
    upstream whose ``url`` is the server's root or its ``/v1`` base, as OpenAI clients write it."""
    base = (urlsplit(url).path or "").rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return base + path


def poster(rt: Runtime, path: str) -> Post:
    """How a request of the API at ``path`` is POSTed to an upstream (``attempts.Post``)."""

    def post(
        upstream: Upstream,
        payload: bytes,
        headers: dict[str, str],
        stream: bool,
        wait: float | None,
    ) -> Awaitable[Response]:
        client = rt.client
        origin, target = client.pool.origin(upstream.url), api_path(upstream.url, path)
        return client.post_to(upstream, origin, target, payload, headers, stream, wait)

    return post


ErrorEvent = Callable[[GatewayError], bytes]


def early_head(request: web.Request, ex: Exchange) -> EarlyHead:
    """A stream's client answer, whose head goes out early with ``: queued`` comments while
    the request waits for a slot of a full model (``proxy.queued``)."""
    return EarlyHead(request, _EventStream(headers=SSE_HEADERS), ex.rate_headers)


async def open_answer(
    rt: Runtime,
    request: web.Request,
    ex: Exchange,
    route: ModelRoute,
    api: tuple[str, Post],
    payload: bytes,
    early: tuple[EarlyHead, ErrorEvent] | None = None,
) -> Held[Response] | None:
    """An answering upstream (held: the caller releases it), its response and its whole body
    (a stream answering 200: its first chunk, the response still open; a refused stream: its
    refusal read whole, the upstream released). ``api``: the API's name and its ``poster``.
    Attempts go as chat's do (``proxy.attempts``): the model's upstream queue, retries,
    fallbacks that serve the API, per-attempt timeouts. A stream's ``early`` head (and how its
    dialect writes an error event) is sent if it must wait; None: a failure after that head
    was written to the client as that event, and the stream ended."""
    name, post = api
    tick = early[0].tick if early is not None else None
    opening = attempts.open_upstream(
        rt, request, ex, attempts.serving(rt, route, name), payload, post, tick
    )
    opened = await (opening if early is None else early[0].opening(ex, early[1], opening))
    if opened is None:
        return None
    if ex.stream and opened.answer.status != 200:  # the refusal read whole, the slot given back
        reading = attempts.refusal_of(opened)
        refusal = await (reading if early is None else early[0].opening(ex, early[1], reading))
        if refusal is None:  # it stalled or broke off after the early head: an error event
            return None
        opened.body = refusal
        if early is not None and early[0].sent:
            await early[0].refused(ex, early[1], opened.answer.status, opened.body)
            return None
    return opened


class _EventStream(web.StreamResponse):
    """A stream answer whose head goes out with its first events, in one write."""

    _send_headers_immediately = False


Renamer = Callable[[bytes], bytes]


def renaming(pattern: re.Pattern[bytes] | None, public: str) -> Renamer:
    """The rewrite of a batch of stream events: every ``model`` the worker named, public."""
    return functools.partial(rename, pattern=pattern, public=public, first=False)


async def relay_stream(
    rt: Runtime,
    request: web.Request,
    ex: Exchange,
    stream: Held[Response],
    relay: OpenAIRelay,
    renamed: Renamer,
    early: EarlyHead | None = None,
) -> web.StreamResponse:
    """Relay an OpenAI event stream to the client as it comes (the usage-only chunk dropped
    unless the client asked for it); a failure after the head is an error event and no
    ``[DONE]``. The upstream is released at the end. ``early``: the client's stream, its head
    perhaps sent already while the request waited for a slot."""
    return await relay_with(
        rt,
        request,
        ex,
        stream,
        relay,
        lambda client: _pump(rt, ex, client, relay, renamed, stream),
        early,
    )


class Metered(Protocol):
    """A relay that tells what the stream used (the worker's usage, else an estimate)."""

    usage: dict[str, Any] | None

    def estimated_completion_tokens(self) -> int: ...


async def relay_with(
    rt: Runtime,
    request: web.Request,
    ex: Exchange,
    stream: Held[Response],
    relay: Metered,
    pumping: Callable[[web.StreamResponse], Awaitable[None]],
    early: EarlyHead | None = None,
) -> web.StreamResponse:
    """A stream answer's life, for every streaming API: its head (unless ``early`` sent it
    while the request waited for a slot), ``pumping`` the worker's events to the client, and,
    whatever happens, the stream counted, the upstream given back and what it used noted."""
    client = early.client if early is not None else _EventStream(headers=SSE_HEADERS)
    prepared = early is not None and early.sent
    if ex.rate_headers and not prepared:
        client.headers.update(ex.rate_headers)
    rt.metrics.active_streams.inc()
    task = asyncio.current_task()
    if task is not None:
        rt.streams.add(task)
    try:
        if not prepared:
            await client.prepare(request)
        await pumping(client)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass  # the client left; what was produced so far is still charged
    finally:
        rt.metrics.active_streams.dec()
        if task is not None:
            rt.streams.discard(task)
        stream.answer.release()
        stream.release()
        ex.usage = relay.usage
        ex.completion_chunks = relay.estimated_completion_tokens()
    return client


class Streamed(Protocol):
    """A relay whose stream can end whole (``done``) or broken (``error``'s event)."""

    done: bool

    def error(self, error: GatewayError) -> bytes: ...


async def _pump(
    rt: Runtime,
    ex: Exchange,
    client: web.StreamResponse,
    relay: OpenAIRelay,
    renamed: Renamer,
    stream: Held[Response],
) -> None:
    async def deliver(events: list[bytes]) -> None:
        await client.write(renamed(relay.relay(events)))

    await pump(rt, ex, client, relay, stream, deliver)


async def pump(
    rt: Runtime,
    ex: Exchange,
    client: web.StreamResponse,
    relay: Streamed,
    stream: Held[Response],
    deliver: Callable[[list[bytes]], Awaitable[None]],
) -> None:
    """Relay a worker's stream until it ends: each batch of events to ``deliver``, the
    worker's silence bounded by its ``idle``; a failure after the head is the relay's error
    event (no status can say it any more), and the worker counts as failed."""
    upstream, response, chunk = stream.upstream, stream.answer, stream.body
    splitter, idle = SSESplitter(), upstream.timeouts.idle
    loop = asyncio.get_running_loop()
    err: GatewayError
    try:
        with Silence(idle) as silence:  # the worker's silence, and a client that takes nothing
            while chunk:
                if events := splitter.feed(chunk):
                    await deliver(events)
                silence.since = loop.time()
                chunk = await read_chunk(response, upstream)
                silence.since = None
                silence.moved += 1
            if not relay.done:
                raise UpstreamUnavailable(
                    f"Upstream '{upstream.name}' ended the stream before it was complete."
                )
            await client.write_eof()
            return
    except TimeoutError:
        err = silence.timed_out(upstream.name)
    except GatewayError as exc:
        err = exc
    await _broken(rt, ex, client, relay, upstream, err)


async def _broken(
    rt: Runtime,
    ex: Exchange,
    client: web.StreamResponse,
    relay: Streamed,
    upstream: Upstream,
    err: GatewayError,
) -> None:
    """The head is sent: the client learns of the failure from an error event and the missing
    end, never from a status."""
    attempts.failed(rt, upstream)
    ex.error = True
    await last_write(client, relay.error(err), upstream.timeouts.idle)
