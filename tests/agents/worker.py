"""A scripted OpenAI-compatible worker for the real-agent tests: an aiohttp server on loopback
that answers ``POST /v1/chat/completions`` as vLLM does (whole answers, or SSE chunks with
``reasoning_content``, ``tool_calls`` fragments, a finish chunk, the usage chunk when asked,
``[DONE]``), deciding each answer from the conversation it is sent, and recording every request.

The conversation decides rather than a counter, so a request the agent sends on the side (or
again) gets the answer its conversation calls for."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Call:
    """A tool call the worker makes."""

    name: str
    arguments: dict[str, Any]
    id: str = "call_1"


@dataclass(frozen=True)
class Reply:
    """What the worker answers: reasoning first, then text, then tool calls."""

    text: str = ""
    reasoning: str = ""
    calls: tuple[Call, ...] = ()


Plan = Callable[[dict[str, Any]], Reply]


@dataclass
class ScriptedWorker:
    plan: Plan
    seen: list[dict[str, Any]] = field(default_factory=list)  # every chat body, in order
    paths: list[str] = field(default_factory=list)  # every request's method and path
    port: int = 0
    _runner: web.AppRunner | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(f"{request.method} {request.path}")
        if request.method != "POST" or request.path != "/v1/chat/completions":
            return web.json_response({"error": {"message": "not served"}}, status=404)
        body = orjson.loads(await request.read())
        self.seen.append(body)
        reply = self.plan(body)
        answer_id = f"chatcmpl-agent{next(self._ids)}"
        if body.get("stream"):
            return await self._stream(request, body, reply, answer_id)
        return web.json_response(_whole(body, reply, answer_id))

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: Reply, answer_id: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in _chunks(body, reply, answer_id):
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _usage(body: dict[str, Any], reply: Reply) -> dict[str, int]:
    prompt = len(orjson.dumps(body.get("messages"))) // 4
    completion = 1 + (len(reply.text) + len(reply.reasoning)) // 4 + 10 * len(reply.calls)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish(reply: Reply) -> str:
    return "tool_calls" if reply.calls else "stop"


def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
        }
        for call in reply.calls
    ]


def _whole(body: dict[str, Any], reply: Reply, answer_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.calls:
        message["tool_calls"] = _tool_calls(reply)
    return {
        "id": answer_id,
        "object": "chat.completion",
        "created": 1700000000,
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply)}],
        "usage": _usage(body, reply),
    }


def _chunks(body: dict[str, Any], reply: Reply, answer_id: str) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": answer_id,
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": body.get("model"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"reasoning_content": piece}) for piece in _pieces(reply.reasoning)]
    out += [chunk({"content": piece}) for piece in _pieces(reply.text)]
    for index, call in enumerate(reply.calls):
        head = {"id": call.id, "type": "function", "index": index}
        out.append(
            chunk({"tool_calls": [head | {"function": {"name": call.name, "arguments": ""}}]})
        )
        arguments = orjson.dumps(call.arguments).decode()
        for piece in _pieces(arguments, 7):
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    out.append(chunk({}, _finish(reply)))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        out.append(chunk({}) | {"choices": [], "usage": _usage(body, reply)})
    return out


def _pieces(text: str, size: int = 5) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]
