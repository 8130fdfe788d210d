"""Stored responses shared by two gateways on one Redis: a response streamed by one is continued
(``previous_response_id``), read and deleted through the other, in both directions; the record
lives under its id's hash tag (its owner in the key's name) with the TTL of
``responses.ttl_days``."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.mock_worker import MockState
from tests.clients import sdk
from tests.fakes import FakeUpstream
from tests.proxy.responses_support import responses_yaml
from tests.redis_server import RedisServer

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


async def test_two_gateways_share_the_stored_responses(
    gateway_factory: Any,
    mock: tuple[int, MockState],
    fake: FakeUpstream,
    redis_url: str,
    redis_process: RedisServer,
) -> None:
    text = responses_yaml(mock[0], fake.url, extra="responses: {ttl_days: 2}\n", store=redis_url)
    one, two = await gateway_factory(text), await gateway_factory(text)
    a, b = sdk(one), sdk(two)
    async with a.responses.stream(
        model="mock-model",
        input="what is the weather? use a tool",
        tools=[WEATHER],  # type: ignore[list-item]
    ) as s:
        first = await s.get_final_response()
    [call] = first.output
    assert call.type == "function_call"
    async with b.responses.stream(
        model="mock-model",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}],
        tools=[WEATHER],  # type: ignore[list-item]
    ) as s:
        second = await s.get_final_response()
    assert second.output_text == "The tool said: rain"
    assert (await a.responses.retrieve(second.id)).output_text == "The tool said: rain"
    assert (await b.responses.retrieve(first.id)).output[0].type == "function_call"

    keys = redis_process.call("KEYS", "gw:resp:*").split()
    assert sorted(keys) == sorted(f"gw:resp:{{{r.id}}}:tests" for r in (first, second))
    ttl = int(redis_process.call("PTTL", f"gw:resp:{{{first.id}}}:tests"))
    assert 2 * 86_400_000 - 60_000 < ttl <= 2 * 86_400_000

    await b.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await a.responses.retrieve(first.id)


def _sets(redis: RedisServer) -> int:
    """The SET commands Redis ran since its statistics were last reset."""
    for line in redis.call("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_set:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest.mark.parametrize(
    ("model", "stream"), [("mock-model", True), ("mock-model", False)], ids=["streamed", "whole"]
)
async def test_a_response_is_stored_once(
    gateway_factory: Any,
    mock: tuple[int, MockState],
    fake: FakeUpstream,
    redis_url: str,
    redis_process: RedisServer,
    model: str,
    stream: bool,
) -> None:
    """One SET per response: aiohttp ends a stream a second time when the handler returns,
    and that second end stored the streamed response again."""
    client = sdk(await gateway_factory(responses_yaml(mock[0], fake.url, store=redis_url)))
    await client.responses.create(model=model, input="hello")  # connections warm
    assert redis_process.call("CONFIG", "RESETSTAT") == "OK"
    if stream:
        async with client.responses.stream(model=model, input="hello") as s:
            answer = await s.get_final_response()
    else:
        answer = await client.responses.create(model=model, input="hello")
    assert _sets(redis_process) == 1
    assert (await client.responses.retrieve(answer.id)).output_text == answer.output_text
