"""What a gateway serving chat only never imports: the Responses API's translators and its native
mode, the multipart reader of the upload APIs, the pass-through proxy (no ``routes:``) and the
bundled mock worker are imported at their first use, so an idle process does not keep them
resident (bench/run's idle RSS per worker).

Checked in a fresh interpreter (other tests' imports would hide an eager one): the CLI's modules
imported as ``gateway run`` has them, a ``Server`` started on a chat-only config, one chat request
answered (a 502: its upstream refuses connections), then ``sys.modules`` read.
"""

from __future__ import annotations

import json
import subprocess
import sys

LAZY = (
    "gateway.dialects.responses",
    "gateway.dialects.responses_answer",
    "gateway.dialects.responses_native",
    "gateway.dialects.responses_stream",
    "gateway.dialects.responses_tools",
    "gateway.proxy.responses_native",
    "gateway.proxy.apis.multipart",
    "gateway.proxy.passthrough",
    "gateway.mock_worker",
)

SCRIPT = """
import asyncio, json, socket, sys
import gateway.cli  # noqa: F401  (what `gateway run` imports before it serves)
from gateway.config.load import parse_text
from gateway.server import Server
from tests.clients import KEYS_YAML, TEST_KEY

def refused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

TEXT = f'''
listen: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0}}
upstreams: {{u: {{url: "http://127.0.0.1:{refused_port()}", timeouts: {{connect: 2}}}}}}
models: {{m: {{upstreams: [u]}}}}
''' + KEYS_YAML

async def main():
    server = Server(parse_text(TEXT, "t.yaml", env={}))
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        writer.write(
            f"POST /v1/chat/completions HTTP/1.1\\r\\nHost: t\\r\\n"
            f"Authorization: Bearer {TEST_KEY}\\r\\nContent-Type: application/json\\r\\n"
            f"Content-Length: {len(body)}\\r\\nConnection: close\\r\\n\\r\\n{body}".encode()
        )
        status = (await reader.readline()).split()[1].decode()
        await reader.read()
        writer.close()
    finally:
        await server.stop()
    print(json.dumps({"status": status, "modules": sorted(sys.modules)}))

asyncio.run(main())
"""


def test_a_chat_only_gateway_imports_no_lazy_subsystem() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["status"] == "502"  # the request went through the chat path to its upstream
    assert "gateway.proxy.handler" in found["modules"]
    assert [name for name in LAZY if name in found["modules"]] == []


def test_a_redis_gateway_imports_no_memory_store() -> None:
    """The in-process store is imported only by a ``memory://`` gateway: what a Redis-store
    gateway imports to serve (the CLI, the server, the app, the Redis store) leaves it out."""
    script = (
        "import sys, gateway.cli, gateway.server, gateway.app, gateway.store.redis, "
        "gateway.store.factory; print('gateway.store.memory' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
