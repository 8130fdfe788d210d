"""The multipart APIs — audio transcriptions and translations, image edits — governed like chat:
the key from the head (before any byte of the body is held), the form's head up to its file
(``apis.multipart``), the model the key may use and that serves the API, the admission, then the
form streamed to one worker and its answer back.

A JSON answer is read whole (it is small, or images the client asked for) to count it: audio
seconds when the worker reports them, images made, tokens when reported; it then carries the
model's public name. Any other answer (``text``, ``srt``, ``vtt``, a streamed transcription's
events) is relayed as it comes, counted as a request.

The upload is not replayed: once a byte of it went to a worker, a failure is the client's answer.
Before that, attempts go as chat's (``proxy.attempts``): the model's upstream queue when its
upstreams are capped, another upstream or a fallback model as its ``retry`` says.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web

from gateway.config.schema import Upstream
from gateway.dialects.inputs import MAX_N
from gateway.errors import (
    BadRequest,
    GatewayError,
    RequestTimeout,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.proxy import attempts, govern
from gateway.proxy.apis import answers, forward
from gateway.proxy.apis.answers import Counted
from gateway.proxy.apis.json_api import NOTHING, answered_as, refused, require
from gateway.proxy.exchange import EXCHANGE, Exchange
from gateway.proxy.timers import CLIENT_STALLED, bounded_write
from gateway.proxy.upstream import ANSWER_MAX, forward_headers, returned_headers
from gateway.records import KeyRecord
from gateway.routing.chain import Chain
from gateway.routing.router import ModelRoute
from gateway.runtime import Runtime
from gateway.tracing import Span

if TYPE_CHECKING:  # imported at the first upload (below): idle RSS
    from gateway.proxy.apis.multipart import Form

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FormApi:
    """One multipart API: its name in ``models.<name>.apis``, permission, worker path, the
    form parts that are files, and what its answer counts."""

    api: str  # audio | images
    permission: str
    path: str
    files: frozenset[str]
    file_field: str  # the part a request must send
    counts: Callable[[object], Counted]
    reserved_by: frozenset[str] = frozenset()  # fields read before the file, for the admission


TRANSCRIPTIONS = FormApi(
    "audio", "audio", "/v1/audio/transcriptions", frozenset({"file"}), "file", answers.audio
)
TRANSLATIONS = FormApi(
    "audio", "audio", "/v1/audio/translations", frozenset({"file"}), "file", answers.audio
)
EDITS = FormApi(
    "images",
    "images",
    "/v1/images/edits",
    frozenset({"image", "image[]", "mask"}),
    "image",
    answers.images,
    frozenset({"n"}),
)


@functools.lru_cache(maxsize=256)
def api_url(url: str, path: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{forward.api_path(url, path)}"


def wanted(form: Form) -> int:
    """The images an edit asks for: its ``n`` field, 1 to ``MAX_N`` (1 when absent); an ``n``
    after the file is refused by the form (``reserved_by``)."""
    value = form.fields.get("n")
    if value is None:
        return 1
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= MAX_N):
        raise BadRequest(f"'n' must be a whole number from 1 to {MAX_N}.", param="n")
    return int(text)


class FormHandler:
    """``POST`` on one multipart API."""

    def __init__(self, runtime: Runtime, api: FormApi) -> None:
        self.rt = runtime
        self.api = api

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rt, ex = self.rt, request[EXCHANGE]
        ex.anthropic, ex.api = False, self.api.api
        record = await govern.caller(rt, request, self.api.permission)
        network = rt.config.network
        # (the multipart reader is imported at the first upload: a gateway whose clients never
        # send one does not keep it resident)
        from gateway.proxy.apis.multipart import Form

        form = Form(
            request,
            self.api.files,
            network.max_body_bytes,
            (network.header_timeout, network.body_timeout),
            self.api.reserved_by,
        )
        try:
            return await self._serve(request, ex, record, form)
        finally:
            form.close()

    async def _serve(
        self, request: web.Request, ex: Exchange, record: KeyRecord, form: Form
    ) -> web.StreamResponse:
        rt, api = self.rt, self.api
        await govern.reading(rt, request, form.read_head())  # counted as the key's while read
        asked = form.model()
        route = govern.model(rt, ex, record, asked)
        require(route, api.api, asked)
        form.require_file(api.file_field)
        ex.stream = form.fields.get("stream", "").strip().lower() == "true"
        images = wanted(form) if api.api == "images" else 0  # priced per image, as generations
        ticket = await govern.admit(rt, ex, record, route, 0, 0, images)
        try:
            return await self._forward(request, ex, route, form, asked)
        except GatewayError:
            ex.error = True
            raise
        finally:
            if ex.usage is None:
                ex.usage = NOTHING  # counted as a request; never an estimate of the file
            govern.settle(rt, ex, ticket, route)

    async def _forward(
        self, request: web.Request, ex: Exchange, route: ModelRoute, form: Form, asked: str
    ) -> web.StreamResponse:
        """The form to a worker, attempted as chat is (``proxy.attempts``) while no byte of
        the upload went out: once one did, a failure is the client's answer."""
        rt = self.rt

        async def attempt(
            upstream: Upstream, chain: Chain, span: Span
        ) -> tuple[aiohttp.ClientResponse, bytes]:
            model, wait = chain.model.upstream_model, chain.wait(upstream)
            try:
                return await self._send(request, ex, (upstream, span), form, (model, wait)), b""
            except GatewayError as err:
                if form.failure is not None:  # the client's upload failed: never retried
                    raise form.failure from None
                if isinstance(err, UpstreamTimeout) and form.sent and not form.complete:
                    raise RequestTimeout(  # the client was still sending: not the worker's fault
                        f"The upload did not finish within the {wait:g} s a worker is given to "
                        "answer; send it faster, or less."
                    ) from None
                raise

        chain = attempts.new_chain(
            rt, request, ex, attempts.serving(rt, route, self.api.api), b"{}"
        )
        with await attempts.open_with(rt, ex, chain, attempt, lambda: not form.sent) as held:
            try:
                return await self._answer(request, ex, (held.upstream, held.answer), route, asked)
            finally:
                held.answer.release()

    async def _send(
        self,
        request: web.Request,
        ex: Exchange,
        target: tuple[Upstream, Span],
        form: Form,
        sent: tuple[str, float],
    ) -> aiohttp.ClientResponse:
        """One try: the form (``sent``: the worker's model name, the wait for the head)."""
        upstream, span = target
        model, wait = sent
        from gateway.proxy.apis.multipart import Aborted  # (imported by handle already)

        headers = forward_headers(request.headers, upstream, ex.request_id, span.trace_headers)
        headers["Content-Type"] = f"multipart/form-data; boundary={form.boundary}"
        timeouts = upstream.timeouts
        ex.upstream_status = None
        try:
            async with asyncio.timeout(wait):
                response = await self.rt.client.session.post(
                    api_url(upstream.url, self.api.path),
                    data=form.body(model),
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(sock_connect=timeouts.connect),
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"Upstream '{upstream.name}' did not answer within {wait:g} s."
            ) from None
        except (aiohttp.ClientError, OSError, Aborted) as exc:
            raise UpstreamUnavailable(
                f"Upstream '{upstream.name}' could not be reached; try again shortly."
            ) from exc
        if form.failure is not None:
            response.close()
            raise form.failure
        ex.upstream_status = response.status
        if response.status >= 500 or response.status == 429:
            response.close()
            raise UpstreamUnavailable(
                f"Upstream '{upstream.name}' answered {response.status}; try again shortly."
            )
        return response

    async def _answer(
        self,
        request: web.Request,
        ex: Exchange,
        answering: tuple[Upstream, aiohttp.ClientResponse],
        route: ModelRoute,
        asked: str,
    ) -> web.StreamResponse:
        upstream, response = answering
        if response.status != 200 or response.content_type == "application/json":
            raw = await _whole(response, upstream)
            if response.status != 200:
                return refused(ex, self.api.api, asked, response.status, raw)
            return self._counted(ex, raw, answered_as(self.rt, ex, route, asked))
        out = web.StreamResponse(headers=returned_headers(response.headers))
        if ex.rate_headers:
            out.headers.update(ex.rate_headers)
        await out.prepare(request)
        return await _relay(request, out, response, upstream)

    def _counted(self, ex: Exchange, raw: bytes, names: tuple[str, str]) -> web.Response:
        try:
            counted = self.api.counts(orjson.loads(raw))
        except orjson.JSONDecodeError:
            counted = Counted()
        ex.usage = counted.usage() or NOTHING
        ex.images, ex.audio_seconds = counted.images, counted.seconds
        worker, public = names
        raw = answers.rename(raw, answers.renamer(worker, public), public, True)
        return web.Response(body=raw, content_type="application/json", headers=ex.rate_headers)


async def _whole(response: aiohttp.ClientResponse, upstream: Upstream) -> bytes:
    """A whole answer, each wait bounded by the upstream's ``idle``, at most ``ANSWER_MAX``."""
    parts, size = [], 0
    while chunk := await _next(response, upstream):
        size += len(chunk)
        if size > ANSWER_MAX:
            raise UpstreamUnavailable(f"Upstream '{upstream.name}' sent an answer too large.")
        parts.append(chunk)
    return b"".join(parts)


async def _next(response: aiohttp.ClientResponse, upstream: Upstream) -> bytes:
    try:
        async with asyncio.timeout(upstream.timeouts.idle):
            return await response.content.read(CHUNK)
    except TimeoutError:
        raise UpstreamTimeout(
            f"Upstream '{upstream.name}' went silent for {upstream.timeouts.idle:g} s."
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamUnavailable(
            f"Upstream '{upstream.name}' broke off its answer; try again."
        ) from exc


async def _relay(
    request: web.Request,
    out: web.StreamResponse,
    response: aiohttp.ClientResponse,
    upstream: Upstream,
) -> web.StreamResponse:
    """The answer after its head went out; a stall or a broken upstream closes the client's
    connection, which then cannot take the cut for the end. A client that takes nothing for
    the upstream's ``idle`` is cut too (it would hold its key's concurrency slot for ever)."""
    idle = upstream.timeouts.idle
    try:
        while chunk := await _next(response, upstream):
            await bounded_write(out, chunk, idle)
    except GatewayError as exc:
        if exc.code == CLIENT_STALLED:
            response.close()
            raise  # the edge cuts the connection and logs why
        request[EXCHANGE].error = True
        response.close()
        if request.transport is not None:
            request.transport.close()
        return out
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        return out
    await out.write_eof()
    return out
