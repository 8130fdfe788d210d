"""Native mode (``models.<name>.responses: native``) through the gateway with the official SDK,
against a fake worker that serves ``/v1/responses`` itself: the request is forwarded (the model
mapped, the stored conversation expanded, ``store: false``), the answer and every streamed event
carry the public name, the stream is relayed as it comes and stored before its end, and usage is
settled from the worker's ``usage``."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from gateway.mock_worker import MockState
from gateway.server import Server
from tests.clients import sdk
from tests.fakes import FakeUpstream, sse
from tests.proxy.responses_support import responses_yaml, usage_by_api


def worker_response(text: str, rid: str = "resp_worker1", usage: Any = None) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": 1700000000,
        "status": "completed",
        "model": "org/native",
        "output": [
            {
                "id": "msg_w1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage
        or {
            "input_tokens": 11,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 4,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 15,
        },
    }


def events_of(text: str, rid: str) -> list[bytes]:
    final = worker_response(text, rid)
    created = dict(final, status="in_progress", output=[], usage=None)
    item = final["output"][0]
    raw = [
        {"type": "response.created", "response": created},
        {"type": "response.output_item.added", "output_index": 0,
         "item": dict(item, content=[], status="in_progress")},
        {"type": "response.content_part.added", "item_id": "msg_w1", "output_index": 0,
         "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "item_id": "msg_w1", "output_index": 0,
         "content_index": 0, "delta": text, "logprobs": []},
        {"type": "response.output_text.done", "item_id": "msg_w1", "output_index": 0,
         "content_index": 0, "text": text, "logprobs": []},
        {"type": "response.content_part.done", "item_id": "msg_w1", "output_index": 0,
         "content_index": 0, "part": item["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]  # fmt: skip
    return [
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e | {"sequence_number": i})
        + b"\n\n"
        for i, e in enumerate(raw)
    ]  # fmt: skip


@pytest.fixture
async def served(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> tuple[Server, FakeUpstream]:
    turns = iter(range(1, 100))

    async def worker(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if request.path != "/v1/responses":
            return web.json_response({"error": {"message": "no"}}, status=404)
        rid = f"resp_worker{next(turns)}"
        if body.get("stream"):
            return await sse(request, events_of("streamed hello", rid))
        return web.json_response(worker_response("native hello", rid))

    fake.script = worker
    return await gateway_factory(responses_yaml(mock[0], fake.url)), fake


async def test_a_whole_answer_and_its_continuation(served: tuple[Server, FakeUpstream]) -> None:
    server, fake = served
    client = sdk(server)
    first = await client.responses.create(model="native-model", input="hi", instructions="Hi.")
    assert first.output_text == "native hello" and first.model == "native-model"
    seen = fake.seen[-1]
    assert seen.path == "/v1/responses"
    # held to what was reserved (the model's default limit): the worker's own may be unbounded
    assert seen.body == {"model": "org/native", "input": "hi", "instructions": "Hi.",
                         "store": False, "max_output_tokens": 4096}  # fmt: skip
    second = await client.responses.create(
        model="native-model", input="and again", previous_response_id=first.id
    )
    assert second.id != first.id
    sent = fake.seen[-1].body
    assert "previous_response_id" not in sent
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": "hi"},
        first.output[0].model_dump(exclude_none=True, exclude={"phase"})
        | {"content": [{"type": "output_text", "text": "native hello", "annotations": []}]},
        {"type": "message", "role": "user", "content": "and again"},
    ]
    by_api = await usage_by_api(server, 2)
    assert (by_api["responses"]["inputTokens"], by_api["responses"]["outputTokens"]) == (22, 8)


async def test_a_stream_is_relayed_and_stored_before_its_end(
    served: tuple[Server, FakeUpstream],
) -> None:
    server, _ = served
    client = sdk(server)
    async with client.responses.stream(model="native-model", input="hi") as s:
        async for event in s:
            if event.type == "response.created":
                assert event.response.model == "native-model"
            if event.type == "response.completed":
                stored = await client.responses.retrieve(event.response.id)
                assert stored.output_text == "streamed hello"
                assert stored.model == "native-model"
        final = await s.get_final_response()
    assert final.output_text == "streamed hello" and final.model == "native-model"
    assert (await usage_by_api(server, 1))["responses"]["outputTokens"] == 4


async def test_a_worker_without_responses_is_model_not_supported(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> None:
    server = await gateway_factory(responses_yaml(mock[0], fake.url))

    async def no_responses(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"error": {"message": "Not Found"}}, status=404)

    fake.script = no_responses
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk(server).responses.create(model="native-model", input="hi")
    assert refused.value.code == "model_not_supported"


async def test_a_stream_cut_short_ends_with_an_error_event(
    served: tuple[Server, FakeUpstream],
) -> None:
    server, fake = served
    cut = asyncio.Event()

    async def worker(request: web.Request, body: Any) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(events_of("x", "resp_cut")[0])
        cut.set()
        return response  # closed without the rest: no response.completed

    fake.script = worker
    raw = await sdk(server).responses.create(model="native-model", input="hi", stream=True)
    kinds = [event.type async for event in raw]
    assert kinds == ["response.created", "error"] and cut.is_set()
