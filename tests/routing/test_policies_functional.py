"""The policies as a client sees them, over real sockets: idle workers share sequential traffic,
a conversation keeps its worker across turns, dialects and gateway processes, a worker that
reports a queue is passed over, and the routing headers say who answered."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.routing.affinity import prompt_prefixes
from gateway.server import Server
from tests.clients import AUTH, claude, sdk
from tests.conftest import GatewayFactory
from tests.routing.support import Worker, config, stop_all, until, workers


@pytest.fixture
async def fleet() -> AsyncIterator[list[Worker]]:
    started = await workers("w0", "w1", "w2")
    yield started
    await stop_all(started)


def pool(fleet: list[Worker], **settings: Any) -> dict[str, str | dict[str, Any]]:
    return {w.name: {"url": w.url, **settings} for w in fleet}


async def test_sequential_requests_are_shared_by_idle_workers(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    """Issue 16's first finding: 20 sequential requests to two idle workers all went to the
    first one (ties picked the first upstream)."""
    two = fleet[:2]
    server = await gateway_factory(config(pool(two), {"m": {"upstreams": ["w0", "w1"]}}))
    server.runtime.balancer.rng = random.Random(16)
    client = sdk(server)
    for _ in range(20):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert two[0].chats + two[1].chats == 20
    assert min(two[0].chats, two[1].chats) >= 5, [w.chats for w in two]


async def test_round_robin_takes_turns(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    server = await gateway_factory(
        config(
            pool(fleet),
            {"m": {"upstreams": ["w0", "w1", "w2"], "routing": {"policy": "round_robin"}}},
            "routing: {expose_headers: true}",
        )
    )
    order = []
    async with aiohttp.ClientSession() as http:
        for _ in range(6):
            async with http.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers=AUTH,
            ) as r:
                order.append(r.headers["x-gateway-upstream"])
    assert order == ["w0", "w1", "w2", "w0", "w1", "w2"]


AFFINITY = {"upstreams": ["w0", "w1", "w2"], "routing": {"policy": "affinity"}}
SYSTEM = "You are a travel agent. Answer briefly."


async def test_a_conversation_keeps_its_worker_across_turns_dialects_and_gateways(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    """Turn 1 through one gateway with the OpenAI SDK, turn 2 through another with the
    Anthropic SDK, turn 3 streamed: all on the same worker; and conversations spread."""
    text = config(pool(fleet), {"m": AFFINITY}, "routing: {expose_headers: true}")
    one, two = await gateway_factory(text), await gateway_factory(text)
    homes = {}
    for n in range(12):
        opening = f"Plan trip number {n} to somewhere warm"
        first = await sdk(one).chat.completions.with_raw_response.create(
            model="m",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": opening}],
        )
        home = first.headers["x-gateway-upstream"]
        second = await claude(two).messages.with_raw_response.create(
            model="m",
            max_tokens=50,
            system=SYSTEM,
            messages=[
                {"role": "user", "content": opening},
                {"role": "assistant", "content": "Where from?"},
                {"role": "user", "content": "From Oslo."},
            ],
        )
        assert second.headers["x-gateway-upstream"] == home
        async with sdk(two).chat.completions.with_streaming_response.create(
            model="m",
            stream=True,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": opening},
                {"role": "assistant", "content": "Where from?"},
                {"role": "user", "content": "From Oslo."},
                {"role": "assistant", "content": "When?"},
                {"role": "user", "content": "May."},
            ],
        ) as third:
            assert third.headers["x-gateway-upstream"] == home
            assert home.encode() in await third.read()
        homes[n] = home
    assert len(set(homes.values())) >= 2, homes  # 12 conversations do not all hash alike


async def test_a_session_id_keeps_its_worker_whatever_the_prompt(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    server = await gateway_factory(
        config(pool(fleet), {"m": AFFINITY}, "routing: {expose_headers: true}")
    )
    client = claude(server)
    seen = set()
    for i in range(8):
        answer = await client.messages.with_raw_response.create(
            model="m",
            max_tokens=20,
            metadata={"user_id": '{"device_id": "d", "session_id": "session-42"}'},
            messages=[{"role": "user", "content": f"unrelated question {i}"}],
        )
        seen.add(answer.headers["x-gateway-upstream"])
    assert len(seen) == 1


async def test_a_conversation_the_bound_moved_stays_moved(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    """Two requests held on a conversation's worker: its next turn goes to the other worker
    (the bound); once the first worker is idle again the turn after still goes where the
    conversation's cache now is. Another gateway process, which never saw it, goes by the ring."""
    two = fleet[:2]
    routing = {"upstreams": ["w0", "w1"], "routing": {"policy": "affinity"}}
    text = config(pool(two), {"m": routing}, "routing: {expose_headers: true}")
    one, other = await gateway_factory(text), await gateway_factory(text)
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Plan a trip to Lisbon"},
    ]

    async def turn(server: Server = one) -> str:
        answer = await sdk(server).chat.completions.with_raw_response.create(
            model="m", messages=messages
        )
        return answer.headers["x-gateway-upstream"]

    home_name = await turn()
    home = next(w for w in two if w.name == home_name)
    home.gate = asyncio.Event()
    held = [asyncio.create_task(turn()) for _ in range(2)]
    await until(lambda: home.chats == 3, what="two requests held on the home worker")
    messages += [{"role": "assistant", "content": "When?"}, {"role": "user", "content": "May."}]
    moved = await turn()
    assert moved != home_name  # 2 in flight there: its bound with 3 is ceil(1.25 * 3 / 2) = 2
    home.gate.set()
    assert await asyncio.gather(*held) == [home_name] * 2
    await until(lambda: one.runtime.balancer.in_flight == 0, what="the held answered")
    messages += [{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "Hotels?"}]
    assert await turn() == moved
    assert await turn(other) == home_name


async def test_a_conversation_one_gateway_moved_is_followed_by_the_others(
    gateway_factory: GatewayFactory, fleet: list[Worker], redis_url: str
) -> None:
    """On a shared store, a process tells the others where the bound moved a conversation
    (``routing.placements``): the next turn through another gateway goes to its cache too,
    where before it went back to the ring's worker (the memory was per process)."""
    two = fleet[:2]
    routing = {"upstreams": ["w0", "w1"], "routing": {"policy": "affinity"}}
    extra = f"routing: {{expose_headers: true}}\nstore: {{url: '{redis_url}'}}\n"
    text = config(pool(two), {"m": routing}, extra)
    one, other = await gateway_factory(text), await gateway_factory(text)
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Plan a trip to Porto"},
    ]

    async def turn(server: Server) -> str:
        answer = await sdk(server).chat.completions.with_raw_response.create(
            model="m", messages=messages
        )
        return answer.headers["x-gateway-upstream"]

    home_name = await turn(one)
    assert await turn(other) == home_name  # the ring: nothing was told, nothing to tell
    assert len(other.runtime.balancer.history) == 1
    home = next(w for w in two if w.name == home_name)
    home.gate = asyncio.Event()
    held = [asyncio.create_task(turn(one)) for _ in range(2)]
    await until(lambda: home.chats == 4, what="two requests held on the home worker")
    messages += [{"role": "assistant", "content": "When?"}, {"role": "user", "content": "May."}]
    moved = await turn(one)
    assert moved != home_name
    prompt = prompt_prefixes(messages)[-1]
    told = other.runtime.balancer.history.sent
    await until(lambda: told.get(prompt) == moved, what="the move told")
    home.gate.set()
    assert await asyncio.gather(*held) == [home_name] * 2
    await until(lambda: one.runtime.balancer.in_flight == 0, what="the held answered")
    messages += [{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "Hotels?"}]
    assert await turn(other) == moved  # told: where the conversation's cache now is
    assert await turn(one) == moved


async def test_a_worker_reporting_a_queue_is_passed_over(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    two = fleet[:2]
    two[0].metrics = 'vllm:num_requests_waiting{model_name="m"} 4\nvllm:num_requests_running 9\n'
    two[1].metrics = "vllm:num_requests_waiting 0\nvllm:num_requests_running 1\n"
    server = await gateway_factory(
        config(
            pool(two, metrics_path="/metrics"),
            {"m": {"upstreams": ["w0", "w1"]}},
            "routing: {signals_interval: 0.05}",
        )
    )
    state = server.runtime.balancer.state
    await until(lambda: state("w0").waiting == 4 and state("w1").running == 1, what="signals")
    client = sdk(server)
    for _ in range(10):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert (two[0].chats, two[1].chats) == (0, 10)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.admin_port}/metrics") as r,
    ):
        page = await r.text()
    assert 'gateway_upstream_queue{upstream="w0"} 4.0' in page
    assert 'gateway_upstream_running{upstream="w0"} 9.0' in page
    assert 'gateway_upstream_signals_age_seconds{upstream="w1"}' in page
    two[0].metrics = "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n"
    await until(lambda: state("w0").waiting == 0, what="the queue drained")
    for _ in range(10):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert two[0].chats > 0


async def test_a_worker_whose_metrics_stop_answering_goes_back_to_in_flight_counts(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    two = fleet[:2]
    two[0].metrics = "vllm:num_requests_waiting 50\n"
    two[1].metrics = "vllm:num_requests_waiting 0\n"
    server = await gateway_factory(
        config(
            pool(two, metrics_path="/metrics"),
            {"m": {"upstreams": ["w0", "w1"]}},
            "routing: {signals_interval: 0.05}",
        )
    )
    state = server.runtime.balancer.state
    await until(lambda: state("w0").waiting == 50, what="signals")
    two[0].metrics = "<html>gone</html>"  # no signal names: stale after 3 intervals
    clock = server.runtime.clock
    await until(lambda: state("w0").signals_until < clock.monotonic(), what="stale")
    client = sdk(server)
    for _ in range(20):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert two[0].chats > 0


async def test_routing_headers_on_every_answer_only_when_exposed(
    gateway_factory: GatewayFactory, fleet: list[Worker]
) -> None:
    fleet[1].status, fleet[1].error = 400, "temperature must be at most 2"
    models = {"m": {"upstreams": ["w0"]}, "bad": {"upstreams": ["w1"]}}
    shown = await gateway_factory(config(pool(fleet), models, "routing: {expose_headers: true}"))
    hidden = await gateway_factory(config(pool(fleet), models))
    async with aiohttp.ClientSession() as http:

        async def ask(server: Server, model: str) -> aiohttp.ClientResponse:
            async with http.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                headers=AUTH,
            ) as r:
                await r.read()
                return r

        ok, refused, unknown = [await ask(shown, m) for m in ("m", "bad", "nope")]
        assert (ok.headers["x-gateway-upstream"], ok.headers["x-gateway-model"]) == ("w0", "m")
        assert refused.status == 400 and refused.headers["x-gateway-upstream"] == "w1"
        assert refused.headers["x-gateway-model"] == "bad"
        assert unknown.status == 404 and "x-gateway-upstream" not in unknown.headers
        for model in ("m", "bad"):
            r = await ask(hidden, model)
            assert "x-gateway-upstream" not in r.headers and "x-gateway-model" not in r.headers
