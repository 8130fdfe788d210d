"""The bundled mock worker's APIs beside chat, straight (no gateway): the official openai SDK
where it has a method, raw HTTP for the rest; vLLM's shapes, the ``x-mock-*`` failure markers,
the API key."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from gateway.mock_worker import MOCK_STATE, MockOptions, MockState, start
from tests.proxy.apis_support import form, wav


@pytest.fixture
async def worker() -> AsyncIterator[tuple[str, MockState]]:
    runner, port = await start(MockOptions(api_key="worker-key"))
    yield f"http://127.0.0.1:{port}", runner.app[MOCK_STATE]
    await runner.cleanup()


@pytest.fixture
async def client(worker: tuple[str, MockState]) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=worker[0] + "/v1", api_key="worker-key", max_retries=0)
    yield sdk
    await sdk.close()


async def call(
    url: str, *, json: Any = None, data: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    """Status, content type and body (what came of it, when the worker cut it)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url,
            json=json,
            data=data,
            headers={"Authorization": "Bearer worker-key", **(headers or {})},
        ) as r,
    ):
        got = bytearray()
        try:
            async for piece in r.content.iter_any():
                got += piece
        except aiohttp.ClientPayloadError:
            pass  # cut on purpose (x-mock-die-after)
        return r.status, r.content_type, bytes(got)


async def test_completions(client: openai.AsyncOpenAI) -> None:
    answer = await client.completions.create(model="m", prompt=["say:2", "echo: hi"], n=2)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    assert [c.text for c in answer.choices] == ["tok0 tok1", "tok0 tok1", "hi", "hi"]
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 6)
    cut = await client.completions.create(model="m", prompt="say:9", max_tokens=2, echo=True)
    assert (cut.choices[0].text, cut.choices[0].finish_reason) == ("say:9tok0 tok1", "length")


async def test_completions_stream(client: openai.AsyncOpenAI) -> None:
    chunks = [
        c
        async for c in await client.completions.create(
            model="m", prompt="say:3", stream=True, stream_options={"include_usage": True}
        )
    ]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "tok0 tok1 tok2"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_completions_die_after_cuts_the_stream(worker: tuple[str, MockState]) -> None:
    status, _, raw = await call(
        worker[0] + "/v1/completions",
        json={"model": "m", "prompt": "say:5", "stream": True},
        headers={"x-mock-die-after": "2"},
    )
    assert status == 200 and raw.count(b"data: ") == 2 and b"[DONE]" not in raw


async def test_embeddings(client: openai.AsyncOpenAI) -> None:
    first = await client.embeddings.create(model="m", input=["a b", "a b", "c"])
    vectors = [d.embedding for d in first.data]
    assert vectors[0] == vectors[1] != vectors[2] and len(vectors[0]) == 16
    assert first.usage.prompt_tokens == 5
    status, _, raw = await call(
        str(client.base_url) + "embeddings",
        json={"model": "m", "input": "a b", "encoding_format": "base64", "dimensions": 16},
    )
    encoded = orjson.loads(raw)["data"][0]["embedding"]
    assert status == 200
    assert list(struct.unpack("<16f", base64.b64decode(encoded))) == pytest.approx(vectors[0])


async def test_rerank_and_score(worker: tuple[str, MockState]) -> None:
    docs = ["the red fox", "blue sky", "red"]
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        status, _, raw = await call(
            worker[0] + path, json={"model": "m", "query": "red fox", "documents": docs, "top_n": 2}
        )
        answer = orjson.loads(raw)
        assert status == 200 and [r["index"] for r in answer["results"]] == [0, 2]
    for body in (
        {"model": "m", "text_1": "red fox", "text_2": docs},
        {"model": "m", "queries": "red fox", "documents": docs},
    ):
        status, _, raw = await call(worker[0] + "/score", json=body)
        scores = [d["score"] for d in orjson.loads(raw)["data"]]
        assert status == 200 and scores[0] > scores[2] > scores[1]


async def test_audio(client: openai.AsyncOpenAI, worker: tuple[str, MockState]) -> None:
    tone = ("tone.wav", wav(1.5), "audio/wav")
    answer = await client.audio.transcriptions.create(model="m", file=tone)
    assert answer.text == "Transcribed tone.wav: 1.50 seconds of audio."
    vtt = await client.audio.transcriptions.create(model="m", file=tone, response_format="vtt")
    assert vtt.startswith("WEBVTT") and "00:00:01.500" in vtt
    status, kind, raw = await call(
        worker[0] + "/v1/audio/transcriptions",
        data=form([("model", "m"), ("stream", "true"), ("file", ("a.wav", wav(0.1)))]),
    )
    assert (status, kind) == (200, "text/event-stream") and raw.endswith(b"[DONE]\n\n")
    status, _, raw = await call(worker[0] + "/v1/audio/translations", data=form([("model", "m")]))
    assert status == 400 and b"`file` is required" in raw


async def test_images(client: openai.AsyncOpenAI) -> None:
    made = await client.images.generate(model="m", prompt="fox", n=3)
    assert len(made.data) == 3 and base64.b64decode(made.data[0].b64_json or "")[:4] == b"\x89PNG"
    urls = await client.images.generate(model="m", prompt="fox", response_format="url")
    assert (urls.data[0].url or "").startswith("https://")
    edited = await client.images.edit(model="m", prompt="hat", image=("f.png", b"x", "image/png"))
    assert len(edited.data) == 1


async def test_tokenize_in_both_shapes(worker: tuple[str, MockState]) -> None:
    url = worker[0] + "/tokenize"
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    status, _, raw = await call(url, json={"model": "m", "messages": messages})
    assert status == 200 and orjson.loads(raw)["count"] == 9  # (2 + 3) + (1 + 3)
    status, _, raw = await call(url, json={"model": "m", "prompt": "one two three"})
    assert orjson.loads(raw)["count"] == 3
    status, _, raw = await call(url, json={"content": "one two"})
    assert orjson.loads(raw) == {"tokens": [0, 1]}


async def test_failure_markers_and_key(worker: tuple[str, MockState]) -> None:
    url = worker[0] + "/v1/embeddings"
    status, _, raw = await call(
        url, json={"model": "m", "input": "x"}, headers={"x-mock-status": "503"}
    )
    assert status == 503 and b"Injected failure" in raw
    status, _, raw = await call(
        url, json={"model": "m", "input": "x"}, headers={"x-mock-no-usage": "1"}
    )
    assert status == 200 and b"usage" not in raw
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json={"model": "m", "input": "x"}) as r,
    ):
        assert r.status == 401
    seen = worker[1].api_requests
    assert [p for p, _, _ in seen] == ["/v1/embeddings", "/v1/embeddings"]
    assert seen[0][1]["x-mock-status"] == "503"
