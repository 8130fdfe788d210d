"""Images a chat worker reads that the gate did not see: the ``vision`` permission holds for
every shape of image (and video) input vLLM's chat parser accepts, not only the ``type`` names
of OpenAI's documentation.

vLLM (``vllm/entrypoints/chat_utils.py``) parses a content part by its ``type`` when it is one
of its parsers (``image_url``, ``input_image``, ``image_embeds``, ``image_pil``, ``video_url``,
…) and, when ``type`` is missing, by the field the part carries (``{"image_url": …}``,
``{"image_embeds": …}``, ``{"video_url": …}``). A key with ``chat`` alone sent such a part and
the worker got it: a 200 where the documented shape is a 403 naming ``vision``.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

PNG = "data:image/png;base64,iVBORw0KGgo="
PARTS: dict[str, dict[str, Any]] = {
    "untyped image_url": {"image_url": {"url": PNG}},
    "untyped image_url string": {"image_url": PNG},
    "image_embeds": {"type": "image_embeds", "image_embeds": "AAAA"},
    "untyped image_embeds": {"image_embeds": "AAAA"},
    "image_pil": {"type": "image_pil", "image_pil": PNG},
    "video_url": {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
    "untyped video_url": {"video_url": {"url": "https://example.com/v.mp4"}},
}
ESCAPED = "escaped untyped video_url"  # sent as the JSON escape "vide\\u006f_url"
PARTS[ESCAPED] = PARTS["untyped video_url"]


def _config(upstream: str, permissions: str) -> str:
    return gateway_yaml(
        {"up": upstream},
        {"m": {"upstreams": ["up"]}},
        extra=f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', "
        f"permissions: {permissions}}}]}}\n",
    )


async def _chat(
    port: int, part: dict[str, Any], where: str, escaped: bool = False
) -> tuple[int, bytes]:
    message: dict[str, Any] = {"role": "user", "content": [{"type": "text", "text": "hi"}, part]}
    if where == "tool":
        message = {"role": "tool", "tool_call_id": "c1", "content": [part]}
    body = {"model": "m", "messages": [{"role": "user", "content": "look"}, message]}
    raw = json.dumps(body)
    if escaped:  # the bytes hold no "video": only the parsed key does
        raw = raw.replace("video_url", "vide\\u006f_url")
    headers = {**AUTH, "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}/v1/chat/completions", data=raw, headers=headers) as r,
    ):
        return r.status, await r.read()


@pytest.mark.parametrize("where", ["user", "tool"])
@pytest.mark.parametrize("shape", sorted(PARTS))
async def test_every_image_shape_a_worker_reads_needs_vision(
    gateway_factory: Any, fake: FakeUpstream, shape: str, where: str
) -> None:
    """Attack: a key with ``[chat]`` only sends an image in a shape vLLM reads but the gate
    did not look for. Observed (before): 200, the worker got the image. Expected: 403 naming
    ``vision``, nothing sent upstream."""
    server: Server = await gateway_factory(_config(fake.url, "[chat]"))
    status, answer = await _chat(server.port, PARTS[shape], where, shape == ESCAPED)
    assert status == 403 and b"vision" in answer, (status, answer[:200])
    assert fake.seen == []


async def test_the_same_shapes_pass_with_vision(gateway_factory: Any, fake: FakeUpstream) -> None:
    server: Server = await gateway_factory(_config(fake.url, "[chat, vision]"))
    for shape in sorted(PARTS):
        assert (await _chat(server.port, PARTS[shape], "user"))[0] == 200, shape


async def test_a_text_part_that_names_an_image_needs_no_vision(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """Only a part that carries the input counts: text about images, a part whose image field
    is null, are text."""
    server: Server = await gateway_factory(_config(fake.url, "[chat]"))
    for part in (
        {"type": "text", "text": "an image_url and a video_url"},
        {"type": "text", "text": "x", "image_url": None},
    ):
        assert (await _chat(server.port, part, "user"))[0] == 200, part


RESPONSES_IMAGES = {
    "function_call_output": [
        {"type": "function_call", "call_id": "c1", "name": "look", "arguments": "{}"},
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": [{"type": "input_image", "image_url": PNG}],
        },
    ],
    "input message": [
        {"role": "user", "content": [{"type": "input_image", "image_url": PNG}]},
    ],
}


@pytest.mark.parametrize("shape", sorted(RESPONSES_IMAGES))
async def test_a_responses_image_needs_vision(
    gateway_factory: Any, fake: FakeUpstream, shape: str
) -> None:
    """Attack: a ``[chat]`` key sends an image as a tool's output (``function_call_output``
    with an ``input_image`` in ``output``), which the translation gives the worker as an
    ``image_url`` part of the tool message. Observed (before): 200, the worker got the image.
    Expected: 403 naming ``vision``."""
    text = _config(fake.url, "[chat]").replace(
        '"upstreams": ["up"]', '"upstreams": ["up"], "apis": ["chat", "responses"]'
    )
    server: Server = await gateway_factory(text)
    body = {"model": "m", "input": RESPONSES_IMAGES[shape]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{server.port}/v1/responses", json=body, headers=AUTH) as r,
    ):
        status, answer = r.status, await r.read()
    assert status == 403 and b"vision" in answer, (status, answer[:200])
    assert fake.seen == []


async def test_counting_an_images_tokens_needs_vision(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """Attack: a ``[chat]`` key asks ``count_tokens`` for a conversation with an image; the
    worker's ``/tokenize`` runs its image processor over it (vLLM). Observed (before): 200, the
    worker got the image. Expected: 403 naming ``vision``, as the same body on /v1/messages."""
    server: Server = await gateway_factory(_config(fake.url, "[chat]"))
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [image]}]}
    headers = {**AUTH, "anthropic-version": "2023-06-01"}
    url = f"http://127.0.0.1:{server.port}/v1/messages/count_tokens"
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
        status, answer = r.status, await r.read()
    assert status == 403 and b"vision" in answer, (status, answer[:200])
    assert fake.seen == []
