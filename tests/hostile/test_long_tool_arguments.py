"""Long tool-call arguments cost the Messages relay time quadratic in their length.

A streamed ``/v1/messages`` answer relays a tool call's arguments as they come
(``input_json_delta``), and kept them by ``tool.arguments += fragment``: a string attribute, which
CPython copies whole at every fragment (its in-place growth applies to local names only).
Measured on that line alone: 250 KB in 4-character fragments 2.4 s, 1 MB 52 s; 2 MB in
64-character fragments 10.6 s, all of it on the process's event loop. A client asks for it: a
coding agent's ``Write`` of a large file is one tool call whose arguments are the file.

Expected: the fragments kept as a list, joined only when needed (time linear in the length).

A real gateway before a real aiohttp worker that streams one tool call of 2 MiB of arguments in
64-byte fragments.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream, chunk

SIZE = 2 * 1024 * 1024
PIECE = 64


async def _writing(request: web.Request, body: Any) -> web.StreamResponse:
    """One tool call ``write`` whose ``content`` argument is SIZE bytes, 64 at a time."""
    answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await answer.prepare(request)

    def call(arguments: str, **head: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": 0, **head, "function": {"arguments": arguments}}]}

    first = {"id": "call_1", "type": "function"}
    await answer.write(chunk(call('{"content": "', **first, name="write")))
    events = [chunk(call("x" * PIECE)) for _ in range(SIZE // PIECE)]
    for at in range(0, len(events), 256):
        await answer.write(b"".join(events[at : at + 256]))
    await answer.write(chunk(call('"}')))
    usage = {"prompt_tokens": 5, "completion_tokens": SIZE // 4, "total_tokens": SIZE // 4 + 5}
    await answer.write(chunk({}, "tool_calls") + chunk(None, usage=usage) + b"data: [DONE]\n\n")
    return answer


async def test_a_tool_call_with_long_arguments_is_relayed_in_linear_time(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """Observed (before): over 10 s of the gateway's loop for the one call. Expected: a few
    seconds at most, the whole ``input_json_delta`` sequence relayed."""
    fake.script = _writing
    text = gateway_yaml({"up": fake.url}, {"m": {"upstreams": ["up"]}})
    server: Server = await gateway_factory(text.replace("idle: 5", "idle: 60"))
    body = {
        "model": "m",
        "max_tokens": 600000,
        "stream": True,
        "messages": [{"role": "user", "content": "write the file"}],
        "tools": [{"name": "write", "input_schema": {"type": "object"}}],
    }
    headers = {**AUTH, "anthropic-version": "2023-06-01"}
    started = time.monotonic()
    sent = 0
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{server.port}/v1/messages", json=body, headers=headers) as r,
    ):
        async for line in r.content:
            if line.startswith(b"data: ") and b"input_json_delta" in line:
                sent += len(orjson.loads(line[6:])["delta"]["partial_json"])
    took = time.monotonic() - started
    assert r.status == 200 and sent >= SIZE, (r.status, sent)
    assert took < 6, f"the stream took {took:.1f} s"
