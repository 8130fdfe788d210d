"""A TCP fault proxy for the tests: traffic shaping is not available on these machines, so this
asyncio proxy stands between the gateway and an upstream and misbehaves on command.

Modes: ``pass`` (relay), ``latency`` (delay every chunk by ``delay`` seconds), ``reset`` (abort
every connection, open or new, with an RST), ``blackhole`` (accept, read, never answer),
``mute`` (relay what the client sends, drop what the server answers: a request runs and its
reply is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pass", "latency", "reset", "blackhole", "mute"]


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer's kernel would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class FaultProxy:
    target_port: int
    mode: Mode = "pass"
    delay: float = 0.0
    port: int = 0
    connections: int = 0
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: Mode, delay: float = 0.0) -> None:
        self.mode, self.delay = mode, delay
        if mode == "reset":
            for writer in list(self._open):
                _abort(writer)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._open):
                _abort(writer)
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            _abort(writer)
            return
        self._open.add(writer)
        try:
            if self.mode == "blackhole":
                while await reader.read(65536):
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._open.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer, replies=True)
            )
        except (ConnectionError, OSError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool = False
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if replies and self.mode == "mute":
                    continue
                if self.mode == "latency":
                    await asyncio.sleep(self.delay)
                if self.mode == "reset":
                    _abort(writer)
                    return
                if self.mode == "blackhole":  # in flight: the bytes stop, the socket stays open
                    await asyncio.Event().wait()
                writer.write(chunk)
                await writer.drain()
        finally:
            self._open.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
