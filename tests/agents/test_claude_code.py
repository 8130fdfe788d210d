"""Claude Code, as shipped (the pinned npm release), run for real and non-interactively
(``claude -p … --output-format json``) against the gateway in front of a scripted worker: whole
tool loops (the worker asks for a file through the agent's ``Read`` tool, or has its ``Bash``
tool write one, then answers with what came back), the usage recorded for the key, a key's
limit refusing the loop midway, and nothing reaching anything but the gateway."""

from __future__ import annotations

import pathlib
import re
from typing import Any

from gateway.server import Server
from tests.agents.support import (
    AGENT_KEY,
    MODEL,
    TIGHT_KEY,
    Recorder,
    Run,
    Trap,
    Workspace,
    agent,
    assert_chat_a_strict_template_takes,
    keep_fixture,
    offline_env,
    run,
    settled_usage,
    tool_results,
)
from tests.agents.worker import Call, Reply, ScriptedWorker

SECRET = "the code is 4817"


async def claude(
    through: Recorder, place: Workspace, trap: Trap, prompt: str, *flags: str, key: str = AGENT_KEY
) -> Run:
    env = offline_env(place.home, trap) | {
        "ANTHROPIC_BASE_URL": through.url,
        "ANTHROPIC_API_KEY": key,
        "ANTHROPIC_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,  # background work asks for the same model
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",  # a refusal shows at once, not after backoffs
    }
    argv = [str(agent("claude")), "-p", prompt, "--output-format", "json", *flags]
    return await run(argv, place.work, env)


def read_then_answer(path: pathlib.Path) -> Any:
    """The worker thinks, asks for the file through ``Read``, then answers with its code."""

    def plan(body: dict[str, Any]) -> Reply:
        results = tool_results(body)
        if not results:
            return Reply(
                reasoning="The user asks about a file; read it first.",
                calls=(Call("Read", {"file_path": str(path)}, id="call_read_1"),),
            )
        found = re.search(r"code is (\d+)", str(results[-1]["content"]))
        return Reply(text=f"The code in notes.txt is {found.group(1) if found else 'missing'}.")

    return plan


async def test_a_read_tool_loop(
    agent_gateway: Server,
    recorder: Recorder,
    worker: ScriptedWorker,
    trap: Trap,
    tmp_path: pathlib.Path,
) -> None:
    place = Workspace(tmp_path, {"notes.txt": SECRET + "\n"}).make()
    worker.plan = read_then_answer(place.work / "notes.txt")
    done = await claude(
        recorder, place, trap, "What is the code in notes.txt?", "--allowedTools", "Read"
    )
    keep_fixture("claude_code_read_loop", recorder, tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    outcome = done.json()
    assert outcome["is_error"] is False and outcome["num_turns"] == 2, outcome
    assert outcome["result"] == "The code in notes.txt is 4817."
    # the worker was asked twice: the question, then the question with the file's content
    assert worker.paths == ["POST /v1/chat/completions"] * 2
    first, second = worker.seen
    assert not tool_results(first)
    [result] = tool_results(second)
    assert result["tool_call_id"] == "call_read_1" and SECRET in result["content"]
    for body in worker.seen:
        assert_chat_a_strict_template_takes(body)
    assert first["chat_template_kwargs"] == {"enable_thinking": True}
    assert first["max_tokens"] == 8192  # it asked 32,000: the model's max_output_tokens
    assert first["reasoning_effort"] in ("low", "medium", "high")
    assert '"session_id"' in first["user"]  # the affinity key: Claude Code's session
    assert {"Read", "Bash"} <= {tool["function"]["name"] for tool in first["tools"]}
    # usage recorded for the key: both requests, the worker's own counts
    totals = await settled_usage(agent_gateway, AGENT_KEY, "agent", 2)
    assert totals["requests"] == 2 and totals["errors"] == 0
    assert totals["completionTokens"] > 0 and totals["promptTokens"] > 0
    assert trap.connections == 0, f"the agent tried to reach {trap.asked}"
    assert_sent_as_shipped(recorder.sent)


def assert_sent_as_shipped(sent: list[dict[str, Any]]) -> None:
    """What Claude Code sent is what the gateway must take today (so these assertions fail if
    a new release stops sending it, and the fixtures need a look), and it took the worker's
    thinking: the next turn sends the thinking block back with the gateway's signature."""
    assert [r["path"] for r in sent] == ["/v1/messages?beta=true"] * 2
    first, second = (r["body"] for r in sent)
    assert "interleaved-thinking" in sent[0]["headers"]["anthropic-beta"]
    assert first["max_tokens"] == 32000 and first["thinking"]["type"] in ("adaptive", "enabled")
    assert "system" in [m["role"] for m in first["messages"][1:]]
    assert "context_management" in first and "effort" in first["output_config"]
    assistant = second["messages"][-2]
    kinds = {block["type"]: block for block in assistant["content"]}
    assert kinds["thinking"]["signature"] == "gateway-unsigned"
    assert kinds["thinking"]["thinking"] == "The user asks about a file; read it first."
    assert kinds["tool_use"]["id"] == "call_read_1"


async def test_a_bash_tool_writes_a_file(
    recorder: Recorder, worker: ScriptedWorker, trap: Trap, tmp_path: pathlib.Path
) -> None:
    place = Workspace(tmp_path).make()
    command = "printf 'written through the gateway' > made.txt && echo made"

    def plan(body: dict[str, Any]) -> Reply:
        results = tool_results(body)
        if not results:
            call = Call("Bash", {"command": command, "description": "Write made.txt"}, "call_b")
            return Reply(text="I will write the file.", calls=(call,))
        return Reply(text=f"Done; the command said: {results[-1]['content'].strip()}")

    worker.plan = plan
    done = await claude(recorder, place, trap, "Make made.txt", "--allowedTools", "Bash")
    assert done.returncode == 0, done.stderr + done.stdout
    assert (place.work / "made.txt").read_text() == "written through the gateway"
    assert done.json()["result"] == "Done; the command said: made"
    assert len(worker.seen) == 2 and trap.connections == 0


async def test_the_key_s_rate_limit_stops_the_loop(
    agent_gateway: Server,
    recorder: Recorder,
    worker: ScriptedWorker,
    trap: Trap,
    tmp_path: pathlib.Path,
) -> None:
    """The ``tight`` key may send one request a minute: the tool runs, its result is refused."""
    place = Workspace(tmp_path, {"notes.txt": SECRET + "\n"}).make()
    worker.plan = read_then_answer(place.work / "notes.txt")
    done = await claude(
        recorder,
        place,
        trap,
        "What is the code in notes.txt?",
        "--allowedTools",
        "Read",
        key=TIGHT_KEY,
    )
    outcome = done.json()
    assert outcome["is_error"] is True and outcome.get("api_error_status") == 429, outcome
    assert "4817" not in outcome.get("result", "")
    assert len(worker.seen) == 1  # the second turn never reached the worker
    totals = await settled_usage(agent_gateway, TIGHT_KEY, "tight", 1)
    assert totals["requests"] == 1
    assert trap.connections == 0
