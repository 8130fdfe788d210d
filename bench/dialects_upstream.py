"""The canned upstream of ``bench/dialects.py``: every POST is answered from memory, by the start
of its path, so the gateway's cost per request does not depend on how this process is scheduled.

* ``/json/...``  the canned chat.completion (``common.canned_json``), usage included;
* ``/sse/...``   the canned stream (``common.canned_sse``) in one write: the gateway reads it
  whole, so the relay sees every event in one batch;
* ``/paced/...`` the same events one write each, ``--gap-ms`` apart: the gateway reads and relays
  them one at a time, as it does a real model's tokens;
* ``/embed/...`` an embeddings answer as vLLM gives the OpenAI SDK's default ``base64``: one
  1,024-dimension float32 vector, usage included (``bench/apis.py``).

A raw asyncio protocol (httptools parses), HTTP/1.1 keep-alive, chunked answers for the streams.

    python bench/dialects_upstream.py --port 8300 [--gap-ms 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import signal
import struct
import sys
from pathlib import Path

import httptools
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import canned_json, canned_sse

JSON_BODY = canned_json().encode()
JSON_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(JSON_BODY), JSON_BODY)
)
VECTOR = base64.b64encode(struct.pack("<1024f", *(i / 1024 for i in range(1024)))).decode()
EMBED_BODY = orjson.dumps(
    {
        "id": "embd-bench",
        "object": "list",
        "created": 1700000000,
        "model": "bench-upstream",
        "data": [{"index": 0, "object": "embedding", "embedding": VECTOR}],
        "usage": {"prompt_tokens": 3, "total_tokens": 3, "completion_tokens": 0},
    }
)
EMBED_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(EMBED_BODY), EMBED_BODY)
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
EVENTS = [e + b"\n\n" for e in canned_sse().encode().split(b"\n\n") if e]
LAST_CHUNK = b"0\r\n\r\n"


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


SSE_WHOLE = SSE_HEAD + chunk(b"".join(EVENTS)) + LAST_CHUNK
PACED = [SSE_HEAD + chunk(EVENTS[0])] + [chunk(e) for e in EVENTS[1:-1]]
PACED_LAST = chunk(EVENTS[-1]) + LAST_CHUNK


class Canned(asyncio.Protocol):
    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.WriteTransport | None = None
        self.path = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.path = url

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.path.startswith(b"/json/"):
            transport.write(JSON_ANSWER)
        elif self.path.startswith(b"/embed/"):
            transport.write(EMBED_ANSWER)
        elif self.path.startswith(b"/sse/"):
            transport.write(SSE_WHOLE)
        else:
            self._pace(0)

    def _pace(self, i: int) -> None:
        """Write piece ``i`` and schedule the next (one timer at a time: they keep their order)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if i < len(PACED):
            transport.write(PACED[i])
            asyncio.get_running_loop().call_later(self.gap, self._pace, i + 1)
        else:
            transport.write(PACED_LAST)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gap-ms", type=float, default=1.0)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    gap = args.gap_ms / 1000
    server = await loop.create_server(lambda: Canned(gap), "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    uvloop.run(main())
