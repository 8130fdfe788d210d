"""The bundled fake OpenAI-compatible inference worker, shaped like vLLM's OpenAI server.

Owns the HTTP side: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON or
SSE), API-key checks, per-request fault injection through ``x-mock-*`` headers, and the
:class:`MockState` record tests read. What to answer is decided in ``gateway.mock_worker.plan``;
the bytes are built in ``gateway.mock_worker.wire``. The other APIs (completions, embeddings,
rerank and score, audio, images, ``/tokenize``) are served by ``gateway.mock_worker.apis``.

Request headers (the gateway forwards client headers upstream):

* ``x-mock-status: 500`` answer that status (400-599) with an OpenAI error body.
* ``x-mock-die-after: N`` stream the role chunk and N token chunks (reasoning, content or
  tool-call pieces), then close the connection: no finish chunk, no terminating HTTP chunk, no
  ``[DONE]``. Non-streaming: close without answering.
* ``x-mock-delay: SECONDS`` sleep before the response head.
* ``x-mock-token-delay: SECONDS`` the delay between tokens for this request. A non-streaming
  answer waits ``first_token_delay + token_delay * (completion_tokens - 1)``, as generating would.
* ``x-mock-no-usage: 1`` never send usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway.mock_worker.apis import MockApis
from gateway.mock_worker.plan import BadRequest, Controls, Plan, plan_chat, read_controls
from gateway.mock_worker.wire import (
    DONE,
    CannedChunks,
    chunk_head,
    completion_body,
    error_body,
    finish_body,
    new_id,
    token_chunks,
    usage_chunk,
)

_log = logging.getLogger(__name__)
_SHUTDOWN_GRACE = 0.5  # seconds cleanup() lets in-flight answers run before cancelling them
_SSE_HEADERS = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache"),
)


@dataclass(frozen=True)
class MockOptions:
    """How the worker behaves by default; headers override some of it per request."""

    token_delay: float = 0.0  # seconds between streamed tokens (content chunks)
    first_token_delay: float = 0.0  # extra wait before the first chunk / a non-stream answer
    reply: str = "Hello! I am the mock worker. How can I help you today?"
    models: tuple[str, ...] = ("mock-model",)  # served by GET /v1/models; chat accepts any name
    api_key: str | None = None  # when set, /v1/* require "Authorization: Bearer <api_key>"


@dataclass
class MockState:
    """What the worker saw: chat requests (headers lower-cased, parsed body) and their fate."""

    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    received: int = 0  # chat requests with a JSON body, ever (``requests`` keeps ~the last 1000)
    open: int = 0  # chat requests in progress
    peak_open: int = 0  # the most ever in progress at once
    aborted: int = 0  # chat requests whose client went away before the answer was complete
    killed: int = 0  # chat requests cut by ``x-mock-die-after``
    keep: int = 1000
    # The other APIs' requests: (path, headers lower-cased, JSON body or form summary).
    api_requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)

    def record(self, headers: dict[str, str], body: dict[str, Any]) -> None:
        self.received += 1
        self.requests.append((headers, body))
        if len(self.requests) > self.keep + self.keep // 10:  # trim in batches: amortized O(1)
            del self.requests[: len(self.requests) - self.keep]

    def record_api(self, path: str, headers: dict[str, str], body: Any) -> None:
        self.api_requests.append((path, headers, body))
        if len(self.api_requests) > self.keep + self.keep // 10:
            del self.api_requests[: len(self.api_requests) - self.keep]


MOCK_STATE = web.AppKey("mock_state", MockState)


def create_app(options: MockOptions = MockOptions()) -> web.Application:
    """The worker as an aiohttp application; its :class:`MockState` is ``app[MOCK_STATE]``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    state = MockState()
    app[MOCK_STATE] = state
    worker = _Worker(options, state)
    app.router.add_get("/health", worker.health)
    app.router.add_get("/v1/models", worker.models)
    app.router.add_post("/v1/chat/completions", worker.chat)
    apis = MockApis(
        worker.deny,
        state.record_api,
        worker.controls,
        worker.canned.tokens,
        worker.default_model,
    )
    apis.add_routes(app)
    app.on_shutdown.append(worker.shutdown)
    return app


async def start(
    options: MockOptions, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serves the worker on ``host:port`` (0 picks a free port); returns the runner and port."""
    runner = web.AppRunner(
        create_app(options),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=_SHUTDOWN_GRACE,
    )
    await runner.setup()
    try:
        # reuse_port: each gateway worker process may start its own copy on the same port.
        await web.TCPSite(runner, host, port, reuse_port=port != 0).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return runner, bound


def run(host: str, port: int, options: MockOptions) -> None:
    """Serves until SIGINT/SIGTERM, on uvloop when it is installed (``gateway mock-worker``)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(host, port, options))


async def _serve(host: str, port: int, options: MockOptions) -> None:
    runner, bound = await start(options, host, port)
    stopped = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: it may be inherited ignored
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signum, stopped.set)
    _log.info("mock worker listening", extra={"host": host, "port": bound})
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, body=error_body(status, message), content_type="application/json"
    )


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _kill(request: web.Request) -> None:
    """Closes the connection after what was written is flushed: a cut, unterminated response."""
    transport = request.transport
    if transport is not None:
        transport.close()


class _Worker:
    """The handlers of one app, bound to its options and state."""

    def __init__(self, options: MockOptions, state: MockState) -> None:
        self.options = options
        self.state = state
        self.canned = CannedChunks.build(options.reply)
        self.auth = None if options.api_key is None else f"Bearer {options.api_key}"
        self.default_model = options.models[0] if options.models else "mock-model"
        self.call_ids = itertools.count()
        self.controls = Controls(token_delay=options.token_delay)
        created = int(time.time())
        listing = [
            {"id": m, "object": "model", "created": created, "owned_by": "mock"}
            for m in options.models
        ]
        self.models_body = orjson.dumps({"object": "list", "data": listing})
        self.shutting_down = False  # answers cut by our own shutdown are not client aborts

    async def shutdown(self, app: web.Application) -> None:
        self.shutting_down = True

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def models(self, request: web.Request) -> web.Response:
        denied = self.deny(request)
        if denied is not None:
            return denied
        return web.Response(body=self.models_body, content_type="application/json")

    def deny(self, request: web.Request) -> web.Response | None:
        if self.auth is None or request.headers.get("Authorization") == self.auth:
            return None
        return _error(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        state.open += 1
        state.peak_open = max(state.peak_open, state.open)
        try:
            return await self._chat(request)
        except asyncio.CancelledError:
            if _client_gone(request) and not self.shutting_down:
                state.aborted += 1
            raise
        finally:
            state.open -= 1

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        denied = self.deny(request)
        if denied is not None:
            return denied
        try:
            body = _parse_body(await request.read())
            self.state.record({k.lower(): v for k, v in request.headers.items()}, body)
            controls = read_controls(request.headers, self.controls)
        except BadRequest as exc:
            return _error(400, exc.message)
        if controls.delay > 0:
            await asyncio.sleep(controls.delay)
        if controls.status is not None:
            return _error(controls.status, f"Injected failure (x-mock-status: {controls.status}).")
        try:
            plan = plan_chat(body, self.canned.tokens, self.call_ids, self.default_model)
        except BadRequest as exc:
            return _error(400, exc.message)
        if plan.stream:
            return await self._stream(request, plan, controls)
        return await self._complete(request, plan, controls)

    async def _complete(
        self, request: web.Request, plan: Plan, controls: Controls
    ) -> web.StreamResponse:
        """Waits as long as generating would take, then answers in one JSON body."""
        generating = controls.token_delay * max(0, plan.completion_tokens - 1)
        wait = self.options.first_token_delay + generating
        if wait > 0:
            await asyncio.sleep(wait)
        if controls.die_after is not None:
            self.state.killed += 1
            _kill(request)
        return web.Response(
            body=completion_body(plan, not controls.no_usage), content_type="application/json"
        )

    async def _stream(
        self, request: web.Request, plan: Plan, controls: Controls
    ) -> web.StreamResponse:
        """SSE like vLLM: role chunk, a chunk per token, finish chunk, usage chunk, ``[DONE]``."""
        usage_null = plan.include_usage and not controls.no_usage
        head = chunk_head(new_id(), int(time.time()), plan.model)
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        try:
            await resp.prepare(request)
            if self.options.first_token_delay > 0:
                await asyncio.sleep(self.options.first_token_delay)
            await resp.write(head + self.canned.role(usage_null))
            if not await self._write_tokens(request, resp, plan, head, usage_null, controls):
                return resp
            await resp.write(head + finish_body(plan, usage_null))
            if usage_null:
                await resp.write(usage_chunk(plan, head))
            await resp.write(DONE)
        except ConnectionResetError:  # the client left (without handler cancellation)
            if not self.shutting_down:
                self.state.aborted += 1
        return resp

    async def _write_tokens(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        plan: Plan,
        head: bytes,
        usage_null: bool,
        controls: Controls,
    ) -> bool:
        """Writes the token chunks ``token_delay`` apart; False when ``x-mock-die-after`` cut it."""
        delay, limit = controls.token_delay, controls.die_after
        for sent, chunk in enumerate(token_chunks(plan, head, usage_null, self.canned)):
            if sent == limit:
                break
            if sent and delay > 0:
                await asyncio.sleep(delay)
            await resp.write(chunk)
        if limit is None:
            return True
        self.state.killed += 1
        _kill(request)
        return False


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    if "messages" not in body:
        raise BadRequest("`messages` is required.")
    return body
