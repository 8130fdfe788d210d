"""What Claude Code needs of the gateway beside the Messages translation, over real sockets: the
probes it sends before its first request (``HEAD /``, ``/api/hello``) answered without a key,
unless a pass-through route owns the path; ``count_tokens`` counted by a worker when one can;
``models.<name>.max_output_tokens`` read from the config and lowering a larger ``max_tokens``;
thinking asked for and given back through the official SDK."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.config.load import ConfigError, parse_text
from gateway.server import Server
from tests.clients import claude, sdk
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream, completion


async def fetch(server: Server, method: str, path: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"http://127.0.0.1:{server.port}{path}") as answer,
    ):
        return answer.status, await answer.read()


@pytest.mark.parametrize(
    ("method", "path"), [("HEAD", "/"), ("GET", "/"), ("HEAD", "/api/hello"), ("GET", "/api/hello")]
)
async def test_probes_are_answered_without_a_key(gateway: Server, method: str, path: str) -> None:
    assert await fetch(gateway, method, path) == (200, b"")


async def test_a_pass_through_route_keeps_the_paths_it_serves(
    gateway_factory: GatewayFactory, fake: FakeUpstream
) -> None:
    """A portal behind ``/`` still gets its home page; the gateway probes only what is free."""
    text = gateway_yaml(
        {"fake": fake.url}, extra="routes: [{prefix: /api/, upstream: fake, auth: none}]\n"
    )
    server = await gateway_factory(text)
    status, body = await fetch(server, "GET", "/api/hello")
    assert status == 200 and b"fake answer" in body  # the portal's answer
    assert [seen.path for seen in fake.seen] == ["/api/hello"]
    assert await fetch(server, "HEAD", "/") == (200, b"")  # / is nobody's: the probe's


async def test_count_tokens_is_the_worker_s_own_count_when_it_has_one(gateway: Server) -> None:
    """The bundled mock serves ``/tokenize``; the fake upstream does not count (its answer has
    no count): then the gateway's estimate, said so in a header."""
    client = claude(gateway)
    asked: Any = {"messages": [{"role": "user", "content": "one two three four"}]}
    exact = await client.messages.with_raw_response.count_tokens(model="mock-model", **asked)
    estimate = await client.messages.with_raw_response.count_tokens(model="fake-model", **asked)
    assert exact.headers["X-Gateway-Token-Count"] == "exact"
    assert estimate.headers["X-Gateway-Token-Count"] == "estimate"
    assert (await estimate.parse()).input_tokens == 3 + 4 + 5  # request, message, 18 characters
    assert (await exact.parse()).input_tokens > 0


def model_yaml(max_output_tokens: object) -> str:
    models = {"m": {"upstreams": ["u"], "max_output_tokens": max_output_tokens}}
    return gateway_yaml({"u": "http://127.0.0.1:1"}, models)


def test_max_output_tokens_is_read_from_the_config() -> None:
    assert parse_text(model_yaml(8192), "t.yaml", env={}).models["m"].max_output_tokens == 8192
    assert parse_text(model_yaml(None), "t.yaml", env={}).models["m"].max_output_tokens is None
    for bad in (0, "many", 1.5):
        with pytest.raises(ConfigError, match=r"models\.m\.max_output_tokens"):
            parse_text(model_yaml(bad), "t.yaml", env={})


async def test_a_larger_max_tokens_is_lowered_to_the_model_s_ceiling(
    gateway_factory: GatewayFactory, fake: FakeUpstream
) -> None:
    text = gateway_yaml(
        {"fake": fake.url}, {"capped": {"upstreams": ["fake"], "max_output_tokens": 1000}}
    )
    server = await gateway_factory(text)
    await claude(server).messages.create(
        model="capped",
        max_tokens=32000,
        messages=[{"role": "user", "content": "hi"}],
        timeout=30,  # the SDK refuses a long non-streamed request without one
    )
    assert fake.seen[-1].body["max_tokens"] == 1000


async def test_thinking_asked_and_given_back(gateway: Server, fake: FakeUpstream) -> None:
    """Adaptive thinking and an effort become the worker's settings; its reasoning comes back
    as a thinking block the SDK types; a system turn between the others reaches it folded."""

    async def reasoning(_: web.Request, __: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(completion("4", reasoning_content="2+2 is 4."))

    fake.script = reasoning
    answer = await claude(gateway).messages.create(
        model="fake-model",
        max_tokens=512,
        thinking={"type": "adaptive"},
        messages=[
            {"role": "user", "content": "2+2?"},
            {"role": "system", "content": "Answer with a digit."},  # type: ignore[typeddict-item]
        ],
        extra_body={"output_config": {"effort": "low"}, "context_management": {"edits": []}},
    )
    thinking, text = answer.content
    assert thinking.type == "thinking" and thinking.thinking == "2+2 is 4."
    assert thinking.signature == "gateway-unsigned"
    assert text.type == "text" and text.text == "4"
    sent = fake.seen[-1].body
    assert sent["chat_template_kwargs"] == {"enable_thinking": True}
    assert sent["reasoning_effort"] == "low"
    assert sent["messages"] == [
        {
            "role": "user",
            "content": "2+2?\n\n<system-reminder>\nAnswer with a digit.\n</system-reminder>",
        }
    ]
    assert not {"thinking", "output_config", "context_management"} & sent.keys()


async def test_an_openai_max_tokens_is_lowered_to_the_model_s_ceiling(
    gateway_factory: GatewayFactory, fake: FakeUpstream
) -> None:
    """The same ceiling in the OpenAI dialect, for both names of the field."""
    text = gateway_yaml(
        {"fake": fake.url}, {"capped": {"upstreams": ["fake"], "max_output_tokens": 1000}}
    )
    server = await gateway_factory(text)
    client = sdk(server)
    await client.chat.completions.create(
        model="capped", max_tokens=32000, messages=[{"role": "user", "content": "hi"}]
    )
    assert fake.seen[-1].body["max_tokens"] == 1000
    await client.chat.completions.create(
        model="capped", max_completion_tokens=500, messages=[{"role": "user", "content": "hi"}]
    )
    assert fake.seen[-1].body["max_completion_tokens"] == 500
