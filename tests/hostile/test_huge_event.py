"""One large event in a stream cost the gateway time quadratic in its size.

The SSE splitter kept an unfinished event as one bytes object and, for every piece of the
stream that did not finish it, made a new one (the old and the piece joined) and searched all
of it again for the blank line. A client makes a worker send such an event on purpose: vLLM's
streamed completions with ``echo: true`` and ``logprobs: 20`` send the whole prompt, and the
top logprobs of every prompt token, in the first event (~1 KB a token: a 100,000-token prompt is
a 100 MB event). Measured on the splitter alone: 8 MiB in 64 KiB pieces 0.8 s, 32 MiB 12.8 s;
the event loop of the process spent it, every other request on it waiting.

Expected: an event is joined once, when its end arrives (time linear in its size).

A real gateway before a real aiohttp worker that streams a 96 MiB first event.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from gateway.dialects.sse import SSESplitter
from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

MIB = 1024 * 1024
SIZE = 96 * MIB


async def _echoed(request: web.Request, body: Any) -> web.StreamResponse:
    """A completions stream whose first event is the echoed prompt (96 MiB), then its end."""
    answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await answer.prepare(request)
    await answer.write(b'data: {"object": "text_completion", "choices": [{"index": 0, "text": "')
    piece = b"x" * (64 * 1024)
    for _ in range(SIZE // len(piece)):
        await answer.write(piece)
    await answer.write(b'"}]}\n\n')
    usage = b'{"object": "text_completion", "choices": [], "usage": {"prompt_tokens": 9, '
    await answer.write(b"data: " + usage + b'"completion_tokens": 1, "total_tokens": 10}}\n\n')
    await answer.write(b"data: [DONE]\n\n")
    return answer


async def test_a_large_event_is_relayed_in_time_linear_in_its_size(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """Observed (before): tens of seconds of the gateway's loop for the one event. Expected:
    the whole stream relayed within a few seconds."""
    fake.script = _echoed
    text = gateway_yaml({"up": fake.url}, {"m": {"upstreams": ["up"], "apis": ["completions"]}})
    server: Server = await gateway_factory(text.replace("idle: 5", "idle: 60"))
    body = {"model": "m", "prompt": "hi", "max_tokens": 1, "stream": True, "echo": True}
    started = time.monotonic()
    size = 0
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{server.port}/v1/completions", json=body, headers=AUTH) as r,
    ):
        async for chunk in r.content.iter_any():
            size += len(chunk)
    took = time.monotonic() - started
    assert r.status == 200 and size > SIZE, (r.status, size)
    assert took < 10, f"the stream took {took:.1f} s"


STREAMS = st.lists(
    st.sampled_from([b"data: {}", b"data: x", b"\n", b"\r", b"\r\n", b"\n\n", b": c", b"x" * 70]),
    max_size=40,
).map(b"".join)


@given(stream=STREAMS, cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12))
def test_the_splitter_gives_the_same_events_however_the_stream_is_cut(
    stream: bytes, cuts: list[int]
) -> None:
    """Fed in any pieces, the splitter hands out the events (and keeps the rest) it would
    for the whole stream at once: pieces kept apart are never an event boundary lost or made."""
    whole = SSESplitter()
    expected = whole.feed(stream)
    pieces, at = SSESplitter(), 0
    got: list[bytes] = []
    for cut in sorted({min(c, len(stream)) for c in cuts}):
        got += pieces.feed(stream[at:cut])
        at = cut
    got += pieces.feed(stream[at:])
    assert got == expected
    assert pieces.rest() == whole.rest()
