"""``client.responses.input_items.list`` and ``client.responses.cancel`` of the official SDK
through the gateway: the input a stored response answered (the earlier turns included), paged
by ``after`` both ways; cancellation refused with a clear 400, since nothing runs in the
background; another owner's ids and bad queries answered as unknown or 400."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.mock_worker import MockState
from gateway.server import Server
from tests.clients import sdk
from tests.fakes import FakeUpstream
from tests.proxy.responses_support import OTHER_KEY, bearer, call, responses_yaml


@pytest.fixture
async def server(gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream) -> Server:
    return await gateway_factory(responses_yaml(mock[0], fake.url))


async def two_turns(client: openai.AsyncOpenAI) -> tuple[Any, Any]:
    first = await client.responses.create(
        model="mock-model",
        input=[{"role": "user", "content": "echo: one"}],
        instructions="Be brief.",
    )
    second = await client.responses.create(
        model="mock-model", input="echo: two", previous_response_id=first.id
    )
    return first, second


async def test_input_items_list_the_whole_conversation_newest_first(server: Server) -> None:
    client = sdk(server)
    first, second = await two_turns(client)
    page = await client.responses.input_items.list(second.id)
    items = page.data
    assert [(i.type, getattr(i, "role", None)) for i in items] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    texts = [i.content[0].text for i in items]
    assert texts[0] == "echo: two" and texts[2] == "echo: one"
    assert texts[1] == first.output_text
    assert items[1].id == first.output[0].id  # the earlier answer keeps its own id
    assert len({i.id for i in items}) == 3 and not page.has_more
    ascending = await client.responses.input_items.list(second.id, order="asc")
    assert [i.id for i in ascending.data] == [i.id for i in reversed(items)]
    again = await client.responses.input_items.list(second.id)
    assert [i.id for i in again.data] == [i.id for i in items]  # ids are stable


async def test_input_items_page_by_after(server: Server) -> None:
    client = sdk(server)
    _, second = await two_turns(client)
    one = await client.responses.input_items.list(second.id, limit=1)
    assert len(one.data) == 1 and one.has_more
    seen = [item.id async for item in client.responses.input_items.list(second.id, limit=1)]
    everything = await client.responses.input_items.list(second.id, limit=100)
    assert seen == [i.id for i in everything.data] and len(seen) == 3


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=x", "limit=-1", "order=up", "after=msg_nothing"],
)
async def test_input_items_bad_queries_are_400(server: Server, query: str) -> None:
    client = sdk(server)
    first = await client.responses.create(model="mock-model", input="echo: x")
    status, _, body = await call(server, "GET", f"/v1/responses/{first.id}/input_items?{query}")
    assert status == 400 and body["error"]["type"] == "invalid_request_error", body
    assert body["error"]["param"] == query.split("=")[0], body


async def test_cancel_is_a_clear_400_and_changes_nothing(server: Server) -> None:
    client = sdk(server)
    first = await client.responses.create(model="mock-model", input="echo: x")
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.cancel(first.id)
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "not_cancellable", error
    assert "background: true" in error["message"]
    assert (await client.responses.retrieve(first.id)).id == first.id  # still there


async def test_unknown_and_other_owners_ids_are_404(server: Server) -> None:
    client = sdk(server)
    first = await client.responses.create(model="mock-model", input="echo: x")
    other = sdk(server, OTHER_KEY)
    with pytest.raises(openai.NotFoundError):
        await other.responses.input_items.list(first.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.cancel(first.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.input_items.list("resp_" + "0" * 48)
    status, _, _ = await call(server, "GET", f"/v1/responses/{first.id}/input_items", headers={})
    assert status == 401
    status, _, _ = await call(server, "POST", "/v1/responses/../cancel", headers=bearer())
    assert status in (400, 404)
