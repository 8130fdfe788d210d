"""Upstreams that misbehave mid-stream, written on raw asyncio sockets so every byte is the
test's. A request for a whole answer always gets a good one; a stream gets an OpenAI-style SSE
answer (chunked) whose first events are whole, then, by ``mode``:

- ``ok``: the rest of the answer, usage and ``[DONE]``;
- ``kill``: the connection reset (RST), as a crashed worker's kernel does;
- ``close``: the connection closed (FIN) without the chunked body's end;
- ``stall``: silence, the connection open, until the upstream is stopped;
- ``garble``: bytes that are no chunked framing at all (``zz\\r\\n\\xff\\xfe...``);
- ``badsse``: well-framed chunks carrying broken SSE (JSON cut off, binary junk), then the
  body's end without ``[DONE]``.

``opened`` counts the streams, ``peak`` the most open at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

import orjson

Mode = Literal["ok", "kill", "close", "stall", "garble", "badsse"]
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    b"Cache-Control: no-cache\r\n\r\n"
)
PROMPT_TOKENS, COMPLETION_TOKENS = 9, 4


def event(delta: dict[str, str] | None, finish: str | None = None, usage: bool = False) -> bytes:
    item = {
        "id": "chatcmpl-raw",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "raw-upstream",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        if usage
        else None,
    }
    return b"data: " + orjson.dumps(item) + b"\n\n"


def framed(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


FIRST = [event({"role": "assistant", "content": ""}), event({"content": "Hello"})]
REST = [
    event({"content": " there"}),
    event({"content": " friend"}),
    event({}, "stop"),
    event(None, usage=True),
    b"data: [DONE]\n\n",
]


COMPLETION = {
    "id": "chatcmpl-raw",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "raw-upstream",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
    ],
    "usage": {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    },
}


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class RawUpstream:
    mode: Mode = "ok"
    gap: float = 0.02  # between the events of the answer (a duration)
    port: int = 0
    opened: int = 0
    open_now: int = 0
    peak: int = 0
    _server: asyncio.Server | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._answer(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request on a keep-alive connection; False when the connection is done."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path = lines[0].split(" ")[:2]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        raw = await reader.readexactly(length) if length else b""
        if method != "POST" or not path.endswith("/chat/completions"):
            body = b'{"object":"list","data":[]}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            return True
        if orjson.loads(raw).get("stream") is not True:  # a whole answer: always a good one
            body = orjson.dumps(COMPLETION)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            return True
        self.opened += 1
        self.open_now += 1
        self.peak = max(self.peak, self.open_now)
        try:
            return await self._stream(writer, self.mode)
        finally:
            self.open_now -= 1

    async def _stream(self, writer: asyncio.StreamWriter, mode: Mode) -> bool:
        writer.write(HEAD)
        for item in FIRST:
            writer.write(framed(item))
            await writer.drain()
            await asyncio.sleep(self.gap)
        if mode == "ok":
            for item in REST:
                writer.write(framed(item))
                await writer.drain()
                await asyncio.sleep(self.gap)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if mode == "kill":
            _reset(writer)
        elif mode == "close":
            writer.close()
        elif mode == "stall":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await self._stop.wait()
        elif mode == "garble":
            writer.write(b"zz\r\n\xff\xfe\x00garbage\r\n\x00\x01\x02 not chunked\r\n\r\n")
            await writer.drain()
            with contextlib.suppress(TimeoutError):  # leave the closing to the gateway
                async with asyncio.timeout(5):
                    await self._stop.wait()
        elif mode == "badsse":
            for junk in (
                b'data: {"id":"chatcmpl-raw","choices":[{"delta":{"cont\n\n',
                b"\xff\xfe\x00\x81 junk\n\n",
            ):
                writer.write(framed(junk))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return False
