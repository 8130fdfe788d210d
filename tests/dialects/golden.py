"""Golden files for the Anthropic dialect, and replaying translated answers through the official
``anthropic`` SDK (over an in-memory transport, no network) to prove the SDK accepts them.

A golden file holds one case side by side: what the client sent, what the upstream got, what it
answered (whole and streamed) and what the client got back. ``GOLDEN_REGENERATE=1`` rewrites the
files from the translator's output instead of comparing; do it only on purpose, and read the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway.dialects.anthropic import StreamTranslator, encode_event

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden" / "anthropic"
_EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def render(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check(name: str, record: dict[str, Any]) -> None:
    """Assert ``record`` equals ``golden/anthropic/<name>.json`` (or rewrite it, on purpose)."""
    path = GOLDEN_DIR / f"{name}.json"
    as_json = json.loads(render(record))  # tuples become lists, as in the file
    if os.environ.get("GOLDEN_REGENERATE") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(record), encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing; run once with GOLDEN_REGENERATE=1 to write it"
    expected = json.loads(path.read_text(encoding="utf-8"))
    for key in sorted(expected.keys() | as_json.keys()):
        assert as_json.get(key) == expected.get(key), f"{name}.json: {key} differs"


def _client(response: httpx.Response) -> tuple[anthropic.Anthropic, httpx.Client]:
    http = httpx.Client(transport=httpx.MockTransport(lambda request: response))
    client = anthropic.Anthropic(
        api_key="test", base_url="http://gateway.test", http_client=http, max_retries=0
    )
    return client, http


_ASK: dict[str, Any] = {
    "model": "m",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}


def sdk_message(answer: dict[str, Any]) -> Message:
    """The answer as the SDK's ``messages.create`` returns it, after strict validation."""
    strict = Message.model_validate(answer)
    client, http = _client(httpx.Response(200, json=answer))
    with http:
        parsed: Message = client.messages.create(**_ASK)
    assert parsed.model_dump() == strict.model_dump()
    return parsed


def sdk_stream(events: list[tuple[str, dict[str, Any]]]) -> Message:
    """The final message the SDK's ``messages.stream`` accumulates from the events."""
    for name, data in events:
        if name not in ("ping", "error"):  # not RawMessageStreamEvents; the SDK handles them
            assert _EVENTS.validate_python(data).type == name
    body = b"".join(encode_event(name, data) for name, data in events)
    headers = {"content-type": "text/event-stream"}
    client, http = _client(httpx.Response(200, headers=headers, content=body))
    with http, client.messages.stream(**_ASK) as stream:
        final: Message = stream.get_final_message()
    return final


def assert_strict_stream(events: list[tuple[str, dict[str, Any]]]) -> None:
    """The event order the Anthropic API keeps: one block open at a time, indices in order."""
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_index: int | None = None
    started = 0
    for name, data in events:
        assert data["type"] == name
        if name == "content_block_start":
            assert open_index is None and data["index"] == started
            open_index, started = started, started + 1
        elif name in ("content_block_delta", "content_block_stop"):
            assert data["index"] == open_index, f"{name} for a block that is not open"
            open_index = None if name == "content_block_stop" else open_index
    assert open_index is None


def translate_stream(chunks: list[dict[str, Any]], model: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event a translator emits for the chunks, then ``[DONE]``."""
    translator = StreamTranslator(model)
    events = [event for chunk in chunks for event in translator.feed(chunk)]
    return events + translator.finish()


def chunk(delta: dict[str, Any], finish: str | None = None, **choice: Any) -> dict[str, Any]:
    """An OpenAI ``chat.completion.chunk`` with one choice."""
    return {
        "id": "chatcmpl-gold1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "vendor/upstream-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **choice}],
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    """The usage-only chunk ``stream_options.include_usage`` adds after the finish chunk."""
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return chunk({}) | {"choices": [], "usage": usage | {"total_tokens": prompt + completion}}


def fragment(index: int, arguments: str, call_id: str = "", name: str = "") -> dict[str, Any]:
    """A delta with one tool-call fragment; the first of each call carries its id and name."""
    function = {"arguments": arguments} | ({"name": name} if name else {})
    call = {"index": index, "function": function}
    if call_id:
        call |= {"id": call_id, "type": "function"}
    return {"tool_calls": [call]}


def answer(
    message: dict[str, Any], finish: str, usage: tuple[int, int], **choice: Any
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` with one choice."""
    prompt, completion = usage
    return {
        "id": "chatcmpl-gold1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "vendor/upstream-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
