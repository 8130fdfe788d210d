"""A paced SSE upstream for the benchmark (nginx cannot pace): every POST, whatever its path and
body, is answered with a stream of ``--chunks`` chat.completion.chunk events ``--interval-ms``
apart (on a fixed schedule from the first one, so a late wake-up does not push the rest), then
a usage chunk and ``data: [DONE]``.

Chunks are written by timer callbacks (``loop.call_later``) straight to the transport: a
coroutine and aiohttp's writer per chunk cost about three times as much CPU, and 25,600 chunks
a second must leave the load CPU room for the client.

Each content delta is ``t<CLOCK_MONOTONIC seconds, 6 decimals> ``: the time the chunk was
written, which a client on the same machine (``time.monotonic()`` is CLOCK_MONOTONIC too) turns
into the chunk's transit time through whatever sits in between.

    python bench/paced_upstream.py --port 8200 [--chunks 64] [--interval-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
import time

import uvloop
from aiohttp import web

HEAD = (
    'data: {"id":"chatcmpl-paced","object":"chat.completion.chunk","created":1700000000,'
    '"model":"bench-paced","choices":[{"index":0,"delta":{"content":"t'
)
TAIL = '"},"finish_reason":null}]}\n\n'


def ending(chunks: int) -> bytes:
    base = (
        '{"id":"chatcmpl-paced","object":"chat.completion.chunk","created":1700000000,'
        '"model":"bench-paced",'
    )
    stop = base + '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
    usage = (
        base + '"choices":[],"usage":{"prompt_tokens":9,'
        f'"completion_tokens":{chunks},"total_tokens":{chunks + 9}}}}}'
    )
    return f"data: {stop}\n\ndata: {usage}\n\ndata: [DONE]\n\n".encode()


def frame(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def make_app(chunks: int, interval: float) -> web.Application:
    last = ending(chunks)

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        out = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await out.prepare(request)  # chunked transfer encoding: aiohttp wrote the head
        transport = request.transport
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        clock = time.monotonic
        start = clock()

        def send(i: int) -> None:
            if transport is None or transport.is_closing():
                if not finished.done():
                    finished.set_result(False)
                return
            transport.write(frame(f"{HEAD}{clock():.6f} {TAIL}".encode()))
            if i + 1 == chunks:
                finished.set_result(True)
                return
            loop.call_later(max(0.0, start + (i + 1) * interval - clock()), send, i + 1)

        send(0)
        if await finished:
            await out.write(last)  # through aiohttp's writer: framed, then the last chunk
            await out.write_eof()
        return out

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    return app


async def serve(host: str, port: int, chunks: int, interval: float) -> None:
    runner = web.AppRunner(make_app(chunks, interval), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    args = parser.parse_args()
    # No cyclic GC pauses in the timers' way (the garbage of a bench run is small and acyclic).
    gc.disable()
    uvloop.run(serve(args.host, args.port, args.chunks, args.interval_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
