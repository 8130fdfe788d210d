"""Memory the gateway holds per unauthenticated connection (the promise: at most 64 KiB).

``python bench/unauth_memory.py [CONNECTIONS]`` runs a gateway in this process (memory store;
its one model's upstream is never reached) and opens CONNECTIONS (default 300) connections at
once, each of which sends a chat request head with a wrong key that promises a 50 MB body, then
up to 1 MiB of it, and keeps its end open. It prints what the Python heap (``tracemalloc``)
holds per connection once every connection has its answer, and at the peak seen while they
were being answered. The clients live in the same process, so their own connection objects are
counted too: the figures are an upper bound of the gateway's part. Before the key was checked
from the head, each such connection cost ~0.93 MiB: the gateway read the body before it looked
at the key.

RSS is not the instrument: the allocator keeps the peaks of a burst, so RSS growth per
connection swings by hundreds of KiB from one round to the next.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc

from gateway.config.load import parse_text
from gateway.server import Server

CHUNK = 65536
PIECE = b"x" * CHUNK  # one object: the clients' writes add nothing to the heap measured
BODY_SENT = 1024 * 1024
HEAD = (
    "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer sk_not_a_key\r\n"
    "Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
)
CONFIG = """
listen: {host: 127.0.0.1, port: 0}
admin: {host: 127.0.0.1, port: 0}
upstreams: {u: {url: "http://127.0.0.1:9"}}
models: {m: {upstreams: [u]}}
auth: {max_failures_per_minute: 1000000}
log: {access: false}
"""


async def _one(port: int, held: list[asyncio.StreamWriter], answered: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    held.append(writer)
    writer.write(HEAD.encode())
    try:
        for _ in range(BODY_SENT // CHUNK):  # stops when the gateway has closed the connection
            writer.write(PIECE)
            await asyncio.wait_for(writer.drain(), 5)
    except (ConnectionError, TimeoutError):
        pass
    answered.append((await asyncio.wait_for(reader.readline(), 30)).strip())


async def _measure(connections: int) -> None:
    server = Server(parse_text(CONFIG, "bench.yaml", env={}))
    await server.start()
    held: list[asyncio.StreamWriter] = []
    answered: list[bytes] = []
    try:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await asyncio.gather(*(_one(server.port, held, answered) for _ in range(connections)))
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        for writer in held:
            writer.close()
        await server.stop()
    statuses = sorted({a.decode(errors="replace") for a in answered})
    print(f"connections: {connections}, answers: {statuses}")
    print(
        f"per unauthenticated connection: {(after - before) / connections / 1024:.1f} KiB held, "
        f"{(peak - before) / connections / 1024:.1f} KiB at the peak (promise: <= 64 KiB)"
    )


def main() -> None:
    asyncio.run(_measure(int(sys.argv[1]) if len(sys.argv) > 1 else 300))


if __name__ == "__main__":
    main()
