"""Golden files for the Responses translation, and replaying translated answers and streams
through the official ``openai`` SDK (over an in-memory transport, no network) to prove the SDK
accepts them: ``responses.create`` (the answer validated strictly too) and
``responses.stream`` (every event validated strictly, sequence numbers counted).

A golden file holds one case: what the client sent (and the stored conversation it continues),
the chat request the worker got, its answer (whole and streamed), and what the client got back,
whole and as events. ``GOLDEN_REGENERATE=1`` rewrites the files from the translator's output
instead of comparing; do it only on purpose, and read the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.dialects.responses import Translated, check, translate
from gateway.dialects.responses_answer import Shape, shape, to_response
from gateway.dialects.responses_stream import ResponsesRelay
from gateway.dialects.sse import SSESplitter, event_data

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden" / "responses"
UPSTREAM = "vendor/upstream-model"
RESPONSE_ID = "resp_" + "0123456789abcdef" * 3
CREATED = 1_700_000_000
_EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def render(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check_golden(name: str, record: dict[str, Any]) -> None:
    """Assert ``record`` equals ``golden/responses/<name>.json`` (or rewrite it, on purpose)."""
    path = GOLDEN_DIR / f"{name}.json"
    as_json = json.loads(render(record))
    if os.environ.get("GOLDEN_REGENERATE") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(record), encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing; run once with GOLDEN_REGENERATE=1 to write it"
    expected = json.loads(path.read_text(encoding="utf-8"))
    for key in sorted(expected.keys() | as_json.keys()):
        assert as_json.get(key) == expected.get(key), f"{name}.json: {key} differs"


def translated(
    body: dict[str, Any], history: list[Any] | None = None, hosted: str = "drop"
) -> tuple[Translated, Shape]:
    """The chat request for ``body`` (its model mapped as the handler maps it) and the shape
    of its responses."""
    plan = translate(check(body), history or [], hosted)
    plan.chat["model"] = UPSTREAM
    return plan, shape(body, RESPONSE_ID, CREATED, body["model"], plan.names)


def whole(answer: dict[str, Any], made: Shape) -> dict[str, Any]:
    return to_response(answer, made, (0, 0))


def stream_events(chunks: list[dict[str, Any]], made: Shape) -> list[dict[str, Any]]:
    """The events (each event's data) a relay writes for ``chunks`` then ``[DONE]``."""
    relay = ResponsesRelay(made)
    events = [b"data: " + json.dumps(c).encode() for c in chunks] + [b"data: [DONE]"]
    raw = relay.relay(events) + relay.finish()
    return parse_events(raw)


def parse_events(raw: bytes) -> list[dict[str, Any]]:
    """Every event of an SSE body, its ``event:`` line checked against its data's type."""
    out = []
    for event in SSESplitter().feed(raw):
        name = event.split(b"\n", 1)[0].removeprefix(b"event: ").decode()
        data = json.loads(event_data(event) or b"null")
        assert data["type"] == name
        out.append(data)
    return out


def encode(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n"
        for e in events
    )


def _client(response: httpx.Response) -> tuple[openai.OpenAI, httpx.Client]:
    http = httpx.Client(transport=httpx.MockTransport(lambda request: response))
    client = openai.OpenAI(
        api_key="test", base_url="http://gateway.test/v1", http_client=http, max_retries=0
    )
    return client, http


def sdk_response(answer: dict[str, Any]) -> Response:
    """The answer as ``responses.create`` returns it, after strict validation."""
    strict = Response.model_validate(answer)
    client, http = _client(httpx.Response(200, json=answer))
    with http:
        parsed: Response = client.responses.create(model="m", input="hi")
    assert parsed.model_dump() == strict.model_dump()
    return parsed


def sdk_stream(events: list[dict[str, Any]], tools: list[Any] | None = None) -> Response:
    """The final response ``responses.stream`` accumulates from the events, every event
    validated and numbered in order."""
    for number, data in enumerate(events):
        assert _EVENTS.validate_python(data).type == data["type"]
        assert data["sequence_number"] == number
    headers = {"content-type": "text/event-stream"}
    client, http = _client(httpx.Response(200, headers=headers, content=encode(events)))
    with http, client.responses.stream(model="m", input="hi", tools=tools or []) as stream:
        seen = [event.type for event in stream]
        if seen[-1] == "response.incomplete":  # the SDK gives no final response then
            return Response.model_validate(events[-1]["response"])
        final: Response = stream.get_final_response()
    return final


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """An OpenAI ``chat.completion.chunk`` with one choice."""
    return {
        "id": "chatcmpl-gold1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": UPSTREAM,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return chunk({}) | {"choices": [], "usage": usage | {"total_tokens": prompt + completion}}


def answer(message: dict[str, Any], finish: str, usage: tuple[int, int]) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` with one choice."""
    prompt, completion = usage
    return {
        "id": "chatcmpl-gold1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": UPSTREAM,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
