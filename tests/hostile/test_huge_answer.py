"""A whole (not streamed) answer was read with no limit on its size.

Every JSON API's whole answer (and a worker's refusal) is read into one buffer and then parsed
(chat: ``orjson.loads``). docs/security.md promises that an answer that is "endless" fails that
request only; a tenant can also make a worker's answer huge on purpose (``n: 128``,
``max_tokens: 32000``, ``logprobs: true, top_logprobs: 20`` is ~1.2 KB of JSON per token: ~5 GB),
and one process held it all (and its parse), every other tenant's requests on it lost when it
was killed. The multipart APIs read a JSON answer to at most 256 MiB (``form_api.ANSWER_MAX``);
every whole answer is now held to it: past it, a 502 naming the worker, the connection closed.

A real gateway before a real aiohttp worker that answers 260 MiB of body.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from gateway.proxy.upstream import ANSWER_MAX
from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

MIB = 1024 * 1024


async def _huge(request: web.Request, body: Any) -> web.StreamResponse:
    """A body past the limit (as a JSON answer would begin), chunked, as fast as taken."""
    answer = web.StreamResponse(headers={"Content-Type": "application/json"})
    await answer.prepare(request)
    await answer.write(b'{"choices": [{"message": {"content": "')
    piece = b"x" * MIB
    for _ in range(ANSWER_MAX // MIB + 4):
        await answer.write(piece)
    await answer.write(b'"}}]}')
    return answer


async def test_a_whole_answer_past_the_limit_is_a_502(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """Observed (before): 200, the 260 MiB answer read, parsed and relayed whole. Expected:
    502 once the limit is passed, saying the answer is too large."""
    fake.script = _huge
    server: Server = await gateway_factory(
        gateway_yaml({"up": fake.url}, {"m": {"upstreams": ["up"]}})
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}/v1/chat/completions", json=body, headers=AUTH
        ) as r,
    ):
        answer = await r.json()
    assert r.status == 502, (r.status, answer)
    assert "too large" in answer["error"]["message"], answer
