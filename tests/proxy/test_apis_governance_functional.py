"""The non-chat APIs are governed as chat is: permissions, limits, usage, the access log, and the
worker's failures; multipart uploads stream to the worker as they arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from gateway.config.load import parse_text
from gateway.mock_worker import MockState
from gateway.server import Server
from tests.clients import TEST_KEY, sdk
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream
from tests.proxy.apis_support import (
    AUDIO_KEY,
    CHAT_KEY,
    EVERY_API,
    IMAGES_KEY,
    RPM2_KEY,
    apis_yaml,
    bearer,
    form,
    keys_yaml,
    post,
    wav,
)


@pytest.fixture
async def served(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> tuple[Server, MockState]:
    server: Server = await gateway_factory(apis_yaml(mock[0], fake.url))
    return server, mock[1]


EMBED = ("/v1/embeddings", {"model": "mock-model", "input": "a b c"})
COMPLETE = ("/v1/completions", {"model": "mock-model", "prompt": "say:2"})
RERANK = ("/v1/rerank", {"model": "mock-model", "query": "a", "documents": ["a"]})
SCORE = ("/score", {"model": "mock-model", "text_1": "a", "text_2": "a"})
IMAGES = ("/v1/images/generations", {"model": "mock-model", "prompt": "a fox"})


def audio_form() -> aiohttp.FormData:
    return form([("model", "mock-model"), ("file", ("a.wav", wav(0.1)))])


def edit_form() -> aiohttp.FormData:
    return form([("model", "mock-model"), ("prompt", "hat"), ("image", ("a.png", b"png"))])


async def status_of(server: Server, key: str, what: str) -> tuple[int, Any]:
    json_calls = {"embed": EMBED, "complete": COMPLETE, "rerank": RERANK, "score": SCORE}
    if what in json_calls or what == "images":
        path, body = json_calls.get(what, IMAGES)
        status, _, answer = await post(server, path, json=body, headers=bearer(key))
    else:
        path, data = (
            ("/v1/audio/transcriptions", audio_form())
            if what == "audio"
            else ("/v1/images/edits", edit_form())
        )
        status, _, answer = await post(server, path, data=data, headers=bearer(key))
    return status, answer


@pytest.mark.parametrize(
    ("key", "allowed", "needed"),
    [
        (CHAT_KEY, {"complete"}, "embeddings"),
        (IMAGES_KEY, {"images", "edit"}, "chat"),
        (AUDIO_KEY, {"audio"}, "images"),
    ],
)
async def test_each_api_needs_its_permission(
    served: tuple[Server, MockState], key: str, allowed: set[str], needed: str
) -> None:
    server, _ = served
    for what in ("embed", "complete", "rerank", "score", "images", "audio", "edit"):
        status, answer = await status_of(server, key, what)
        if what in allowed:
            assert status == 200, (what, answer)
        else:
            assert status == 403, (what, answer)
            assert answer["error"]["code"] == "permission_denied"
            assert "permission" in answer["error"]["message"]


async def test_rpm_two_refuses_the_third_embeddings_call(served: tuple[Server, MockState]) -> None:
    server, state = served
    client = sdk(server, api_key=RPM2_KEY)
    for _ in range(2):
        await client.embeddings.create(model="mock-model", input="x")
    before = len(state.api_requests)
    with pytest.raises(openai.RateLimitError) as info:
        await client.embeddings.create(model="mock-model", input="x")
    assert info.value.response.headers["Retry-After"].isdigit()
    assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert len(state.api_requests) == before


async def test_rpm_counts_every_api_together(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    """One key's rpm holds across chat, completions, embeddings, rerank, audio and images."""
    extra = "plans: {free: {rpm: 4}}\n"
    server: Server = await gateway_factory(apis_yaml(mock[0], fake.url, extra))
    seen = [(await status_of(server, TEST_KEY, w))[0] for w in ("embed", "rerank", "audio")]
    chat = await post(
        server,
        "/v1/chat/completions",
        json={"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    seen.append(chat[0])
    seen.append((await status_of(server, TEST_KEY, "images"))[0])
    assert seen == [200, 200, 200, 200, 429]


async def test_usage_is_settled_per_key(served: tuple[Server, MockState]) -> None:
    """Embeddings settle to the worker's prompt tokens, completions to prompt + completion,
    images and audio count as requests without tokens."""
    server, _ = served
    for what in ("embed", "complete", "images", "audio"):
        assert (await status_of(server, TEST_KEY, what))[0] == 200

    async def totals() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{server.port}/api/keys/test/usage?days=1", headers=bearer()
            ) as r,
        ):
            assert r.status == 200
            found: dict[str, Any] = (await r.json())["totals"]
            return found

    deadline = asyncio.get_running_loop().time() + 5
    while (found := await totals())["requests"] < 4:
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.05)
    # embeddings: 3 prompt tokens; completions ("say:2"): 1 prompt + 2 completion
    assert (found["promptTokens"], found["completionTokens"]) == (4, 2)


async def test_the_access_log_and_the_metrics_name_the_api(
    mock: tuple[int, MockState], fake: FakeUpstream, capfd: pytest.CaptureFixture[str]
) -> None:
    server = Server(parse_text(apis_yaml(mock[0], fake.url), "t.yaml", env={}))
    await server.start()
    try:
        for what in ("embed", "rerank", "audio", "images", "complete"):
            assert (await status_of(server, TEST_KEY, what))[0] == 200
        await post(server, "/v1/embeddings", json={"model": "chat-only", "input": "x"})
        chat = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}
        assert (await post(server, "/v1/chat/completions", json=chat))[0] == 200
        answer = {"model": "mock-model", "input": "hi"}
        assert (await post(server, "/v1/responses", json=answer))[0] == 200
        assert (await post(server, "/v1/chat/completions", json=chat, headers={}))[0] == 401
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.port}/v1/models", headers=bearer()) as r,
        ):
            assert r.status == 200
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.admin_port}/metrics") as r,
        ):
            metrics = await r.text()
    finally:
        await server.stop()
    lines = [
        orjson.loads(line)
        for line in capfd.readouterr().err.splitlines()
        if line.startswith('{"request_id"')
    ]
    assert [(x["api"], x["status"]) for x in lines] == [
        ("embeddings", 200),
        ("rerank", 200),
        ("audio", 200),
        ("images", 200),
        ("completions", 200),
        ("embeddings", 400),
        ("chat", 200),
        ("responses", 200),
        ("chat", 401),
        (None, 200),  # the model list serves no API
    ]
    assert lines[0]["prompt_tokens"] == 3 and lines[5]["error"] == "model_not_supported"
    requests = _series(metrics, "gateway_requests_total")
    assert {(x["route"], x["api"]) for x in requests} == {
        ("/v1/embeddings", "embeddings"),
        ("/v1/rerank", "rerank"),
        ("/v1/audio/transcriptions", "audio"),
        ("/v1/images/generations", "images"),
        ("/v1/completions", "completions"),
        ("/v1/chat/completions", "chat"),
        ("/v1/responses", "responses"),
        ("/v1/models", ""),
    }
    tokens = {x["api"] for x in _series(metrics, "gateway_tokens_total")}
    assert tokens == {"embeddings", "rerank", "completions", "chat", "responses"}
    durations = {x["api"] for x in _series(metrics, "gateway_request_duration_seconds_count")}
    assert durations == {x["api"] for x in requests}


def _series(metrics: str, name: str) -> list[dict[str, str]]:
    """The label sets of every series of ``name`` in a Prometheus text exposition."""
    found = []
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            labels = line[len(name) + 1 : line.index("}")]
            found.append(dict(pair.split("=", 1) for pair in labels.split('",') if pair))
    return [{k: v.strip('"') for k, v in x.items()} for x in found]


async def test_worker_failures(served: tuple[Server, MockState], fake: FakeUpstream) -> None:
    server, _ = served
    answers = iter(
        [
            web.json_response({"error": {"message": "boom"}}, status=500),
            web.json_response({"error": {"message": "input is too long"}}, status=400),
            web.json_response({"detail": "Not Found"}, status=404),
            web.Response(text="<html>oops</html>", content_type="text/html"),
        ]
    )

    async def script(request: web.Request, body: Any) -> web.StreamResponse:
        return next(answers)

    fake.script = script
    body = {"model": "fake-model", "input": "x"}
    status, _, answer = await post(server, "/v1/embeddings", json=body)
    assert status == 502 and answer["error"]["code"] == "upstream_unavailable"
    status, _, answer = await post(server, "/v1/embeddings", json=body)
    assert status == 400 and answer["error"]["message"] == "input is too long"
    status, _, answer = await post(server, "/v1/embeddings", json=body)
    assert status == 400 and answer["error"]["code"] == "model_not_supported"
    assert "answered 404" in answer["error"]["message"]
    status, _, answer = await post(server, "/v1/embeddings", json=body)
    assert status == 502 and "not JSON" in answer["error"]["message"]


async def test_a_failing_worker_is_retried_on_another(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    """The request's region puts the broken worker first; its 503 is retried on the other."""

    async def broken(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"error": {"message": "down"}}, status=503)

    fake.script = broken
    text = gateway_yaml(
        {"fake": fake.url, "mock": f"http://127.0.0.1:{mock[0]}"},
        {"both": {"upstreams": ["fake", "mock"], "apis": EVERY_API}},
        extra=keys_yaml(),
    ).replace(f"url: '{fake.url}'", f"url: '{fake.url}', region: near")
    assert "region: near" in text
    server: Server = await gateway_factory(text)
    answer = await sdk(server).embeddings.create(
        model="both", input="x y", extra_body={"region": "near"}
    )
    assert answer.usage.prompt_tokens == 2
    assert [s.path for s in fake.seen] == ["/v1/embeddings"]


async def test_a_stream_cut_by_the_worker_ends_with_an_error_event(
    served: tuple[Server, MockState],
) -> None:
    server, _ = served
    body = {"model": "mock-model", "prompt": "say:6", "stream": True}
    status, _, raw = await post(
        server, "/v1/completions", json=body, headers={**bearer(), "x-mock-die-after": "3"}
    )
    assert status == 200
    assert b'"code":"upstream_unavailable"' in raw and b"[DONE]" not in raw
    assert raw.count(b'"text_completion"') == 3


@pytest.fixture
async def slow_reader() -> AsyncIterator[tuple[str, asyncio.Event, list[bytes]]]:
    """A worker that reads the upload as it comes and says when the file's first bytes are in."""
    arrived, got = asyncio.Event(), list[bytes]()

    async def handle(request: web.Request) -> web.StreamResponse:
        async for piece in request.content.iter_any():
            got.append(piece)
            if b"FIRST-HALF" in b"".join(got):
                arrived.set()
        return web.json_response({"text": "ok", "usage": {"type": "duration", "seconds": 7}})

    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", arrived, got
    await runner.cleanup()


async def test_the_file_streams_to_the_worker_before_the_client_has_sent_it_all(
    gateway_factory: Any, slow_reader: tuple[str, asyncio.Event, list[bytes]]
) -> None:
    url, arrived, got = slow_reader
    text = gateway_yaml(
        {"w": url}, {"whisper": {"upstreams": ["w"], "apis": ["audio"]}}, extra=keys_yaml()
    )
    server: Server = await gateway_factory(text)
    head = (
        b'--zz\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
        b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + b"FIRST-HALF"
        + b"\0" * 70_000
    )

    async def upload() -> AsyncIterator[bytes]:
        yield head
        # The rest is sent only once the worker has the first half: a gateway that held the
        # body would never pass it on, and this would time out.
        await asyncio.wait_for(arrived.wait(), 10)
        yield b"SECOND-HALF\r\n--zz--\r\n"

    headers = {**bearer(), "Content-Type": "multipart/form-data; boundary=zz"}
    status, _, answer = await post(
        server, "/v1/audio/transcriptions", data=upload(), headers=headers
    )
    assert status == 200 and answer == {"text": "ok", "usage": {"type": "duration", "seconds": 7}}
    sent = b"".join(got)
    assert b"FIRST-HALF" in sent and b"SECOND-HALF" in sent
    assert b'name="model"\r\n\r\nwhisper\r\n' in sent


async def test_a_stall_inside_the_file_is_408(
    gateway_factory: Any, slow_reader: tuple[str, asyncio.Event, list[bytes]]
) -> None:
    url, arrived, _ = slow_reader
    text = gateway_yaml(
        {"w": url},
        {"whisper": {"upstreams": ["w"], "apis": ["audio"]}},
        extra=keys_yaml() + "network: {header_timeout: 0.3}\n",
    )
    server: Server = await gateway_factory(text)
    never = asyncio.Event()

    async def upload() -> AsyncIterator[bytes]:
        yield (
            b'--zz\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
            b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            b"FIRST-HALF" + b"\0" * 70_000
        )
        await never.wait()  # the client stalls (released when the test ends)
        yield b""

    headers = {**bearer(), "Content-Type": "multipart/form-data; boundary=zz"}
    try:
        status, _, answer = await post(
            server, "/v1/audio/transcriptions", data=upload(), headers=headers
        )
    finally:
        never.set()
    assert status == 408 and "stalled" in answer["error"]["message"]
    assert arrived.is_set()  # the file was on its way: the upload was cut, not held
