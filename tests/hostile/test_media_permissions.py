"""Media a worker reads that the gate let through without the permission it needs.

Audio: ``/v1/audio/*`` needs the ``audio`` permission, but audio inside a chat message (OpenAI's
``input_audio`` part, vLLM's ``audio_url`` and ``audio_embeds``, typed or not), a Responses input
or a ``count_tokens`` body reached the worker with ``chat`` alone.

Found beside it (vLLM ``chat_utils._parse_chat_message_content_mm_part``):
- a part that carries a ``uuid`` is read by its fields whatever its ``type``: a ``"type":
  "text"`` part with a ``uuid`` and an ``image_url`` (or ``input_audio``) is an image (audio) to
  vLLM, and a field present as null names media cached under that ``uuid``;
- rerank and score take multimodal sides (``{"content": [image parts]}``, jina-reranker-m0 and
  the like) and embeddings take chat ``messages``: an ``embeddings`` key had images (audio)
  processed without ``vision`` (``audio``).

Each case runs a real gateway in front of a real aiohttp worker, which must see nothing.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dialects import inputs
from gateway.server import Server
from tests.clients import AUTH, TEST_KEY_SHA
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream

PNG = "data:image/png;base64,iVBORw0KGgo="
WAV = {"data": "UklGRiQAAABXQVZF", "format": "wav"}
AUDIO_PARTS: dict[str, dict[str, Any]] = {
    "input_audio": {"type": "input_audio", "input_audio": WAV},
    "audio_url": {"type": "audio_url", "audio_url": {"url": "https://example.com/a.wav"}},
    "audio_embeds": {"type": "audio_embeds", "audio_embeds": "AAAA"},
    "untyped audio_url": {"audio_url": "https://example.com/a.wav"},
    "untyped input_audio": {"input_audio": WAV},
    "text with a uuid and input_audio": {
        "type": "text",
        "text": "hi",
        "uuid": "a1",
        "input_audio": WAV,
    },
}
ESCAPED = "escaped input_audio"  # the bytes hold no "audio": only the parsed type does
AUDIO_PARTS[ESCAPED] = AUDIO_PARTS["input_audio"]
MORE_IMAGES: dict[str, dict[str, Any]] = {
    "text with a uuid and image_url": {
        "type": "text",
        "text": "hi",
        "uuid": "i1",
        "image_url": {"url": PNG},
    },
    "a uuid naming a cached image": {"uuid": "i1", "image_url": None},
    "video_embeds (vLLM's newest part)": {"type": "video_embeds", "video_embeds": "AAAA"},
}


def _config(upstream: str, permissions: str, apis: tuple[str, ...] = ("chat", "responses")) -> str:
    return gateway_yaml(
        {"up": upstream},
        {"m": {"upstreams": ["up"], "apis": list(apis)}},
        extra=f"keys: {{static: [{{id: k, owner: o, sha256: '{TEST_KEY_SHA}', "
        f"permissions: {permissions}}}]}}\n",
    )


async def _post(port: int, path: str, raw: str, **headers: str) -> tuple[int, bytes]:
    sent = {**AUTH, "Content-Type": "application/json", **headers}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}{path}", data=raw, headers=sent) as r,
    ):
        return r.status, await r.read()


def _chat(part: dict[str, Any], escaped: bool = False) -> str:
    message = {"role": "user", "content": [{"type": "text", "text": "listen"}, part]}
    raw = json.dumps({"model": "m", "messages": [message]})
    return raw.replace('"input_audio"', '"input_\\u0061udio"') if escaped else raw


@pytest.mark.parametrize("shape", sorted(AUDIO_PARTS))
async def test_audio_in_a_chat_needs_the_audio_permission(
    gateway_factory: Any, fake: FakeUpstream, shape: str
) -> None:
    """Attack: a key with ``[chat]`` sends audio in a chat message. Observed (before): 200,
    the worker got the audio. Expected: 403 ``permission_denied`` naming ``audio``."""
    server: Server = await gateway_factory(_config(fake.url, "[chat]"))
    raw = _chat(AUDIO_PARTS[shape], shape == ESCAPED)
    assert shape != ESCAPED or b"audio" not in raw.encode()
    status, answer = await _post(server.port, "/v1/chat/completions", raw)
    assert status == 403 and b"'audio'" in answer, (status, answer[:300])
    assert fake.seen == []


async def test_the_same_audio_passes_with_the_permission(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    server: Server = await gateway_factory(_config(fake.url, "[chat, audio]"))
    for shape in sorted(AUDIO_PARTS):
        raw = _chat(AUDIO_PARTS[shape], shape == ESCAPED)
        status, answer = await _post(server.port, "/v1/chat/completions", raw)
        assert status == 200, (shape, answer[:300])


async def test_audio_in_responses_and_count_tokens_needs_it(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    server: Server = await gateway_factory(_config(fake.url, "[chat]"))
    item = {"role": "user", "content": [{"type": "input_audio", "input_audio": WAV}]}
    raw = json.dumps({"model": "m", "input": [item]})
    status, answer = await _post(server.port, "/v1/responses", raw)
    assert status == 403 and b"'audio'" in answer, (status, answer[:300])
    raw = json.dumps({"model": "m", "messages": [item]})
    status, answer = await _post(
        server.port, "/v1/messages/count_tokens", raw, **{"anthropic-version": "2023-06-01"}
    )
    assert status == 403 and b"audio" in answer, (status, answer[:300])
    assert fake.seen == []


@pytest.mark.parametrize("shape", sorted(MORE_IMAGES))
async def test_a_part_with_a_uuid_is_what_its_fields_say(
    gateway_factory: Any, fake: FakeUpstream, shape: str
) -> None:
    """Attack: a ``[chat]`` key sends a ``"type": "text"`` part with a ``uuid`` and an
    ``image_url`` (vLLM reads it as the image), a bare ``uuid`` naming a cached image, or a
    ``video_embeds`` part (vLLM's newest parser). Observed (before): 200. Expected: 403 naming
    ``vision``."""
    server: Server = await gateway_factory(_config(fake.url, "[chat]"))
    status, answer = await _post(server.port, "/v1/chat/completions", _chat(MORE_IMAGES[shape]))
    assert status == 403 and b"'vision'" in answer, (status, answer[:300])
    assert fake.seen == []


IMAGE = {"type": "image_url", "image_url": {"url": PNG}}
SCORING = ("embeddings", "rerank")
SCORED: dict[str, tuple[str, dict[str, Any]]] = {
    "rerank documents": (
        "/v1/rerank",
        {"query": "a cat", "documents": [{"content": [IMAGE]}]},
    ),
    "rerank query": ("/v1/rerank", {"query": {"content": [IMAGE]}, "documents": ["a cat"]}),
    "score data_2": ("/v1/score", {"data_1": "a cat", "data_2": {"content": [IMAGE]}}),
    "embeddings messages": (
        "/v1/embeddings",
        {"input": "x", "messages": [{"role": "user", "content": [IMAGE]}]},
    ),
}


@pytest.mark.parametrize("shape", sorted(SCORED))
async def test_images_to_rerank_score_and_embeddings_need_vision(
    gateway_factory: Any, fake: FakeUpstream, shape: str
) -> None:
    """Attack: an ``[embeddings]`` key sends images as a rerank or score side, or as chat
    ``messages`` to embeddings. Observed (before): 200, the worker got the image. Expected:
    403 naming ``vision``; with ``vision`` the request is served."""
    path, body = SCORED[shape]
    raw = json.dumps({"model": "m", **body})
    server: Server = await gateway_factory(_config(fake.url, "[embeddings]", SCORING))
    status, answer = await _post(server.port, path, raw)
    assert status == 403 and b"'vision'" in answer, (status, answer[:300])
    assert fake.seen == []
    allowed: Server = await gateway_factory(_config(fake.url, "[embeddings, vision]", SCORING))
    status, answer = await _post(allowed.port, path, raw)
    assert status == 200, answer[:300]


KEYS = ["type", "uuid", "content", "output", "messages", "input", "query", "documents", "data_2"]
NAMES = ["input_audio", "audio_url", "audio_embeds", "image_url", "video_url", "text", "x"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-1, 9) | st.text(max_size=4) | st.sampled_from(NAMES),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS + NAMES), children, max_size=5)
    ),
    max_leaves=20,
)


@given(JSON)
def test_whatever_needs_a_permission_passes_the_byte_test(body: Any) -> None:
    """The byte test is a shortcut before the walk: it must never hide media from it (JSON
    escapes included: orjson writes none, so they are added by hand)."""
    needs = inputs.media_permissions(body)
    assert set(needs) <= {"vision", "audio"}
    if needs:
        raw = orjson.dumps(body)
        assert inputs.may_carry_media(raw)
        assert inputs.may_carry_media(raw.replace(b"audio", b"\\u0061udio"))
