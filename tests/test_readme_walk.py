"""README.md, walked as a new user would: every shell and Python block, in order, against real
processes (``gateway run`` on the embedded default in an empty temp dir, as ``make run`` serves
it; the CLI; the SDKs; the Redis example with several workers), on free ports.

What the test substitutes, and nothing else: the ports (the default config and the Redis example
read ``GATEWAY_PORT``, ``GATEWAY_ADMIN_PORT`` and ``GATEWAY_MOCK_PORT``), ``.venv/bin/`` (the
virtualenv running the tests), the placeholders of keys (``sk_gw_…`` is the demo key the gateway
printed; ``sk_gw_k3f9a2c1_…`` and ``k3f9a2c1`` are the key and id printed by the ``keys create``
that the next comment names them after), and the test's own Redis for ``redis-server``.
``make test`` is not run (it is what runs this). A step fails the test when it exits non-zero,
or does not do what its text says (the checks in ``Walk.check``).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

from tests.redis_server import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = os.path.dirname(sys.executable)
KEY = re.compile(r"sk_gw_(k[0-9a-f]{7})_[0-9A-Za-z]{30}")
DEADLINE = 30.0


@dataclass
class Block:
    lang: str
    text: str


@dataclass
class Step:
    command: str
    note: str = ""


def blocks(text: str) -> list[Block]:
    """The fenced blocks, in order, their indentation (inside a list item) removed."""
    found = []
    for match in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL):
        indent = len(match.group(1))
        body = "".join(line[indent:] for line in match.group(3).splitlines(keepends=True))
        found.append(Block(match.group(2), body))
    return found


def steps(script: str) -> list[Step]:
    """Commands of a shell block: continuation lines and here-documents joined; a trailing
    comment, and the comment lines under a command, are its note."""
    out: list[Step] = []
    lines = script.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            if out:
                out[-1].note += " " + line.strip().lstrip("#").strip()
            continue
        pieces = re.split(r"\s{2,}#\s", line, maxsplit=1)
        command, note = pieces[0], pieces[1] if len(pieces) == 2 else ""
        parts = [command.rstrip()]
        while parts[-1].endswith("\\"):
            parts.append(lines[i])
            i += 1
        heredoc = re.search(r"<<'(\w+)'", parts[0])
        if heredoc:
            while lines[i] != heredoc.group(1):
                parts.append(lines[i])
                i += 1
            parts.append(lines[i])
            i += 1
        out.append(Step("\n".join(parts), note.strip()))
    return out


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _post(url: str, key: str) -> tuple[int, str]:
    body = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(what: str, ready: object) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if ready():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} not ready within {DEADLINE} s")


@dataclass
class Walk:
    tmp: pathlib.Path
    redis_url: str
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    mock_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    demo: str = ""
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # placeholder id → key, id
    created: list[str] = field(default_factory=list)  # the last keys create's key
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server: subprocess.Popen[bytes] | None = None
    done: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PIP_"))}
        self.env = {
            **clean,
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_ADMIN_PORT": str(self.admin_port),
            "GATEWAY_MOCK_PORT": str(self.mock_port),
            "REDIS_URL": self.redis_url,
            "PIP_NO_INDEX": "1",  # `pip install` of what the test venv has: no download
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- substitutions ---------------------------------------------------------------------------
    def text(self, text: str) -> str:
        for old, new in ((8080, self.port), (9090, self.admin_port), (8001, self.mock_port)):
            text = re.sub(rf"(?<=[: ]){old}\b", str(new), text)
        text = text.replace(".venv/bin/", BIN + "/")
        for placeholder, (key, key_id) in self.keys.items():
            text = text.replace(f"sk_gw_{placeholder}_…", key).replace(placeholder, key_id)
        if self.demo:
            text = text.replace("sk_gw_…", self.demo)
        assert "…" not in text, f"a placeholder the walk cannot fill: {text}"
        return text

    # -- processes -------------------------------------------------------------------------------
    def spawn(self, argv: list[str], cwd: pathlib.Path, log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "wb") as stderr:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait(timeout=DEADLINE)
        self.server = None

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=DEADLINE)
            if proc.stdout is not None:
                proc.stdout.close()

    def sh(self, command: str) -> str:
        done = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, env=self.env, capture_output=True, timeout=120
        )
        out, err = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{out}\n{err}"
        return out

    # -- the steps -------------------------------------------------------------------------------
    def make_run(self) -> None:
        """``make run``: the embedded default in a directory without a config."""
        empty = self.tmp / "fresh"
        empty.mkdir()
        self.server = self.spawn([f"{BIN}/gateway", "run"], empty, "make-run.log")
        printed: list[str] = []
        reader = threading.Thread(
            target=lambda: printed.extend(iter(self.server.stdout.readline, b"")),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        wait_until("the demo key", lambda: any(KEY.search(line.decode()) for line in printed))
        out = b"".join(printed).decode()
        self.demo = KEY.search(out).group(0)  # type: ignore[union-attr]
        first = (self.tmp / "make-run.log").read_text().splitlines()[0]
        assert "embedded default" in first, first
        curl = out[out.index("Try it:") + len("Try it:") :].strip()
        assert curl.startswith("curl"), out
        streamed = self.sh(curl)
        assert "data: [DONE]" in streamed and '"content"' in streamed, streamed
        self.done.append("make run")

    def background(self, command: str) -> None:
        argv = shlex.split(self.text(command))
        name = os.path.basename(argv[0])
        if argv[:2] == [f"{BIN}/gateway", "run"]:
            self.stop_server()  # the README says: stop `make run` first
            self.server = self.spawn(argv, ROOT, "gateway-run.log")
            ready = f"http://127.0.0.1:{self.admin_port}/readyz"
            wait_until("the gateway", lambda: _get(ready)[0] == 200)
        elif argv[:2] == [f"{BIN}/gateway", "mock-worker"]:
            self.spawn(argv, ROOT, "mock-worker.log")
            health = f"http://127.0.0.1:{self.mock_port}/health"
            wait_until("the mock worker", lambda: _get(health)[0] == 200)
        else:
            raise AssertionError(f"the walk does not know how to start {name}")
        self.done.append(" ".join(argv[:2]))

    def run(self, step: Step) -> None:
        command = step.command.strip()
        if command == "make test":
            return  # what runs this test
        if command == "make run":
            self.make_run()
        elif command.startswith("redis-server"):
            assert self.env["REDIS_URL"]  # the test's own Redis, on a free port
        elif command.startswith("export "):
            name, _, value = command[len("export ") :].partition("=")
            self.env[name] = self.sh(f"printf %s {value}")
        elif command.endswith("&"):
            self.background(command[:-1].strip())
        else:
            command = self.text(command)
            self.check(step, command, self.sh(command))

    def check(self, step: Step, command: str, out: str) -> None:
        """What the text around each command says it does."""
        self.done.append(command.split("\n")[0])
        if "keys create" in command:
            match = KEY.search(out)
            assert match and "only time the full key is shown" in out, out
            named = re.search(r"sk_gw_(k[0-9a-f]{7})_…", step.note)
            if named:
                self.keys[named.group(1)] = (match.group(0), match.group(1))
            self.created = [match.group(0)]
        elif "owners set" in command:
            plan = command.split("--plan")[1].split()[0]
            assert f"now on plan {plan}" in out, out
        elif "owners show" in command:
            assert re.search(r"^plan\s+pro \(set for this owner\)", out, re.M), out
            assert re.search(r"^keys\s+2 of 10 keys, 1 active", out, re.M), out
            assert re.search(r"^tokens\s+[1-9][\d,]* of 50,000 tokens", out, re.M), out
        elif "keys revoke" in command:
            key = next(k for k, i in self.keys.values() if i in command)
            status, body = _post(f"{self.base}/v1/chat/completions", key)
            assert "401 key_revoked" in step.note
            assert status == 401 and json.loads(body)["error"]["code"] == "key_revoked", body
        elif "keys list" in command:
            assert len(out.strip().splitlines()) == 3 and "REVOKED" in out, out
        elif "keys usage" in command:
            total = next(line for line in out.splitlines() if line.startswith("total"))
            assert total.split()[1] == "1", out  # the one call the SDK made
        elif "python - <<" in command or command.startswith("curl"):
            assert out.strip(), command
            if command.startswith("curl"):
                assert json.loads(out)["choices"][0]["message"]["content"], out
        elif "pip install" not in command:
            raise AssertionError(f"the walk has no check for: {command}")

    def python(self, code: str) -> None:
        script = self.tmp / f"example{len(self.done)}.py"
        script.write_text(self.text(code))
        done = subprocess.run(
            [sys.executable, str(script)], env=self.env, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode().strip(), f"{code} printed nothing"
        self.done.append("python")


@pytest.mark.timeout(300)
def test_the_readme_works_as_written(tmp_path: pathlib.Path, redis_url: str) -> None:
    walk = Walk(tmp_path, redis_url)
    try:
        for block in blocks(README.read_text(encoding="utf-8")):
            if block.lang == "python":
                walk.python(block.text)
            elif block.lang == "sh":
                for step in steps(block.text):
                    walk.run(step)
    finally:
        walk.close()
    assert walk.done[0] == "make run"
    assert walk.done.count("python") == 2, walk.done  # the two SDK examples
    assert sum("keys create" in d for d in walk.done) == 3, walk.done
    assert f"{BIN}/gateway run" in walk.done, walk.done  # the Redis example


def test_the_walk_reads_commands_notes_and_heredocs() -> None:
    script = "a --x 1   # note one\n#   more of it\nb <<'PY'\nprint(1)\nPY\nc \\\n  --y 2 &\n"
    assert steps(script) == [
        Step("a --x 1", "note one more of it"),
        Step("b <<'PY'\nprint(1)\nPY"),
        Step("c \\\n  --y 2 &"),
    ]
