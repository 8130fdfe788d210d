"""Codex CLI, as shipped (the pinned npm release), run for real and non-interactively
(``codex exec``, a custom provider with ``wire_api = "responses"``) against the gateway in front
of a scripted worker: a whole tool loop (the worker has the agent's shell tool read a file and
write another, then answers with what came back), the usage recorded for the key, a key's limit
refusing the loop midway, and nothing reaching anything but the gateway.

Codex speaks the Responses API only: where the gateway does not serve ``POST /v1/responses``
these tests are skipped, saying so."""

from __future__ import annotations

import pathlib
import re
from typing import Any

from gateway.server import Server
from tests.agents.support import (
    AGENT_KEY,
    MODEL,
    TIGHT_KEY,
    UPSTREAM_MODEL,
    Recorder,
    Run,
    Trap,
    Workspace,
    agent,
    keep_fixture,
    offline_env,
    responses_served,
    run,
    settled_usage,
    tool_results,
)
from tests.agents.worker import Call, Reply, ScriptedWorker

SECRET = "the code is 4817"
COMMAND = "cat notes.txt && printf 'written through the gateway' > made.txt"
CONFIG = """\
model = "{model}"
model_provider = "gateway"
check_for_update_on_startup = false

[model_providers.gateway]
name = "LLM gateway"
base_url = "{base_url}/v1"
env_key = "GATEWAY_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[features]
plugins = false   # else it fetches plugin lists from github.com and chatgpt.com

[analytics]
enabled = false
"""


async def codex(
    through: Recorder, place: Workspace, trap: Trap, prompt: str, key: str = AGENT_KEY
) -> tuple[Run, str]:
    """The run, and the agent's last message (``-o``)."""
    home = place.home / ".codex"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(CONFIG.format(model=MODEL, base_url=through.url))
    last = place.root / "last-message.txt"
    env = offline_env(place.home, trap) | {"CODEX_HOME": str(home), "GATEWAY_API_KEY": key}
    argv = [str(agent("codex")), "exec", "--strict-config", "--skip-git-repo-check", "--ephemeral"]
    argv += ["--dangerously-bypass-approvals-and-sandbox", "--color", "never", "-o", str(last)]
    done = await run([*argv, prompt], place.work, env)
    return done, last.read_text() if last.exists() else ""


def shell_then_answer(body: dict[str, Any]) -> Reply:
    """The worker thinks, has the shell read notes.txt and write made.txt, then answers."""
    results = tool_results(body)
    if not results:
        call = Call("exec_command", {"cmd": COMMAND}, id="call_shell_1")
        return Reply(reasoning="Read the notes with the shell.", calls=(call,))
    found = re.search(r"code is (\d+)", str(results[-1]["content"]))
    return Reply(text=f"The code in notes.txt is {found.group(1) if found else 'missing'}.")


async def test_a_shell_tool_loop(
    agent_gateway: Server,
    recorder: Recorder,
    worker: ScriptedWorker,
    trap: Trap,
    tmp_path: pathlib.Path,
) -> None:
    await responses_served(agent_gateway)
    place = Workspace(tmp_path, {"notes.txt": SECRET + "\n"}).make()
    worker.plan = shell_then_answer
    done, last = await codex(recorder, place, trap, "What is the code in notes.txt?")
    keep_fixture("codex_shell_loop", recorder, tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert last.strip() == "The code in notes.txt is 4817."
    assert (place.work / "made.txt").read_text() == "written through the gateway"
    assert [r["path"] for r in recorder.sent] == ["/v1/responses"] * 2
    assert worker.paths == ["POST /v1/chat/completions"] * 2
    first, second = worker.seen
    assert first["model"] == UPSTREAM_MODEL and first["stream"] is True
    assert "exec_command" in {tool["function"]["name"] for tool in first["tools"]}
    assert not {"input", "include", "store", "reasoning"} & first.keys()
    [result] = tool_results(second)
    assert result["tool_call_id"] == "call_shell_1" and SECRET in result["content"]
    totals = await settled_usage(agent_gateway, AGENT_KEY, "agent", 2)
    assert totals["requests"] == 2 and totals["errors"] == 0
    assert trap.connections == 0, f"the agent tried to reach {trap.asked}"


async def test_the_key_s_rate_limit_stops_the_loop(
    agent_gateway: Server,
    recorder: Recorder,
    worker: ScriptedWorker,
    trap: Trap,
    tmp_path: pathlib.Path,
) -> None:
    """The ``tight`` key may send one request a minute: the command runs, its output is
    refused, and the agent says it failed."""
    await responses_served(agent_gateway)
    place = Workspace(tmp_path, {"notes.txt": SECRET + "\n"}).make()
    worker.plan = shell_then_answer
    done, last = await codex(recorder, place, trap, "What is the code?", key=TIGHT_KEY)
    assert done.returncode != 0 and "4817" not in last
    assert "429 Too Many Requests" in done.stderr
    assert len(worker.seen) == 1
    assert (place.work / "made.txt").exists()  # the tool ran; its result was refused
    totals = await settled_usage(agent_gateway, TIGHT_KEY, "tight", 1)
    assert totals["requests"] == 1
    assert trap.connections == 0
