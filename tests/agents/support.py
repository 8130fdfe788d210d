"""What the real-agent tests share: where the agents are installed (``.agents/``, by the test
command, at the versions of ``agents.txt``), running one as a subprocess with a deadline, a trap
on the port the agents' proxy variables point to (nothing may reach the internet: every
connection there is counted, and none is expected), the gateway's config, and reading the usage
a key recorded."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import shutil
import signal
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.auth.keys import sha256_hex
from gateway.server import Server
from tests.conftest import gateway_yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
INSTALLED = ROOT / ".agents"
PINNED = pathlib.Path(__file__).with_name("agents.txt")
BINARIES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex"}
SECONDS = 60.0  # the longest one agent run may take

MODEL = "qwen3-coder"  # what the agents ask for
UPSTREAM_MODEL = "Qwen/Qwen3-Coder-30B-A3B-Instruct"  # what the worker is sent
AGENT_KEY = "sk-agent-key-0123456789abcdefghijkl"
TIGHT_KEY = "sk-agent-tight-0123456789abcdefghij"  # one request a minute


def pinned() -> dict[str, str]:
    """``{package: version}`` as ``agents.txt`` pins them."""
    out = {}
    for line in PINNED.read_text().split():
        name, _, version = line.rpartition("@")
        out[name] = version
    return out


def agent(binary: str) -> pathlib.Path:
    """The installed agent's command; skipped (loudly) only where node is absent."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(f"NOT RUN: node/npm are missing, so the real {binary} cannot be installed")
    package = BINARIES[binary]
    manifest = INSTALLED / "node_modules" / package / "package.json"
    path = INSTALLED / "node_modules" / ".bin" / binary
    if not manifest.exists() or not path.exists():
        pytest.fail(f"{package} is not installed in .agents/; run scripts/test (it installs it)")
    version = json.loads(manifest.read_text())["version"]
    wanted = pinned()[package]
    if version != wanted:
        pytest.fail(f"{package} {version} is installed, {wanted} is pinned; run scripts/test")
    return path


@dataclass
class Trap:
    """A loopback port that counts the connections made to it, keeps the first line each sent
    (a proxy's ``CONNECT host:443``: what the agent tried to reach), and closes each."""

    port: int = 0
    connections: int = 0
    asked: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            line = await asyncio.wait_for(reader.readline(), 1.0)
            self.asked.append(line.decode(errors="replace").strip())
        except (TimeoutError, ConnectionError):
            self.asked.append("")
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> dict[str, Any]:
        parsed = json.loads(self.stdout)
        assert isinstance(parsed, dict), self.stdout
        return parsed


async def run(argv: list[str], cwd: pathlib.Path, env: dict[str, str]) -> Run:
    """The agent run to its end, at most ``SECONDS`` (then killed, with what it wrote)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its children go with it on a timeout
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), SECONDS)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = await process.communicate()
        pytest.fail(f"{argv[0]} ran past {SECONDS:g} s:\n{out.decode()}\n{err.decode()}")
    return Run(process.returncode or 0, out.decode(), err.decode(), loop.time() - started)


def offline_env(home: pathlib.Path, trap: Trap) -> dict[str, str]:
    """A bare environment: a fresh HOME, and every proxy variable on the trap (loopback, where
    the gateway is, excepted)."""
    node = shutil.which("node")
    dirs = [str(pathlib.Path(node).parent)] if node else []
    path = ":".join(dict.fromkeys([*dirs, "/usr/bin", "/bin"]))
    return {
        "PATH": path,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "HTTPS_PROXY": trap.url,
        "HTTP_PROXY": trap.url,
        "ALL_PROXY": trap.url,
        "https_proxy": trap.url,
        "http_proxy": trap.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def agents_yaml(worker_url: str, extra_models: dict[str, Any] | None = None) -> str:
    """A gateway with ``qwen3-coder`` on the scripted worker and two keys: ``agent`` and
    ``tight`` (one request a minute)."""
    models = {
        MODEL: {
            "upstreams": ["worker"],
            "upstream_model": UPSTREAM_MODEL,
            "apis": ["chat", "responses"],
            "max_output_tokens": 8192,
        }
    }
    keys = (
        "keys:\n  static:\n"
        f"    - {{id: agent, owner: agents, sha256: '{sha256_hex(AGENT_KEY)}'}}\n"
        f"    - {{id: tight, owner: agents, sha256: '{sha256_hex(TIGHT_KEY)}', rpm_limit: 1}}\n"
    )
    return gateway_yaml({"worker": worker_url}, models | (extra_models or {}), extra=keys)


async def responses_served(server: Server) -> None:
    """Skip unless the gateway has the Responses route (without a key: 401, not 404)."""
    url = f"http://127.0.0.1:{server.port}/v1/responses"
    async with aiohttp.ClientSession() as http, http.post(url, json={}) as answer:
        if answer.status == 404:
            pytest.skip("NOT RUN: this gateway does not serve POST /v1/responses (Codex's API)")


async def usage(server: Server, key: str, key_id: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.port}/api/keys/{key_id}/usage?days=1"
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        body: dict[str, Any] = await answer.json()
        return body


async def settled_usage(server: Server, key: str, key_id: str, requests: int) -> dict[str, Any]:
    """The key's usage totals once ``requests`` requests are settled (settlement is written
    just after each answer), within 10 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        totals: dict[str, Any] = (await usage(server, key, key_id))["totals"]
        if totals["requests"] >= requests or loop.time() > deadline:
            return totals
        await asyncio.sleep(0.05)  # polling a condition with a deadline, not waiting blind


@dataclass
class Workspace:
    """A temporary working directory and HOME for one agent run."""

    root: pathlib.Path
    files: dict[str, str] = field(default_factory=dict)

    @property
    def work(self) -> pathlib.Path:
        return self.root / "work"

    @property
    def home(self) -> pathlib.Path:
        return self.root / "home"

    def make(self) -> Workspace:
        self.work.mkdir(parents=True)
        self.home.mkdir(parents=True)
        for name, text in self.files.items():
            (self.work / name).write_text(text)
        return self


@dataclass
class Recorder:
    """A pass-through between an agent and the gateway that keeps what the agent sent (method,
    path with its query, the headers that say what the agent is, the JSON body) and streams the
    gateway's answers back as they come."""

    target: str  # the gateway's base URL
    sent: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        raw = await request.read()
        self.sent.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": {k.lower(): v for k, v in request.headers.items() if k.lower() in SHOWN},
                "body": _json_or_size(raw),
            }
        )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with self._http.request(
            request.method, self.target + request.path_qs, data=raw, headers=headers
        ) as answer:
            out = web.StreamResponse(status=answer.status)
            out.headers.update({k: v for k, v in answer.headers.items() if k.lower() not in HOP})
            await out.prepare(request)
            async for piece in answer.content.iter_any():
                await out.write(piece)
            await out.write_eof()
            return out


# Headers a recording keeps (never a credential), and those a hop does not pass on.
SHOWN = {"anthropic-beta", "anthropic-version", "content-type", "accept", "accept-encoding"}
HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


def _json_or_size(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:  # a compressed or binary body: only its size is kept
        return {"bytes": len(raw)}


FIXTURES = pathlib.Path(__file__).with_name("fixtures")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


def scrubbed(value: Any, place: pathlib.Path) -> Any:
    """A recording with nothing of this machine or run in it: the temporary directory becomes
    ``/tmp/agent`` (``-tmp-agent`` where its other characters are dashes), ids (uuids, 64-hex device
    ids) become zeros."""
    text = json.dumps(value, ensure_ascii=False).replace(str(place), "/tmp/agent")
    dashed = re.sub(r"[^A-Za-z0-9]", "-", str(place))  # Claude Code's project directory name
    text = text.replace(dashed, "-tmp-agent")
    text = _UUID.sub("00000000-0000-0000-0000-000000000000", text)
    return json.loads(_HEX64.sub("0" * 64, text))


def keep_fixture(name: str, recorder: Recorder, place: pathlib.Path) -> None:
    """``AGENTS_RECORD=1``: write what the agent sent to ``fixtures/<name>.json`` (on purpose
    only: the fixture tests replay these without node)."""
    if os.environ.get("AGENTS_RECORD") != "1":
        return
    FIXTURES.mkdir(exist_ok=True)
    record = {"agent": pinned(), "requests": scrubbed(recorder.sent, place)}
    path = FIXTURES / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False, sort_keys=True) + "\n")


ANTHROPIC_ONLY = ("thinking", "context_management", "output_config", "cache_control", "metadata")


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool messages of an OpenAI chat body."""
    return [m for m in body["messages"] if m["role"] == "tool"]


def assert_chat_a_strict_template_takes(body: dict[str, Any]) -> None:
    """What reached the worker is plain OpenAI chat: its model's name, one system message and
    only first, turns of user and assistant (tool results after their call), nothing of
    Anthropic's."""
    assert body["model"] == UPSTREAM_MODEL and body["stream"] is True
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "system" and "system" not in roles[1:], roles
    assert roles[1] == "user" and set(roles) <= {"system", "user", "assistant", "tool"}
    assert not set(ANTHROPIC_ONLY) & body.keys(), body.keys()
    assert b"cache_control" not in repr(body).encode()
    assert "x-anthropic-billing-header" not in body["messages"][0]["content"]
