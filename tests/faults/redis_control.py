"""A redis-server of one fault test, and the faults done to it: stalled (SIGSTOP for a while,
then SIGCONT), killed and restarted on the same port, slowed (``DEBUG SLEEP`` from a connection
of its own), and bulk writes (a pipeline of raw commands) to seed it.

The server keeps an fsync'd append-only file, so a SIGKILL loses nothing that was written and a
restart comes back with every counter, lease and usage row: a key locked out before the kill is
still locked out after it. ``DEBUG`` is enabled (Redis 7 refuses it by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import cast

import hiredis
import orjson
import pytest

from gateway.auth.keys import sha256_hex
from gateway.records import KeyRecord
from gateway.store.redis_codec import esc, tag
from tests import redis_server
from tests.redis_server import RedisServer

Arg = str | bytes | int | float
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


def need_redis() -> None:
    """Skip without redis-server (fail under CI, where the test command installs it)."""
    if not redis_server.available():
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing; the test command should have installed it")
        pytest.skip("redis-server is not installed")


def start() -> RedisServer:
    """A server of its own on a free port: AOF fsync'd on every write, DEBUG allowed."""
    need_redis()
    return redis_server.start_redis(
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--enable-debug-command",
        "yes",
    )


async def stall(server: RedisServer, seconds: float) -> None:
    """SIGSTOP the server for ``seconds`` (a duration, not a wait), then SIGCONT it; it is
    continued even if this is cancelled."""
    server.pause()
    try:
        await asyncio.sleep(seconds)
    finally:
        server.resume()


async def kill(server: RedisServer) -> None:
    """SIGKILL (no shutdown, no save); the port and the data directory are kept."""
    await asyncio.to_thread(server.kill)


async def restart(server: RedisServer) -> None:
    """Start it again on the same port and data directory (readiness polled with a deadline)."""
    await asyncio.to_thread(server.restart)


@contextlib.asynccontextmanager
async def slowed(server: RedisServer, seconds: float) -> AsyncIterator[float]:
    """``DEBUG SLEEP seconds`` sent on a connection of its own: Redis answers nobody meanwhile.
    Yields the loop time the command was sent at, once Redis is seen asleep (a PING on another
    connection goes unanswered for 50 ms); on exit, waits (bounded) for the sleep's reply."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    watch_reader, watch = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_pack(("DEBUG", "SLEEP", repr(seconds))))
        await writer.drain()
        sent = loop.time()
        for _ in range(10):  # a PING read in the same turn as the sleep may still be answered
            watch.write(_pack(("PING",)))
            try:
                async with asyncio.timeout(0.05):
                    await watch_reader.readline()
            except TimeoutError:
                break
        else:
            raise AssertionError("redis-server never went to sleep")
        yield sent
        async with asyncio.timeout(seconds + 5.0):
            line = await reader.readline()
        assert line.startswith(b"+OK"), f"DEBUG SLEEP answered {line!r}"
    finally:
        for w in (writer, watch):
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()


def pipeline(server: RedisServer, commands: Iterable[Sequence[Arg]], batch: int = 5000) -> int:
    """Send ``commands`` in pipelined batches on one connection; every reply is read, and an
    error reply fails. Returns how many commands were sent."""
    sent = 0
    reader = hiredis.Reader()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        pending: list[bytes] = []

        def flush() -> None:
            nonlocal pending
            if not pending:
                return
            s.sendall(b"".join(pending))
            owed = len(pending)
            pending = []
            while owed:
                while (reply := reader.gets()) is not False:
                    assert not isinstance(reply, hiredis.ReplyError), f"redis: {reply}"
                    owed -= 1
                if owed:
                    data = s.recv(1 << 16)
                    if not data:
                        raise ConnectionError("redis closed the connection")
                    reader.feed(data)

        for command in commands:
            pending.append(_pack(tuple(command)))
            sent += 1
            if len(pending) >= batch:
                flush()
        flush()
    return sent


def big_owner(
    owner: str, keys: int, days: list[int], now: float, fields: dict[str, str | int]
) -> Iterator[tuple[str | bytes | int, ...]]:
    """An owner of ``keys`` keys (``bk0000``...), each with a usage hash of ``fields`` per day
    of ``days`` and its index of days, written as the store writes them
    (``gateway.store.redis_codec``): the commands, for ``pipeline``."""
    t = tag(owner)
    for i in range(keys):
        key_id = f"bk{i:04d}"
        record = KeyRecord(
            id=key_id,
            owner=owner,
            key_hash=sha256_hex(f"big-{i}"),
            created_at=now - len(days) * 86400,
        )
        yield ("SET", f"gw:kid:{esc(key_id)}", record.key_hash)
        yield ("SET", f"gw:kh:{record.key_hash}", orjson.dumps(record.to_store()))
        yield ("SADD", f"{t}keys", key_id)
        for day in days:
            yield ("HSET", f"{t}use:{esc(key_id)}:{day}", *(x for f in fields.items() for x in f))
        yield ("ZADD", f"{t}usedays:{esc(key_id)}", *(x for d in days for x in (d, d)))
