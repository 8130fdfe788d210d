"""The lean upstream client (``gateway.proxy.wire``) against raw loopback servers that answer
exactly the bytes a test scripts: keep-alive reuse, every body framing, interim answers,
timeouts, broken and hostile upstreams. Through the gateway: what a client then sees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.proxy import wire
from gateway.proxy.wire import ConnectError, Pool, WireError
from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml
from tests.redis_server import free_port

Answer = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class RawServer:
    """Reads each request (head + Content-Length body) and lets ``answer`` write bytes;
    ``answer`` returns False to close the connection. Counts connections and requests."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.answer(request, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    p = Pool()
    yield p
    p.close()


async def serve(answer: Answer) -> RawServer:
    return await RawServer(answer).start()


def fixed(raw: bytes, keep: bool = True) -> Answer:
    async def answer(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep

    return answer


async def post(pool: Pool, server: RawServer, read_timeout: float | None = 5.0) -> wire.Response:
    return await pool.post(
        pool.origin(server.url), "/v1/chat/completions", {"X-A": "1"}, b"{}", 1.0, read_timeout
    )


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'


async def test_keep_alive_reuses_one_connection(pool: Pool) -> None:
    server = await serve(fixed(OK))
    try:
        for _ in range(5):
            response = await post(pool, server)
            assert (response.status, await response.read()) == (200, b'{"a":1}')
            response.release()
        assert server.connections == 1 and len(server.requests) == 5
        head = server.requests[0].split(b"\r\n")
        assert head[0] == b"POST /v1/chat/completions HTTP/1.1"
        assert f"Host: {server.url[7:]}".encode() in head and b"X-A: 1" in head
        assert b"Content-Length: 2" in head and server.requests[0].endswith(b"\r\n\r\n{}")
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (OK, b'{"a":1}'),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
            b"abcdefg",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, b'{"a":1}'),  # an interim answer first
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
    ids=["content-length", "chunked", "interim-100", "no-content"],
)
async def test_every_framing_is_read_whole_and_kept(pool: Pool, raw: bytes, body: bytes) -> None:
    server = await serve(fixed(raw))
    try:
        for _ in range(2):
            response = await post(pool, server)
            assert await response.read() == body
            response.release()
        assert server.connections == 1
    finally:
        await server.stop()


async def test_a_body_that_ends_with_the_connection(pool: Pool) -> None:
    server = await serve(fixed(b"HTTP/1.1 200 OK\r\n\r\nall of it", keep=False))
    try:
        for _ in range(2):
            response = await post(pool, server)
            assert await response.read() == b"all of it"
            response.release()
        assert server.connections == 2  # not reusable: each answer ended its connection
    finally:
        await server.stop()


async def test_connection_close_is_honoured(pool: Pool) -> None:
    raw = OK.replace(b"Content-Length", b"Connection: close\r\nContent-Length")
    server = await serve(fixed(raw))  # the server would keep it; the answer said close
    try:
        for _ in range(3):
            response = await post(pool, server)
            assert await response.read() == b'{"a":1}'
            response.release()
        assert server.connections == 3
    finally:
        await server.stop()


async def test_an_idle_connection_the_upstream_closed_is_not_reused(pool: Pool) -> None:
    server = await serve(fixed(OK, keep=False))  # closes after answering, without saying so
    try:
        response = await post(pool, server)
        assert await response.read() == b'{"a":1}'
        response.release()
        await _until_closed(pool, server)
        response = await post(pool, server)
        assert await response.read() == b'{"a":1}'
        assert server.connections == 2
    finally:
        await server.stop()


async def _until_closed(pool: Pool, server: RawServer) -> None:
    """Until no idle connection to ``server`` is open (at most 5 s)."""
    origin, loop = pool.origin(server.url), asyncio.get_running_loop()
    deadline = loop.time() + 5
    while any(not c.closed for c in origin.idle):
        assert loop.time() < deadline, "an idle connection stayed open"
        await asyncio.sleep(0.005)


async def test_a_streamed_body_arrives_piece_by_piece(pool: Pool) -> None:
    release = asyncio.Event()

    async def answer(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        return True

    server = await serve(answer)
    try:
        response = await post(pool, server, read_timeout=None)
        assert await response.readany() == b"first"  # before the rest exists
        release.set()
        assert await response.readany() == b"second"
        assert await response.readany() == b""
        response.release()
        assert len(pool.origin(server.url).idle) == 1
    finally:
        await server.stop()


async def test_a_slow_reader_holds_the_upstream_back(pool: Pool) -> None:
    """Above HIGH_WATER buffered bytes the socket is paused; every byte still arrives, in order."""
    piece = bytes(range(256)) * 256  # 64 KiB
    pieces = 32  # 2 MiB in all, 8 x HIGH_WATER

    async def flood(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(pieces):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    server = await serve(flood)
    try:
        response = await post(pool, server, read_timeout=None)
        conn = response._conn
        got, paused = bytearray(), False
        while True:
            for _ in range(20):  # let the upstream fill what the client allows
                await asyncio.sleep(0)
            paused = paused or conn.paused
            # paused once above HIGH_WATER: at most one more socket read (256 KiB) lands after
            assert conn.buffered <= wire.HIGH_WATER + 256 * 1024
            chunk = await response.readany()
            if not chunk:
                break
            got += chunk
        assert paused, "reading never paused"
        assert bytes(got) == piece * pieces
        response.release()
        assert len(pool.origin(server.url).idle) == 1
    finally:
        await server.stop()


async def test_an_unread_answer_is_not_pooled(pool: Pool) -> None:
    server = await serve(fixed(OK))
    try:
        response = await post(pool, server)
        response.release()  # the body was never read: the connection cannot be reused
        assert pool.origin(server.url).idle == []
    finally:
        await server.stop()


async def test_silence_times_out_but_a_slow_steady_answer_does_not(pool: Pool) -> None:
    async def trickle(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for byte in b"abcdef":  # 0.6 s in all, never 0.2 s of silence
            await asyncio.sleep(0.1)
            writer.write(bytes([byte]))
            await writer.drain()
        return True

    async def stall(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)
        return False

    steady, stalled = await serve(trickle), await serve(stall)
    try:
        response = await post(pool, steady, read_timeout=0.25)
        assert await response.read() == b"abcdef"
        response = await post(pool, stalled, read_timeout=0.25)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await response.read()
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        await steady.stop()
        await stalled.stop()


async def test_a_silent_head_times_out(pool: Pool) -> None:
    async def silent(_: bytes, __: asyncio.StreamReader, ___: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    server = await serve(silent)
    try:
        with pytest.raises(TimeoutError):
            await post(pool, server, read_timeout=0.2)
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the connection ends
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["cut-short", "not-http", "two-lengths", "bad-chunk"],
)
async def test_broken_answers_are_wire_errors(pool: Pool, raw: bytes) -> None:
    server = await serve(fixed(raw, keep=False))
    try:
        with pytest.raises(WireError):
            response = await post(pool, server)
            await response.read()
        assert pool.origin(server.url).idle == []
    finally:
        await server.stop()


async def test_unsolicited_bytes_drop_the_connection(pool: Pool) -> None:
    async def chatty(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # two answers
        await writer.drain()
        return True

    server = await serve(chatty)
    try:
        for _ in range(2):
            response = await post(pool, server)
            assert await response.read() == b'{"a":1}'
            response.release()
        assert server.connections == 2  # the first connection was not trusted again
    finally:
        await server.stop()


async def test_refused_and_unreachable(pool: Pool) -> None:
    with pytest.raises(ConnectError):
        await pool.post(pool.origin(f"http://127.0.0.1:{free_port()}"), "/", {}, b"", 1, 1)


async def test_idle_connections_are_closed_after_a_while(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "IDLE_SECONDS", 0.1)
    server = await serve(fixed(OK))
    try:
        response = await post(pool, server)
        await response.read()
        response.release()
        conn = pool.origin(server.url).idle[0]
        await _until_closed(pool, server)
        assert conn.closed and server.connections == 1
    finally:
        await server.stop()


# -- through the gateway ------------------------------------------------------------------------


async def chat_through(gateway: Server, stream: bool = True) -> tuple[int, bytes, float]:
    """One chat request to ``raw-model`` through the gateway: status, body, seconds taken."""
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{gateway.port}/v1/chat/completions"
        body = {"model": "raw-model", "stream": stream}
        body["messages"] = [{"role": "user", "content": "hi"}]
        started = asyncio.get_running_loop().time()
        async with http.post(url, json=body, headers=AUTH) as r:
            raw = await r.read()
        return r.status, raw, asyncio.get_running_loop().time() - started


async def test_a_garbled_upstream_is_a_502_and_the_next_request_works(
    gateway_factory: Any,
) -> None:
    answers = iter([b"garbage\r\n\r\n", OK])

    async def answer(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(next(answers))
        await writer.drain()
        return True

    server = await serve(answer)
    try:
        gateway: Server = await gateway_factory(gateway_yaml({"raw": server.url}))
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{gateway.port}/v1/chat/completions"
            body: dict[str, Any] = {"model": "raw-model", "messages": [{"role": "user"}]}
            body["messages"][0]["content"] = "hi"
            async with http.post(url, json=body, headers=AUTH) as r:
                assert r.status == 502
                assert (await r.json())["error"]["type"]
            async with http.post(url, json=body, headers=AUTH) as r:
                assert r.status == 200 and await r.json() == {"a": 1}
    finally:
        await server.stop()


async def test_a_stalled_error_answer_to_a_stream_is_a_504(gateway_factory: Any) -> None:
    async def stall(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 40\r\n\r\n{")
        await writer.drain()
        await asyncio.sleep(10)
        return False

    server = await serve(stall)
    try:
        config = gateway_yaml({"raw": server.url}).replace("first_byte: 5", "first_byte: 0.3")
        status, _, took = await chat_through(await gateway_factory(config))
        assert status == 504 and took < 3
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -5, "completion_tokens": -1},
        {"prompt_tokens": 3, "completion_tokens": "many"},
        {"prompt_tokens": 3, "completion_tokens": 1e300},
        {"prompt_tokens": 3, "completion_tokens": None},
    ],
)
async def test_insane_usage_is_counted_as_zero_not_a_crash(
    gateway_factory: Any, usage: dict[str, Any]
) -> None:
    body = orjson.dumps({"id": "x", "choices": [], "usage": usage})
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server = await serve(fixed(raw))
    try:
        gateway: Server = await gateway_factory(gateway_yaml({"raw": server.url}))
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{gateway.port}/v1/chat/completions"
            chat = {"model": "raw-model", "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(2):
                async with http.post(url, json=chat, headers=AUTH) as r:
                    assert r.status == 200 and await r.read() == body
            async with http.get(f"http://127.0.0.1:{gateway.admin_port}/metrics") as r:
                metrics = await r.text()
        assert 'gateway_requests_total{api="chat",dialect="openai",model="raw-model"' in metrics
    finally:
        await server.stop()


def _sse_chunk(text: str) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunk["choices"] = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    data = b"data: " + orjson.dumps(chunk) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _paced(gaps: list[float], finish: bool) -> Answer:
    async def answer(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
        for i, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            writer.write(_sse_chunk(f"t{i}"))
            await writer.drain()
        if finish:
            writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
            await writer.drain()
        else:
            await asyncio.sleep(10)
        return False

    return answer


@pytest.mark.parametrize(
    ("gaps", "finish", "complete"),
    [
        ([0.0] + [0.15] * 6, True, True),  # ~0.9 s in all, never 0.4 s of silence
        ([0.0, 0.1], False, False),  # then silence: an error event after idle (0.4 s)
    ],
    ids=["steady", "silent"],
)
async def test_a_stream_is_bounded_by_idle_silence_not_by_its_length(
    gateway_factory: Any, gaps: list[float], finish: bool, complete: bool
) -> None:
    server = await serve(_paced(gaps, finish))
    try:
        config = gateway_yaml({"raw": server.url}).replace("idle: 5", "idle: 0.4")
        status, raw, took = await chat_through(await gateway_factory(config))
        assert status == 200
        text = raw.decode()
        assert text.count('"content":"t') == len(gaps)
        assert text.rstrip().endswith("data: [DONE]") == complete
        if not complete:
            assert '"error"' in text and "went silent" in text
            assert 0.4 < took < 2.0
    finally:
        await server.stop()


async def test_a_finished_stream_leaves_its_connection_for_the_next(gateway_factory: Any) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n"
    server = await serve(fixed(head + _sse_chunk("t") + b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"))
    try:
        gateway: Server = await gateway_factory(gateway_yaml({"raw": server.url}))
        for _ in range(3):
            assert (await chat_through(gateway))[1].rstrip().endswith(b"data: [DONE]")
        assert (server.connections, len(server.requests)) == (1, 3)
    finally:
        await server.stop()
