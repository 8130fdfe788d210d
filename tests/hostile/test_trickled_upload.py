"""A multipart upload the client trickles (a little at a time, never stalling for
``network.header_timeout``) is the client's failure, within ``network.body_timeout``.

It streams to the worker as it comes, inside the attempt's wait for the worker's answer; that
wait ran out first, so a slow client was answered 504 ``upstream_timeout`` and the worker was
counted as failed: a few such uploads at once ejected a healthy worker (every other client's
requests then went elsewhere, or all to the panic set), and each held the worker's connection
and slot for the whole ``first_byte`` wait (300 s by default), past the body deadline the
gateway promises.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

# A stall of 1 s is cut; the body's deadline and the worker's wait are the test's.
NETWORK = (
    "network: {header_timeout: 1, body_timeout: BODY}\n"
    f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', permissions: [audio]}}]}}\n"
)


async def _trickle(port: int, seconds: float) -> bytes:
    """An audio upload whose file arrives 4 KiB every 0.2 s, never stalling; the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        b'--zz\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n'
        b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    )
    writer.write(
        (
            "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {TEST_KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\n"
            f"Content-Length: {len(head) + 1_000_000}\r\n\r\n"
        ).encode()
        + head
    )
    answer = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not answer:
        writer.write(b"R" * 4096)
        try:
            answer = await asyncio.wait_for(reader.read(4096), 0.2)
        except TimeoutError:
            continue
    writer.close()
    return answer


async def _failures(server: Server) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.admin_port}/metrics") as r,
    ):
        text = await r.text()
    lines = [ln for ln in text.splitlines() if ln.startswith("gateway_upstream_failures_total")]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


@pytest.mark.parametrize(("body", "first_byte"), [(2, 3), (6, 2)])
async def test_a_trickled_upload_is_the_clients_408_not_the_workers_failure(
    gateway_factory: Any, fake: FakeUpstream, body: int, first_byte: int
) -> None:
    """Observed (before): 504 ``upstream_timeout`` at the worker's wait, the worker counted as
    failed. Expected: 408 at the first of the two deadlines, the worker not blamed."""
    extra = NETWORK.replace("BODY", str(body))
    text = gateway_yaml(
        {"up": fake.url}, {"m": {"upstreams": ["up"], "apis": ["audio"]}}, extra=extra
    ).replace("first_byte: 5", f"first_byte: {first_byte}")
    server: Server = await gateway_factory(text)
    started = time.monotonic()
    answer = await _trickle(server.port, 10)
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), (round(took, 1), answer[:300])
    assert took < min(body, first_byte) + 1, f"answered after {took:.1f} s"
    assert await _failures(server) == 0, "the worker was counted as failed for a slow client"
