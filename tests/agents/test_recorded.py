"""The requests the real agents sent (recorded by ``AGENTS_RECORD=1`` runs of the agent tests,
scrubbed, in ``fixtures/``) replayed through the gateway with the official SDKs, so what today's
agents send is tested where node is absent too: a whole Claude Code tool loop, turn by turn, its
``count_tokens`` call, and a whole Codex CLI tool loop."""

from __future__ import annotations

import json
from typing import Any

from anthropic.types.beta import BetaThinkingBlock, BetaToolUseBlock

from gateway.server import Server
from tests.agents.support import (
    AGENT_KEY,
    FIXTURES,
    assert_chat_a_strict_template_takes,
    responses_served,
    tool_results,
)
from tests.agents.worker import Call, Reply, ScriptedWorker
from tests.clients import claude, sdk

READ_LOOP = FIXTURES / "claude_code_read_loop.json"
CODEX_LOOP = FIXTURES / "codex_shell_loop.json"


def recorded(name: str) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text())["requests"]
    return requests


def sdk_arguments(request: dict[str, Any]) -> dict[str, Any]:
    """A recorded request as the arguments of the SDK's beta ``messages`` methods."""
    body = dict(request["body"])
    body.pop("stream", None)
    named = {key: body.pop(key) for key in ("model", "max_tokens", "messages")}
    betas = request["headers"]["anthropic-beta"].split(",")
    return named | {"betas": betas, "extra_body": body}


async def test_claude_code_s_tool_loop_replayed(
    agent_gateway: Server, worker: ScriptedWorker
) -> None:
    def plan(body: dict[str, Any]) -> Reply:
        if not tool_results(body):
            call = Call("Read", {"file_path": "/tmp/agent/work/notes.txt"}, "call_read_1")
            return Reply(reasoning="Read it first.", calls=(call,))
        return Reply(text="The code in notes.txt is 4817.")

    worker.plan = plan
    client = claude(agent_gateway, api_key=AGENT_KEY)
    first, second = recorded(READ_LOOP.name)
    async with client.beta.messages.stream(**sdk_arguments(first)) as stream:
        asked = await stream.get_final_message()
    thinking, call = asked.content
    assert isinstance(thinking, BetaThinkingBlock) and isinstance(call, BetaToolUseBlock)
    assert (thinking.thinking, thinking.signature) == ("Read it first.", "gateway-unsigned")
    assert (call.name, call.input, asked.stop_reason) == (
        "Read",
        {"file_path": "/tmp/agent/work/notes.txt"},
        "tool_use",
    )
    async with client.beta.messages.stream(**sdk_arguments(second)) as stream:
        answered = await stream.get_final_message()
    assert [block.type for block in answered.content] == ["text"]
    assert answered.content[0].text == "The code in notes.txt is 4817."  # type: ignore[union-attr]
    for body in worker.seen:
        assert_chat_a_strict_template_takes(body)
    [result] = tool_results(worker.seen[1])
    assert "the code is 4817" in result["content"]


async def test_claude_code_s_count_tokens_replayed(agent_gateway: Server) -> None:
    """As Claude Code counts: the conversation and its tools, betas on, ``?beta=true``."""
    first = sdk_arguments(recorded(READ_LOOP.name)[0])
    extra = first.pop("extra_body")
    first.pop("max_tokens")
    tools = extra.pop("tools")
    client = claude(agent_gateway, api_key=AGENT_KEY)
    raw = await client.beta.messages.with_raw_response.count_tokens(
        **first, tools=tools, system=extra["system"]
    )
    counted = await raw.parse()
    # no worker counts (the scripted one serves no /tokenize): the gateway's estimate
    assert raw.headers["X-Gateway-Token-Count"] == "estimate"
    assert 10_000 < counted.input_tokens < 40_000  # a ~100 KB request


async def test_codex_s_tool_loop_replayed(agent_gateway: Server, worker: ScriptedWorker) -> None:
    """Codex's two requests (developer messages, namespace and hosted tools, ``store: false``,
    ``include``, ``reasoning.summary``, ``prompt_cache_key``) through ``/v1/responses``; each
    stream ends with ``response.completed``, as the agent waits for."""
    await responses_served(agent_gateway)

    def plan(body: dict[str, Any]) -> Reply:
        if not tool_results(body):
            call = Call("exec_command", {"cmd": "cat notes.txt"}, "call_shell_1")
            return Reply(reasoning="Use the shell.", calls=(call,))
        return Reply(text="The code in notes.txt is 4817.")

    worker.plan = plan
    client = sdk(agent_gateway, api_key=AGENT_KEY)
    finals = []
    for request in recorded(CODEX_LOOP.name):
        body = dict(request["body"])
        model, _ = body.pop("model"), body.pop("stream")
        stream = await client.responses.create(model=model, stream=True, extra_body=body)
        events = [event async for event in stream]
        assert events[-1].type == "response.completed", [e.type for e in events]
        finals.append(events[-1].response)  # type: ignore[union-attr]
    calls = [item for item in finals[0].output if item.type == "function_call"]
    assert [(c.name, c.call_id) for c in calls] == [("exec_command", "call_shell_1")]
    assert finals[1].output_text == "The code in notes.txt is 4817."
    [result] = tool_results(worker.seen[1])
    assert "the code is 4817" in result["content"]
