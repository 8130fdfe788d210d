"""Chat's own checks of what a key and a model allow: an image input needs ``vision`` beside
``chat`` (both dialects), and a model that does not serve chat says so (400
``model_not_supported``), never the worker's 404."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

IMAGE_OPENAI = {
    "model": "m",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ],
}
IMAGE_ANTHROPIC = {
    "model": "m",
    "max_tokens": 5,
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "text", "text": "what is this"},
            ],
        }
    ],
}


def config(upstream: str, permissions: str) -> str:
    return gateway_yaml(
        {"up": upstream},
        {"m": {"upstreams": ["up"]}, "e": {"upstreams": ["up"], "apis": ["embeddings"]}},
        extra=f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', "
        f"permissions: {permissions}}}]}}\n",
    )


async def post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {**AUTH, "anthropic-version": "2023-06-01"} if "messages" in path else AUTH
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat/completions", IMAGE_OPENAI), ("/v1/messages", IMAGE_ANTHROPIC)],
    ids=["openai", "anthropic"],
)
async def test_an_image_needs_vision(
    gateway_factory: Any, fake: FakeUpstream, path: str, body: dict[str, Any]
) -> None:
    chat_only: Server = await gateway_factory(config(fake.url, "[chat]"))
    status, answer = await post(chat_only.port, path, body)
    assert status == 403 and "vision" in str(answer), answer
    assert fake.seen == []
    with_vision: Server = await gateway_factory(config(fake.url, "[chat, vision]"))
    assert (await post(with_vision.port, path, body))[0] == 200


async def test_a_text_chat_needs_no_vision(gateway_factory: Any, fake: FakeUpstream) -> None:
    server: Server = await gateway_factory(config(fake.url, "[chat]"))
    body = {"model": "m", "messages": [{"role": "user", "content": "image_url is a word"}]}
    assert (await post(server.port, "/v1/chat/completions", body))[0] == 200


async def test_a_model_that_does_not_serve_chat_says_so(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    server: Server = await gateway_factory(config(fake.url, "[chat]"))
    body = {"model": "e", "messages": [{"role": "user", "content": "hi"}]}
    status, answer = await post(server.port, "/v1/chat/completions", body)
    assert status == 400 and answer["error"]["code"] == "model_not_supported", answer
    assert "chat" in answer["error"]["message"] and fake.seen == []
