"""A Codex CLI session through the gateway, as Codex CLI 0.171 (a custom provider with
``wire_api = "responses"``) drives it: its exact request shape (developer messages,
``store: false``, ``include: ["reasoning.encrypted_content"]``, ``reasoning.summary``,
``prompt_cache_key``, function tools beside a ``namespace`` tool and a hosted ``web_search``
tool, ``Accept-Encoding: zstd,gzip``), its reading of the stream (the ``data`` of each event,
``response.output_item.done`` items, ``response.completed`` last), and a two-step tool loop
against a scripted worker: the worker asks for a file through the agent's namespaced tool, the
agent sends the file back with the whole conversation, the worker answers from it."""

from __future__ import annotations

import copy
import json
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.mock_worker import MockState
from gateway.server import Server
from tests.dialects.test_responses import CODEX
from tests.fakes import FakeUpstream, chunk, sse
from tests.proxy.responses_support import bearer, responses_yaml, usage_by_api

NOTES = "Deploy on Friday."
HEADERS = {
    "Accept": "text/event-stream",
    "Accept-Encoding": "zstd,gzip",
    "Content-Type": "application/json",
    "originator": "codex_exec",
    "session_id": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    "User-Agent": "codex_exec/0.171.0 (Linux; x86_64)",
}


async def worker(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Turn one: think, then read notes.txt through the agent's tool; turn two: answer from
    the tool's output."""
    last = body["messages"][-1]
    if last["role"] != "tool":
        call = {"index": 0, "id": "call_notes", "type": "function",
                "function": {"name": "mcp__files__read_file", "arguments": ""}}  # fmt: skip
        events = [
            chunk({"role": "assistant", "reasoning_content": "I need the file."}),
            chunk({"tool_calls": [call]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"notes.txt"}'}}]}),
            chunk({}, "tool_calls"),
        ]
    else:
        events = [chunk({"role": "assistant", "content": "notes.txt says: "}),
                  chunk({"content": last["content"]}), chunk({}, "stop")]  # fmt: skip
    usage = {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}
    return await sse(request, [*events, chunk(None, usage=usage), b"data: [DONE]\n\n"])  # type: ignore[arg-type]


async def codex_turn(
    server: Server, body: dict[str, Any]
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """POST as Codex does and read the stream as it does: every event's data, by its type."""
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/responses",
            data=orjson.dumps(body),
            headers=HEADERS | bearer(),
        ) as r,
    ):
        assert r.status == 200, await r.text()
        headers = dict(r.headers)
        raw = await r.read()
    events = [
        json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")
    ]
    return headers, events


async def test_a_codex_tool_loop(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    fake.script = worker
    model = '  gw-coder: {"upstreams": ["fake"], "upstream_model": "org/coder"}\n'
    yaml = responses_yaml(mock[0], fake.url).replace("models:\n", "models:\n" + model)
    server = await gateway_factory(yaml)
    body = copy.deepcopy(CODEX)

    headers, events = await codex_turn(server, body)
    assert headers["x-gateway-dropped-tools"] == "web_search"
    assert "Content-Encoding" not in headers  # nothing compressed the client did not ask for
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [item["type"] for item in done] == ["reasoning", "function_call"]
    read = done[1]
    assert (read["namespace"], read["name"], read["arguments"]) == (
        "mcp__files__",
        "read_file",
        '{"path":"notes.txt"}',
    )
    sent = fake.seen[-1].body
    assert sent["model"] == "org/coder" and sent["stream"] is True
    assert sent["prompt_cache_key"] == CODEX["prompt_cache_key"]
    assert [t["function"]["name"] for t in sent["tools"]] == [
        "shell_command",
        "update_plan",
        "mcp__files__read_file",
    ]
    assert sent["messages"][0]["role"] == "system"

    # Codex sends the whole conversation again: what it got back, and the tool's output.
    body["input"] += [*done, {"type": "function_call_output", "call_id": read["call_id"],
                              "output": NOTES}]  # fmt: skip
    _, events = await codex_turn(server, body)
    assert events[-1]["type"] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == f"notes.txt says: {NOTES}"
    completed = events[-1]["response"]
    assert completed["usage"]["input_tokens"] == 40 and completed["store"] is False
    messages = fake.seen[-1].body["messages"]
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "mcp__files__read_file"
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_notes", "content": NOTES}
    by_api = await usage_by_api(server, 2)
    assert by_api["responses"]["requests"] == 2 and by_api["responses"]["inputTokens"] == 80
