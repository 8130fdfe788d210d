"""The APIs beside chat reach their workers as chat does: retries and fallbacks (only to models
that serve the API), the per-attempt timeout, the upstream caps and their queue; image edits are
reserved per image asked for."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.auth.keys import sha256_hex
from gateway.mock_worker import MockState
from gateway.server import Server
from tests.clients import sdk
from tests.conftest import gateway_yaml
from tests.fakes import FakeUpstream
from tests.proxy.apis_support import EVERY_API, bearer, form, keys_yaml, post, wav

EMBED = {"model": "primary", "input": "a b c"}


def closed_port() -> int:
    """A loopback port nothing listens on (taken, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def routed_yaml(mock_port: int, fake_url: str, primary: dict[str, Any], extra: str = "") -> str:
    """``primary`` on the fake upstream (and ``dead``, a closed port), falling back first to
    ``chat-fb`` (chat only) then to ``backup`` (every API), both on the mock worker."""
    spec = {"upstreams": ["fake"], "apis": EVERY_API, "fallbacks": ["chat-fb", "backup"]}
    return gateway_yaml(
        {
            "fake": fake_url,
            "mock": f"http://127.0.0.1:{mock_port}",
            "dead": f"http://127.0.0.1:{closed_port()}",
        },
        {
            "primary": {**spec, **primary},
            "chat-fb": {"upstreams": ["mock"], "apis": ["chat"]},
            "backup": {"upstreams": ["mock"], "upstream_model": "mock-upstream", "apis": EVERY_API},
        },
        extra=keys_yaml() + extra,
    )


async def down(request: web.Request, body: Any) -> web.StreamResponse:
    return web.json_response({"error": {"message": "down"}}, status=503)


async def test_a_failing_model_falls_back_to_one_that_serves_the_api(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    """``primary``'s worker answers 503: the chat-only fallback is passed over (its worker
    would answer as well), ``backup`` answers, under its own name."""
    fake.script = down
    server: Server = await gateway_factory(routed_yaml(mock[0], fake.url, {}))
    answer = await sdk(server).embeddings.create(**EMBED)
    assert answer.model == "backup" and answer.usage.prompt_tokens == 3
    assert [s.path for s in fake.seen] == ["/v1/embeddings"]
    status, _, body = await post(server, "/v1/completions", json={**EMBED, "prompt": "say:2"})
    assert status == 200 and body["model"] == "backup", body
    assert [s.path for s in fake.seen] == ["/v1/embeddings", "/v1/completions"]


async def test_without_fallbacks_the_failure_is_the_answer(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    fake.script = down
    server: Server = await gateway_factory(routed_yaml(mock[0], fake.url, {"fallbacks": []}))
    status, _, body = await post(server, "/v1/embeddings", json=EMBED)
    assert status == 502 and body["error"]["code"] == "upstream_unavailable", body
    assert len(fake.seen) == 1  # one upstream: nothing else to try


async def test_an_attempt_past_the_retry_timeout_moves_on(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    """``retry.timeout: 0.3``: a worker silent for 5 s is left after 0.3 s for the fallback."""
    release = asyncio.Event()

    async def stall(request: web.Request, body: Any) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"data": [], "usage": {"prompt_tokens": 1}})

    fake.script = stall
    text = routed_yaml(mock[0], fake.url, {"retry": {"timeout": 0.3}})
    server: Server = await gateway_factory(text)
    started = time.monotonic()
    try:
        status, _, body = await post(
            server, "/v1/rerank", json={**EMBED, "query": "a", "documents": ["a"]}
        )
    finally:
        release.set()
    assert status == 200 and body["model"] == "backup", body
    assert time.monotonic() - started < 3.0


async def test_an_upload_falls_back_while_no_byte_of_it_went_out(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    """``primary``'s only worker refuses connections: the transcription goes to ``backup``."""
    server: Server = await gateway_factory(routed_yaml(mock[0], fake.url, {"upstreams": ["dead"]}))
    data = form([("model", "primary"), ("file", ("a.wav", wav(0.2)))])
    status, _, body = await post(server, "/v1/audio/transcriptions", data=data)
    assert status == 200 and "text" in body, body


async def test_an_upload_the_worker_failed_is_not_sent_again(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    """The worker read the upload and answered 503: the file is gone, the 503 is the answer."""

    async def read_then_fail(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"error": {"message": "down"}}, status=503)

    fake.script = read_then_fail
    server: Server = await gateway_factory(routed_yaml(mock[0], fake.url, {}))
    data = form([("model", "primary"), ("file", ("a.wav", wav(0.2)))])
    status, _, body = await post(server, "/v1/audio/transcriptions", data=data)
    assert status == 502 and body["error"]["code"] == "upstream_unavailable", body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"model": "capped", "input": "x"}),
        ("/v1/responses", {"model": "capped", "input": "x"}),
    ],
)
async def test_a_full_upstream_makes_every_api_wait(
    gateway_factory: Any, fake: FakeUpstream, path: str, body: dict[str, Any]
) -> None:
    """``max_concurrency: 1``: while a request holds the worker, another of any API waits in
    the model's queue (here past ``scheduling.max_wait``: 503 ``queue_timeout``)."""
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(request: web.Request, seen: Any) -> web.StreamResponse:
        held.set()
        await release.wait()
        return web.json_response({"object": "list", "data": [], "usage": {"prompt_tokens": 1}})

    fake.script = hold
    text = gateway_yaml(
        {"fake": fake.url},
        {"capped": {"upstreams": ["fake"], "apis": EVERY_API, "responses": "native"}},
        extra=keys_yaml() + "scheduling: {max_wait: 0.3}\n",
    ).replace(f"url: '{fake.url}'", f"url: '{fake.url}', max_concurrency: 1")
    server: Server = await gateway_factory(text)
    first = asyncio.create_task(
        post(server, "/v1/embeddings", json={"model": "capped", "input": "x"})
    )
    try:
        await asyncio.wait_for(held.wait(), 5)
        status, _, answer = await post(server, path, json=body)
        assert status == 503 and answer["error"]["code"] == "queue_timeout", answer
        assert len(fake.seen) == 1
    finally:
        release.set()
        await first


def _priced(url: str) -> str:
    secret = "test-image-budget-key-0123456789abc"
    return gateway_yaml(
        {"w": url},
        {"m": {"upstreams": ["w"], "apis": ["images"], "pricing": {"per_image": 0.5}}},
        extra=(
            "keys:\n  static:\n"
            f"    - {{id: img, owner: tests, sha256: '{sha256_hex(secret)}', "
            "permissions: [images], daily_budget_usd: 1}\n"
        ),
    )


IMAGE_KEY = bearer("test-image-budget-key-0123456789abc")


async def test_an_image_edit_reserves_every_image_it_asks_for(
    gateway_factory: Any, mock: tuple[int, MockState]
) -> None:
    """Attack: ``n: 10`` edits at $0.5 an image on a $1 budget; reserved as one image, it
    would spend $5. Refused 429 before the worker; ``n: 2`` fits and is charged $1."""
    server: Server = await gateway_factory(_priced(f"http://127.0.0.1:{mock[0]}"))

    def edit(n: str) -> Any:
        return form([("model", "m"), ("n", n), ("prompt", "hat"), ("image", ("a.png", b"png"))])

    status, _, body = await post(server, "/v1/images/edits", data=edit("10"), headers=IMAGE_KEY)
    assert status == 429 and body["error"]["code"] == "budget_exceeded", body
    status, _, body = await post(server, "/v1/images/edits", data=edit("2"), headers=IMAGE_KEY)
    assert status == 200 and len(body["data"]) == 2, body
    status, _, body = await post(server, "/v1/images/edits", data=edit("1"), headers=IMAGE_KEY)
    assert status == 429, body  # the $1 went on the two images


@pytest.mark.parametrize("n", ["0", "129", "-1", "1.5", "ten", "²", "", "99999999999"])
async def test_an_image_edits_n_must_be_a_count(
    gateway_factory: Any, fake: FakeUpstream, n: str
) -> None:
    server: Server = await gateway_factory(_priced(fake.url))
    data = form([("model", "m"), ("n", n), ("image", ("a.png", b"png"))])
    status, _, body = await post(server, "/v1/images/edits", data=data, headers=IMAGE_KEY)
    assert status == 400 and body["error"]["param"] == "n", body
    assert fake.seen == []


async def test_an_image_edits_n_after_the_file_is_refused(
    gateway_factory: Any, fake: FakeUpstream
) -> None:
    """An ``n`` the admission never saw (after the file) would make images not reserved."""
    server: Server = await gateway_factory(_priced(fake.url))
    data = form([("model", "m"), ("image", ("a.png", b"png")), ("n", "10")])
    status, _, body = await post(server, "/v1/images/edits", data=data, headers=IMAGE_KEY)
    assert status == 400 and "must come before the file" in body["error"]["message"], body
    assert orjson.dumps(body)  # a JSON error, in the OpenAI shape
