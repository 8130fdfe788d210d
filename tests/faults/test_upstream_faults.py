"""An upstream that fails in the middle of a stream, after the answer's head went to the client:
killed (RST), closed without the body's end, stalled past its idle timeout, garbling the chunked
framing, or sending broken SSE. The client (OpenAI or Anthropic dialect) gets an error event
and no ``[DONE]`` / ``message_stop`` (never a 500,
never a hang); the request is settled: the key's concurrency (1) is free right after, and usage
records it once, as an error, with the token counter equal to the recorded tokens.

One gateway in this process on the test's Redis; the upstream is ``tests.faults.upstreams``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from tests.faults.conftest import StartServer
from tests.faults.harness import (
    CLIENT_TIMEOUT,
    MAX_TOKENS,
    MODEL,
    Answer,
    Endpoint,
    Key,
    calibrate,
    chat,
    chat_when_free,
    config_text,
    eventually,
    measure,
    outcomes,
    served,
    usage_totals,
)
from tests.faults.upstreams import Mode, RawUpstream
from tests.redis_server import RedisServer

IDLE = 0.5  # the upstream's idle timeout between chunks, seconds


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


async def messages_stream(http: aiohttp.ClientSession, gateway: Endpoint, key: Key) -> Answer:
    """A streamed Anthropic Messages request: ``done`` is its ``message_stop``, ``error_event``
    an ``event: error``."""
    loop = asyncio.get_running_loop()
    answer = Answer(gateway.name, 0, None, {}, True, sent=loop.time())
    async with http.post(
        f"{gateway.url}/v1/messages",
        data=orjson.dumps(
            {
                "model": MODEL,
                "max_tokens": MAX_TOKENS,
                "stream": True,
                "messages": [{"role": "user", "content": "say:3"}],
            }
        ),
        headers={**key.auth, "anthropic-version": "2023-06-01", "Content-Type": "application/json"},
        timeout=CLIENT_TIMEOUT,
    ) as r:
        answer.status = r.status
        answer.body = await r.read()
    answer.ended = loop.time()
    answer.error_event = b"event: error\n" in answer.body
    answer.done = b"event: message_stop\n" in answer.body
    return answer


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("mode", ["kill", "close", "stall", "garble", "badsse"])
async def test_a_stream_broken_upstream_side_is_an_error_event_and_settled(
    fault_redis: RedisServer,
    in_process: StartServer,
    raw_upstream: RawUpstream,
    http: aiohttp.ClientSession,
    mode: Mode,
    dialect: str,
) -> None:
    """The broken stream, in either dialect: 200 (its head was sent), an error event, no
    [DONE] (Anthropic: no message_stop), ended within the idle timeout (+2 s). Then, with the
    upstream healthy again, the key (max_concurrency 1) admits the next stream at once (a
    refusal is tried again for 1 s, while the settlement is written) and it is whole; usage
    counts each request once and the broken one as an error; the token counter equals the
    recorded tokens."""
    key = Key("upfault", concurrency=1)
    server = await in_process(
        config_text(store_url=fault_redis.url, keys=[key], upstream_url=raw_upstream.url, idle=IDLE)
    )
    gateway = Endpoint("in-process", server.port, server.admin_port)
    ledger = await calibrate(http, [gateway], key)  # two requests, whole

    raw_upstream.mode = mode
    if dialect == "openai":
        broken = await chat(http, gateway, key, stream=True)
    else:
        broken = await messages_stream(http, gateway, key)
    assert broken.status == 200 and broken.error_event and not broken.done, (
        f"the stream the upstream broke ({mode}, {dialect}): {broken}"
    )
    assert broken.ended - broken.sent < IDLE + 2.0, f"it took {broken.ended - broken.sent:.2f} s"
    assert b"Hello" in broken.body, "the events before the fault did not reach the client"

    raw_upstream.mode = "ok"
    tried = await chat_when_free(http, gateway, key, stream=True)
    after = tried[-1]
    assert after.complete, f"the key's next stream after the broken one: {after}; {outcomes(tried)}"
    assert all(a.status != 500 for a in [broken, *tried])

    requests = served(ledger.answers)[1] + 2  # the broken one and the one after it
    last: dict[str, int] = {}

    async def recorded_once() -> bool:
        last.update(await usage_totals(http, gateway, key))
        return (last["requests"], last["errors"]) == (requests, 1)

    await eventually(
        recorded_once,
        3.0,
        lambda: f"usage {last}: expected {requests} requests, 1 of them an error ({mode})",
    )
    await asyncio.sleep(0.2)  # a duplicate settlement, if any, would land meanwhile
    totals = await usage_totals(http, gateway, key)
    assert (totals["requests"], totals["errors"]) == (requests, 1), totals
    probe = await measure(http, gateway, key)
    assert probe.status == 200 and probe.store_verdict, f"the measuring request: {probe}"
    counted = key.daily - int(probe.headers["x-ratelimit-remaining-tokens"]) - ledger.reserve
    assert counted == totals["totalTokens"], (
        f"the token counter is {counted}, the recorded usage {totals['totalTokens']} ({mode})"
    )
