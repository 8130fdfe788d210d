"""JSON requests of the non-chat APIs to a model's workers, over the lean pool
(``proxy.wire``) the chat path uses: the worker's path for the API (under a root or a ``/v1``
base URL), one retry on another upstream before any byte reached the client, and the relay of a
streamed answer (legacy completions) event by event.

Timeouts are the upstream's, as for chat: ``first_byte`` for the head and first chunk (a whole
answer: each silence), ``idle`` between the chunks of a stream.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gateway.config.schema import Upstream
from gateway.dialects.openai import OpenAIRelay
from gateway.dialects.sse import SSESplitter
from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.apis.answers import rename
from gateway.proxy.exchange import Exchange
from gateway.proxy.timers import Silence
from gateway.proxy.upstream import forward_headers, read_body, read_chunk
from gateway.proxy.wire import ConnectError, ConnectTimeout, Response, WireError
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


async def post(
    rt: Runtime,
    upstream: Upstream,
    path: str,
    payload: bytes,
    headers: dict[str, str],
    stream: bool,
) -> Response:
    """POST ``payload`` to ``path`` of ``upstream``; returns at the answer's head (a whole answer
    is bounded by ``first_byte`` of silence, a stream by its caller)."""
    pool, timeouts = rt.client.pool, upstream.timeouts
    try:
        return await pool.post(
            pool.origin(upstream.url),
            api_path(upstream.url, path),
            headers,
            payload,
            timeouts.connect,
            None if stream else timeouts.first_byte,
        )
    except ConnectTimeout as exc:
        raise UpstreamUnavailable(
            f"Upstream '{upstream.name}' did not accept a connection within "
            f"{timeouts.connect:g} s; try again shortly."
        ) from exc
    except ConnectError as exc:
        raise UpstreamUnavailable(
            f"Upstream '{upstream.name}' refused the connection; try again shortly."
        ) from exc
    except TimeoutError as exc:
        raise UpstreamTimeout(
            f"Upstream '{upstream.name}' sent nothing within {timeouts.first_byte:g} s."
        ) from exc
    except WireError as exc:
        raise UpstreamUnavailable(
            f"Upstream '{upstream.name}' failed before answering; try again shortly."
        ) from exc


def failed(rt: Runtime, upstream: Upstream) -> None:
    rt.balancer.failed(upstream)
    rt.metrics.upstream_failures.labels(upstream.name).inc()


async def open_answer(
    rt: Runtime, request: web.Request, ex: Exchange, route: ModelRoute, path: str, payload: bytes
) -> tuple[Upstream, Response, bytes]:
    """An answering upstream (acquired: the caller releases it), its response and its whole
    body (a stream answering 200: its first chunk, the response still open). A failure before
    any byte reached the client is retried once on another upstream."""
    balancer, tried = rt.balancer, list[str]()
    error: GatewayError | None = None
    for _ in range(2):
        upstream = balancer.pick(route.upstreams, tried, ex.region)
        if upstream is None:
            break
        tried.append(upstream.name)
        balancer.acquire(upstream)
        try:
            response, first = await _attempt(rt, request, ex, upstream, path, payload)
        except GatewayError as err:
            balancer.release(upstream)
            failed(rt, upstream)
            error = err
            continue
        balancer.succeeded(upstream)
        ex.upstream = upstream.name
        return upstream, response, first
    raise error or UpstreamUnavailable(
        f"No upstream of model '{route.name}' is available; try again shortly.", status=503
    )


async def _attempt(
    rt: Runtime, request: web.Request, ex: Exchange, upstream: Upstream, path: str, payload: bytes
) -> tuple[Response, bytes]:
    headers = forward_headers(request.headers, upstream, ex.request_id)
    if not ex.stream:  # the whole answer, read here: an answer broken off is retried too
        answer = _usable(upstream, await post(rt, upstream, path, payload, headers, False))
        try:
            return answer, await read_body(answer, upstream)
        finally:
            answer.release()
    response: Response | None = None
    try:  # one timer for the head and the first chunk
        async with asyncio.timeout(upstream.timeouts.first_byte):
            response = _usable(upstream, await post(rt, upstream, path, payload, headers, True))
            if response.status != 200:  # a refusal: read whole, like a whole answer
                refusal = await read_body(response, upstream)
                response.release()
                return response, refusal
            first = await read_chunk(response, upstream)
    except TimeoutError:
        if response is not None:
            response.close()
        raise UpstreamTimeout(
            f"Upstream '{upstream.name}' sent nothing within {upstream.timeouts.first_byte:g} s."
        ) from None
    except GatewayError:
        if response is not None:
            response.close()
        raise
    ex.ttft = rt.clock.monotonic() - ex.started
    return response, first


def _usable(upstream: Upstream, response: Response) -> Response:
    """The response, unless the upstream failed (5xx, 429): then it counts as a failure."""
    if response.status >= 500 or response.status == 429:
        response.close()
        raise UpstreamUnavailable(
            f"Upstream '{upstream.name}' answered {response.status}; try again shortly."
        )
    return response


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
    stream: tuple[Upstream, Response, bytes],
    relay: OpenAIRelay,
    renamed: Renamer,
) -> web.StreamResponse:
    """Relay an OpenAI event stream to the client as it comes (the usage-only chunk dropped
    unless the client asked for it); a failure after the head is an error event and no
    ``[DONE]``. The upstream is released at the end."""
    upstream, response, chunk = stream
    client = _EventStream(headers=SSE_HEADERS)
    if ex.rate_headers:
        client.headers.update(ex.rate_headers)
    rt.metrics.active_streams.inc()
    task = asyncio.current_task()
    if task is not None:
        rt.streams.add(task)
    try:
        await client.prepare(request)
        await _pump(rt, ex, client, relay, renamed, (upstream, response, chunk))
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass  # the client left; what was produced so far is still charged
    finally:
        rt.metrics.active_streams.dec()
        if task is not None:
            rt.streams.discard(task)
        response.release()
        rt.balancer.release(upstream)
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
    stream: tuple[Upstream, Response, bytes],
) -> None:
    async def deliver(events: list[bytes]) -> None:
        await client.write(renamed(relay.relay(events)))

    await pump(rt, ex, client, relay, stream, deliver)


async def pump(
    rt: Runtime,
    ex: Exchange,
    client: web.StreamResponse,
    relay: Streamed,
    stream: tuple[Upstream, Response, bytes],
    deliver: Callable[[list[bytes]], Awaitable[None]],
) -> None:
    """Relay a worker's stream until it ends: each batch of events to ``deliver``, the
    worker's silence bounded by its ``idle``; a failure after the head is the relay's error
    event (no status can say it any more), and the worker counts as failed."""
    upstream, response, chunk = stream
    splitter, idle = SSESplitter(), upstream.timeouts.idle
    loop = asyncio.get_running_loop()
    try:
        with Silence(idle) as silence:
            while chunk:
                if events := splitter.feed(chunk):
                    await deliver(events)
                silence.since = loop.time()
                chunk = await read_chunk(response, upstream)
                silence.since = None
        if not relay.done:
            raise UpstreamUnavailable(
                f"Upstream '{upstream.name}' ended the stream before it was complete."
            )
    except TimeoutError:
        silent = (
            f"Upstream '{upstream.name}' went silent for {idle:g} s in the middle of the answer."
        )
        await _broken(rt, ex, client, relay, upstream, UpstreamTimeout(silent))
    except GatewayError as exc:
        await _broken(rt, ex, client, relay, upstream, exc)
    await client.write_eof()


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
    failed(rt, upstream)
    ex.error = True
    await client.write(relay.error(err))
