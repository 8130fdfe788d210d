"""The benchmark's baseline: the least an aiohttp + uvloop proxy can do.

Reads the request body, POSTs it to ``--upstream`` + the request's path over one shared
keep-alive ``ClientSession`` (``TCPConnector(limit=0)``) and answers with the upstream's status,
content type and body. An ``text/event-stream`` answer is relayed chunk by chunk as it comes.

``--workers N`` forks N processes that each bind the port with ``SO_REUSEPORT``, like the
gateway's ``listen.workers``.

    python bench/passthrough.py --port 8100 --upstream http://127.0.0.1:8090 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import aiohttp
import uvloop
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        app[SESSION] = aiohttp.ClientSession(connector=connector, trust_env=False)
        yield
        await app[SESSION].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session = app[SESSION]
        async with session.post(
            upstream + request.path,
            data=body,
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        ) as answer:
            if answer.content_type == "text/event-stream":
                out = web.StreamResponse(
                    status=answer.status,
                    headers={"Content-Type": answer.headers["Content-Type"]},
                )
                await out.prepare(request)
                async for chunk in answer.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
            data = await answer.read()
            return web.Response(body=data, status=answer.status, content_type=answer.content_type)

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", handle)
    return app


async def serve(host: str, port: int, upstream: str) -> None:
    runner = web.AppRunner(make_app(upstream), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=True, backlog=2048).start()
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
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8090")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    upstream = args.upstream.rstrip("/")
    if args.workers <= 1:
        uvloop.run(serve(args.host, args.port, upstream))
        return 0
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                uvloop.run(serve(args.host, args.port, upstream))
            except BaseException:
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in children:
        try:
            os.wait()
        except ChildProcessError:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
