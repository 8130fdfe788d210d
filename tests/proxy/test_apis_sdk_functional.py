"""Every API beside chat through the gateway with the official openai SDK (or raw HTTP where the
SDK has no method: rerank, score), to the bundled mock worker: what the client gets, that it
carries the public model name, and what reached the worker."""

from __future__ import annotations

import base64
import struct
from typing import Any

import openai
import pytest
from aiohttp import web

from gateway.mock_worker import MockState
from gateway.proxy.apis import count_tokens_exact
from gateway.server import Server
from tests.clients import sdk
from tests.fakes import FakeUpstream
from tests.proxy.apis_support import apis_yaml, form, post, wav


@pytest.fixture
async def served(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> tuple[Server, MockState]:
    server: Server = await gateway_factory(apis_yaml(mock[0], fake.url))
    return server, mock[1]


def last_seen(state: MockState, path: str) -> Any:
    seen = [body for p, _, body in state.api_requests if p == path]
    assert seen, f"nothing reached {path}"
    return seen[-1]


async def test_completions_whole(served: tuple[Server, MockState]) -> None:
    server, state = served
    answer = await sdk(server).completions.create(
        model="gpt-4o-mini", prompt="say:4", max_tokens=3, n=2
    )
    assert answer.model == "gpt-4o-mini"  # the name asked for, not the worker's
    assert [c.text for c in answer.choices] == ["tok0 tok1 tok2"] * 2
    assert [c.finish_reason for c in answer.choices] == ["length", "length"]
    assert answer.usage is not None and answer.usage.completion_tokens == 6
    sent = last_seen(state, "/v1/completions")
    assert sent["model"] == "mock-upstream" and "stream_options" not in sent


async def test_completions_prompt_list_echo_and_logprobs(served: tuple[Server, MockState]) -> None:
    server, _ = served
    answer = await sdk(server).completions.create(
        model="mock-model", prompt=["echo: a b", "echo: c"], echo=True, logprobs=1
    )
    assert [c.text for c in answer.choices] == ["echo: a ba b", "echo: cc"]
    assert answer.choices[0].logprobs is not None
    assert answer.choices[0].logprobs.tokens == ["a", " b"]


async def test_completions_stream_usage_only_when_asked(served: tuple[Server, MockState]) -> None:
    server, state = served
    client = sdk(server)
    plain = [
        c
        async for c in await client.completions.create(
            model="gpt-4o-mini", prompt="say:3", stream=True
        )
    ]
    assert "".join(c.choices[0].text for c in plain if c.choices) == "tok0 tok1 tok2"
    assert all(c.choices for c in plain), "the usage chunk reached a client that did not ask"
    assert all(c.model == "gpt-4o-mini" for c in plain)
    assert last_seen(state, "/v1/completions")["stream_options"] == {"include_usage": True}
    asked = [
        c
        async for c in await client.completions.create(
            model="mock-model",
            prompt="say:3",
            stream=True,
            stream_options={"include_usage": True},
        )
    ]
    assert not asked[-1].choices
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 3


async def test_embeddings_every_input_form(served: tuple[Server, MockState]) -> None:
    server, state = served
    client = sdk(server)
    one = await client.embeddings.create(model="gpt-4o-mini", input="hello there world")
    assert one.model == "gpt-4o-mini" and len(one.data) == 1
    assert len(one.data[0].embedding) == 16
    assert one.usage.prompt_tokens == 3
    many = await client.embeddings.create(model="mock-model", input=["a", "b c"], dimensions=4)
    assert [len(d.embedding) for d in many.data] == [4, 4]
    assert many.usage.prompt_tokens == 3
    tokens = await client.embeddings.create(model="mock-model", input=[[1, 2, 3], [4]])
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 4
    assert last_seen(state, "/v1/embeddings")["model"] == "mock-upstream"


async def test_embeddings_base64(served: tuple[Server, MockState]) -> None:
    server, _ = served
    status, _, answer = await post(
        server,
        "/v1/embeddings",
        json={"model": "mock-model", "input": "x y", "encoding_format": "base64", "dimensions": 3},
    )
    assert status == 200 and answer["model"] == "mock-model"
    floats = struct.unpack("<3f", base64.b64decode(answer["data"][0]["embedding"]))
    assert abs(sum(f * f for f in floats) - 1.0) < 1e-5


@pytest.mark.parametrize(
    ("path", "worker_path"),
    [("/v1/rerank", "/v1/rerank"), ("/rerank", "/v1/rerank"), ("/v2/rerank", "/v2/rerank")],
)
async def test_rerank(served: tuple[Server, MockState], path: str, worker_path: str) -> None:
    server, state = served
    status, _, answer = await post(
        server,
        path,
        json={"model": "gpt-4o-mini", "query": "red fox", "documents": ["blue sky", "red fox"]},
    )
    assert status == 200, answer
    assert answer["model"] == "gpt-4o-mini"
    assert [r["index"] for r in answer["results"]] == [1, 0]
    assert last_seen(state, worker_path)["model"] == "mock-upstream"


@pytest.mark.parametrize("path", ["/v1/score", "/score"])
async def test_score(served: tuple[Server, MockState], path: str) -> None:
    server, _ = served
    status, _, answer = await post(
        server,
        path,
        json={"model": "mock-model", "text_1": "red fox", "text_2": ["red fox", "blue"]},
    )
    assert status == 200, answer
    assert [d["index"] for d in answer["data"]] == [0, 1]
    assert answer["data"][0]["score"] > answer["data"][1]["score"]
    assert answer["usage"]["prompt_tokens"] == 7  # the words of both pairs


async def test_audio_transcription_every_format(served: tuple[Server, MockState]) -> None:
    server, state = served
    client = sdk(server)
    audio = ("tone.wav", wav(2.0), "audio/wav")
    whole = await client.audio.transcriptions.create(model="gpt-4o-mini", file=audio)
    assert whole.text == "Transcribed tone.wav: 2.00 seconds of audio."
    srt = await client.audio.transcriptions.create(
        model="mock-model", file=audio, response_format="srt"
    )
    assert "00:00:00,000 --> 00:00:02,000" in srt
    text = await client.audio.transcriptions.create(
        model="mock-model", file=audio, response_format="text"
    )
    assert text.strip() == whole.text
    verbose = await client.audio.transcriptions.create(
        model="mock-model", file=audio, response_format="verbose_json"
    )
    assert verbose.duration == 2.0
    seen = last_seen(state, "/v1/audio/transcriptions")
    assert seen["fields"]["model"] == "mock-upstream"
    assert seen["files"] == {"file": len(audio[1])}


async def test_audio_translation(served: tuple[Server, MockState]) -> None:
    server, _ = served  # (the SDK's translations.create is deprecated: sent as it sends it)
    status, _, answer = await post(
        server,
        "/v1/audio/translations",
        data=form([("model", "mock-model"), ("file", ("t.wav", wav(0.5)))]),
    )
    assert status == 200, answer
    assert answer["text"] == "Translated t.wav: 0.50 seconds of audio."


async def test_audio_streamed_transcription_is_relayed(served: tuple[Server, MockState]) -> None:
    server, _ = served
    status, headers, raw = await post(
        server,
        "/v1/audio/transcriptions",
        data=form([("model", "mock-model"), ("stream", "true"), ("file", ("a.wav", wav(0.25)))]),
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert raw.endswith(b"data: [DONE]\n\n") and b"transcription.chunk" in raw


async def test_images_generate_and_edit(served: tuple[Server, MockState]) -> None:
    server, state = served
    client = sdk(server)
    made = await client.images.generate(model="gpt-4o-mini", prompt="a red fox", n=2)
    assert len(made.data) == 2 and made.data[0].b64_json
    assert last_seen(state, "/v1/images/generations")["model"] == "mock-upstream"
    edited = await client.images.edit(
        model="mock-model", prompt="add a hat", image=("fox.png", b"\x89PNG fake", "image/png")
    )
    assert len(edited.data) == 1
    seen = last_seen(state, "/v1/images/edits")
    assert seen["fields"]["prompt"] == "add a hat" and seen["files"] == {"image": 9}


async def test_models_lists_aliases_with_their_apis(served: tuple[Server, MockState]) -> None:
    server, _ = served
    listed = await sdk(server).models.list()
    ids = [m.id for m in listed.data]
    assert ids == ["mock-model", "gpt-4o-mini", "chat-only", "fake-model"]
    apis = {m.id: m.model_extra["apis"] for m in listed.data if m.model_extra}
    assert apis["gpt-4o-mini"] == apis["mock-model"] == [
        "chat", "responses", "completions", "embeddings", "rerank", "audio", "images",
    ]  # fmt: skip
    assert apis["chat-only"] == ["chat"]


async def test_model_not_supported_names_the_model_and_api(
    served: tuple[Server, MockState],
) -> None:
    server, state = served
    before = len(state.api_requests)
    with pytest.raises(openai.BadRequestError) as info:
        await sdk(server).embeddings.create(model="chat-only", input="x")
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_supported"
    assert "'chat-only'" in error["message"] and "embeddings API" in error["message"]
    status, _, answer = await post(
        server,
        "/v1/audio/transcriptions",
        data=form([("model", "chat-only"), ("file", ("a.wav", wav(0.1)))]),
    )
    assert status == 400 and answer["error"]["code"] == "model_not_supported"
    assert "audio API" in answer["error"]["message"]
    assert len(state.api_requests) == before  # nothing reached the worker


async def test_count_tokens_exact_is_the_workers_count(served: tuple[Server, MockState]) -> None:
    server, _ = served
    runtime = server.runtime
    route = runtime.router.resolve("mock-model")
    assert route is not None
    body = {
        "model": "mock-model",
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello there"}],
    }
    exact = await count_tokens_exact(runtime, route, body)
    chat = await sdk(server).chat.completions.create(
        model="mock-model",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
    )
    assert chat.usage is not None and exact == chat.usage.prompt_tokens == 10


async def test_count_tokens_exact_is_none_without_a_tokenizer(
    served: tuple[Server, MockState], fake: FakeUpstream
) -> None:
    server, _ = served

    async def missing(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"detail": "Not Found"}, status=404)

    fake.script = missing
    route = server.runtime.router.resolve("fake-model")
    assert route is not None
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    assert await count_tokens_exact(server.runtime, route, body) is None
    assert fake.seen[-1].path == "/tokenize"


async def test_answers_of_an_independent_worker_carry_the_public_name(
    served: tuple[Server, MockState], fake: FakeUpstream
) -> None:
    server, _ = served

    async def embeddings(request: web.Request, body: Any) -> web.StreamResponse:
        raw = (
            b'{"object": "list", "model" : "org/fake", "data": [{"object": "embedding", '
            b'"index": 0, "embedding": [0.5, 0.5]}], "usage": {"prompt_tokens": 7, '
            b'"total_tokens": 7}}'
        )
        return web.Response(body=raw, content_type="application/json")

    fake.script = embeddings
    answer = await sdk(server).embeddings.create(model="fake-model", input="hi")
    assert answer.model == "fake-model" and answer.usage.prompt_tokens == 7
    assert fake.seen[-1].body["model"] == "org/fake"
