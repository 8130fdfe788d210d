"""The bundled mock worker's HTTP side of its APIs beside chat, served where vLLM serves them:
``POST /v1/completions`` (JSON or SSE), ``/v1/embeddings``, ``/v1/rerank``, ``/rerank``,
``/v2/rerank``, ``/v1/score``, ``/score``, ``/v1/audio/transcriptions`` and
``/v1/audio/translations`` (multipart; ``stream=true`` as SSE), ``/v1/images/generations``,
``/v1/images/edits`` (multipart) and ``/tokenize``. What each answers is decided in
``gateway.mock_worker.shapes``.

The ``x-mock-*`` headers act as on chat: ``x-mock-status`` answers that status,
``x-mock-delay`` waits before the head, ``x-mock-no-usage`` leaves the usage out,
``x-mock-token-delay`` paces a stream, ``x-mock-die-after: N`` cuts a completion stream after N
token chunks (a whole answer: closes without answering). Every request is noted in
``MockState.api_requests`` as (path, lower-cased headers, JSON body or form summary).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from aiohttp import web

from gateway.mock_worker import shapes
from gateway.mock_worker.plan import BadRequest, Controls, read_controls
from gateway.mock_worker.wire import error_body

Deny = Callable[[web.Request], web.Response | None]
Record = Callable[[str, dict[str, str], Any], None]
_SSE = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, body=error_body(status, message), content_type="application/json"
    )


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


class MockApis:
    """The handlers of one mock worker's non-chat APIs."""

    def __init__(
        self,
        deny: Deny,
        record: Record,
        controls: Controls,
        canned: Sequence[str],
        default_model: str,
    ) -> None:
        self.deny, self.record, self.controls = deny, record, controls
        self.canned, self.default_model = canned, default_model

    def add_routes(self, app: web.Application) -> None:
        add = app.router.add_post
        add("/v1/completions", self.completions)
        add("/v1/embeddings", self.embeddings)
        for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
            add(path, self.rerank)
        for path in ("/v1/score", "/score"):
            add(path, self.score)
        add("/v1/audio/transcriptions", self.transcriptions)
        add("/v1/audio/translations", self.translations)
        add("/v1/images/generations", self.images)
        add("/v1/images/edits", self.image_edits)
        add("/tokenize", self.tokenize)

    async def _open(
        self, request: web.Request, summary: Any
    ) -> tuple[Controls | None, web.Response | None]:
        """The prologue of every API: the key, the note, the controls and the injected delay
        and status; a response when the request ends here."""
        denied = self.deny(request)
        if denied is not None:
            return None, denied
        self.record(request.path, {k.lower(): v for k, v in request.headers.items()}, summary)
        try:
            controls = read_controls(request.headers, self.controls)
        except BadRequest as exc:
            return None, error(400, exc.message)
        if controls.delay > 0:
            await asyncio.sleep(controls.delay)
        if controls.status is not None:
            return None, error(
                controls.status, f"Injected failure (x-mock-status: {controls.status})."
            )
        return controls, None

    async def _body(self, request: web.Request) -> tuple[dict[str, Any], Controls] | web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return error(400, f"The request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return error(400, "The request body must be a JSON object.")
        controls, response = await self._open(request, body)
        if response is not None:
            return response
        assert controls is not None
        return body, controls

    def _model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        return model if isinstance(model, str) and model else self.default_model

    async def completions(self, request: web.Request) -> web.StreamResponse:
        opened = await self._body(request)
        if isinstance(opened, web.Response):
            return opened
        body, controls = opened
        model = self._model(body)
        try:
            if body.get("stream") is True:
                options = body.get("stream_options")
                usage = isinstance(options, dict) and options.get("include_usage") is True
                chunks = list(shapes.completion_chunks(body, model, self.canned, usage))
                return await self._stream(request, iter(chunks), controls)
            answer = shapes.completion_body(body, model, self.canned, not controls.no_usage)
        except BadRequest as exc:
            return error(400, exc.message)
        if controls.die_after is not None:
            _kill(request)
        return _json(answer)

    async def _stream(
        self, request: web.Request, chunks: Iterator[bytes], controls: Controls
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE)
        await response.prepare(request)
        for sent, chunk in enumerate(chunks):
            if sent == controls.die_after:
                _kill(request)
                return response
            if sent and controls.token_delay > 0:
                await asyncio.sleep(controls.token_delay)
            if controls.no_usage and b'"choices":[],"usage"' in chunk:
                continue
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _answer(
        self, request: web.Request, shape: Callable[[dict[str, Any], str, bool], bytes]
    ) -> web.Response:
        opened = await self._body(request)
        if isinstance(opened, web.Response):
            return opened
        body, controls = opened
        try:
            return _json(shape(body, self._model(body), not controls.no_usage))
        except BadRequest as exc:
            return error(400, exc.message)

    async def embeddings(self, request: web.Request) -> web.Response:
        return await self._answer(request, shapes.embeddings_body)

    async def rerank(self, request: web.Request) -> web.Response:
        return await self._answer(request, shapes.rerank_body)

    async def score(self, request: web.Request) -> web.Response:
        return await self._answer(request, shapes.score_body)

    async def images(self, request: web.Request) -> web.Response:
        opened = await self._body(request)
        if isinstance(opened, web.Response):
            return opened
        body, _ = opened
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            return error(400, "`prompt` is required.")
        try:
            return _json(shapes.images_body(body.get("n"), body.get("response_format")))
        except BadRequest as exc:
            return error(400, exc.message)

    async def tokenize(self, request: web.Request) -> web.Response:
        opened = await self._body(request)
        if isinstance(opened, web.Response):
            return opened
        try:
            return _json(shapes.tokenize_body(opened[0]))
        except BadRequest as exc:
            return error(400, exc.message)

    async def _form(
        self, request: web.Request, file_field: str
    ) -> tuple[dict[str, str], tuple[str, bytes], Controls] | web.Response:
        """The form's text fields, its file (name, bytes) and the controls."""
        if request.content_type != "multipart/form-data":
            return error(400, "Send multipart/form-data.")
        try:
            form = await request.post()
        except ValueError as exc:
            return error(400, f"The form is malformed: {exc}")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get(file_field)
        files = {k: len(v.file.read()) for k, v in form.items() if isinstance(v, web.FileField)}
        controls, response = await self._open(request, {"fields": fields, "files": files})
        if response is not None:
            return response
        assert controls is not None
        if not isinstance(upload, web.FileField):
            return error(400, f"`{file_field}` is required: send it as a file.")
        upload.file.seek(0)
        return fields, (upload.filename, upload.file.read()), controls

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._audio(request, "transcribe")

    async def translations(self, request: web.Request) -> web.StreamResponse:
        return await self._audio(request, "translate")

    async def _audio(self, request: web.Request, task: str) -> web.StreamResponse:
        opened = await self._form(request, "file")
        if isinstance(opened, web.Response):
            return opened
        fields, (filename, data), controls = opened
        text, seconds = shapes.transcript(filename, data, task)
        model = fields.get("model") or self.default_model
        if fields.get("stream", "").lower() == "true":
            return await self._stream(
                request, shapes.transcript_chunks(text, model, seconds), controls
            )
        try:
            answer, kind = shapes.transcript_answer(
                text, seconds, task, fields.get("response_format", "json")
            )
        except BadRequest as exc:
            return error(400, exc.message)
        if controls.no_usage and kind == "application/json":
            answer = orjson.dumps({"text": text})
        return web.Response(body=answer, content_type=kind)

    async def image_edits(self, request: web.Request) -> web.Response:
        opened = await self._form(request, "image")
        if isinstance(opened, web.Response):
            return opened
        fields = opened[0]
        if not fields.get("prompt"):
            return error(400, "`prompt` is required.")
        n = fields.get("n", "1")
        try:
            return _json(
                shapes.images_body(int(n) if n.isdecimal() else n, fields.get("response_format"))
            )
        except BadRequest as exc:
            return error(400, exc.message)


def _kill(request: web.Request) -> None:
    """Closes the connection after what was written is flushed: a cut, unterminated answer."""
    transport = request.transport
    if transport is not None:
        transport.close()
