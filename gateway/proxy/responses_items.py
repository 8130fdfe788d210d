"""What the stored responses answer beside ``GET``: their input items, and cancellation.

``GET /v1/responses/{id}/input_items`` lists the input the response answered, as kept with it:
the whole conversation the model saw (a response that continued another has the earlier turns'
input and output first), each item in the shape of the OpenAI ``ResponseItem`` it is — a
message's string content as one ``input_text`` (``output_text`` for the assistant's), and an
item sent without an ``id`` given one from the response's id and its place (the same on every
call, so ``after`` pages through them). ``order`` (``desc`` by default, as OpenAI's), ``limit``
(1 to 100, default 20) and ``after`` (an item id) as OpenAI's API has them; ``include`` is accepted
and changes nothing.

``POST /v1/responses/{id}/cancel``: only a response created with ``background: true`` can be
cancelled, and the gateway runs none in the background (it refuses ``background``): a stored
response is complete, and cancelling it is a 400 saying so; an unknown one a 404.
"""

from __future__ import annotations

from typing import Any

from multidict import MultiMapping

from gateway.errors import BadRequest

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def page(response_id: str, items: list[Any], query: MultiMapping[str]) -> dict[str, Any]:
    """One page of the input items of ``response_id`` as the OpenAI list object."""
    limit, order, after = _query(query)
    listed = [_item(response_id, index, item) for index, item in enumerate(items)]
    if order == "desc":
        listed.reverse()
    start = 0
    if after is not None:
        found = next((i for i, item in enumerate(listed) if item.get("id") == after), None)
        if found is None:
            raise BadRequest(
                f"'after' names no input item of this response: '{after[:100]}'.", param="after"
            )
        start = found + 1
    data = listed[start : start + limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(listed),
    }


def not_cancellable(response_id: str) -> BadRequest:
    return BadRequest(
        f"The response '{response_id}' cannot be cancelled: only responses created with "
        "background: true can be, and the gateway runs none in the background (this one is "
        "complete).",
        code="not_cancellable",
    )


def _query(query: MultiMapping[str]) -> tuple[int, str, str | None]:
    raw = query.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        text = raw.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 4):
            raise BadRequest(
                f"'limit' must be a whole number from 1 to {MAX_LIMIT}.", param="limit"
            )
        limit = int(text)
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(
                f"'limit' must be a whole number from 1 to {MAX_LIMIT}.", param="limit"
            )
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be asc or desc.", param="order")
    after = query.get("after") or None
    return limit, order, after


def _item(response_id: str, index: int, item: Any) -> dict[str, Any]:
    """A stored input item in its ``ResponseItem`` shape (a copy; the record is not changed)."""
    if not isinstance(item, dict):
        item = {"type": "message", "role": "user", "content": str(item)}
    out = dict(item)
    kind = out.get("type")
    if kind is None and "role" in out:
        kind = out["type"] = "message"
    if kind == "message" and isinstance(out.get("content"), str):
        part = "output_text" if out.get("role") == "assistant" else "input_text"
        text: dict[str, Any] = {"type": part, "text": out["content"]}
        if part == "output_text":
            text["annotations"] = []
        out["content"] = [text]
    if not isinstance(out.get("id"), str) or not out["id"]:
        prefix = _PREFIX.get(kind if isinstance(kind, str) else "", "item")
        out["id"] = f"{prefix}_{response_id.removeprefix('resp_')}_{index}"
    out.setdefault("status", "completed")
    return out
