"""The native relay (``dialects.responses_native``): a worker's own Responses events pass as they
came; a batch is split before its terminal event (so the response can be kept before the client
reads it), the final response and its usage (as chat's) are noted, and a failure is an ``error``
event numbered after the worker's own."""

from __future__ import annotations

import orjson
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.dialects.responses_native import NativeRelay, chat_usage
from gateway.errors import UpstreamTimeout


def event(kind: str, number: int, **data: object) -> bytes:
    body = {"type": kind, **data, "sequence_number": number}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body)


FINAL = {"id": "resp_w", "status": "completed", "output": [],
         "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}}  # fmt: skip


def test_events_pass_and_the_batch_splits_at_the_end() -> None:
    relay = NativeRelay()
    delta = event("response.output_text.delta", 1, delta="hi", item_id="m", output_index=0)
    first = [event("response.created", 0, response={"id": "resp_w"}), delta]
    head, tail = relay.relay(first)
    assert head == b"".join(e + b"\n\n" for e in first) and tail == b""
    assert not relay.done and relay.deltas == 1
    last = [event("response.output_text.done", 2, text="hi"),
            event("response.completed", 3, response=FINAL), b"data: [DONE]"]  # fmt: skip
    head, tail = relay.relay(last)
    assert head == last[0] + b"\n\n"
    assert tail == last[1] + b"\n\n" + last[2] + b"\n\n"
    assert relay.done and relay.final == FINAL
    assert relay.usage == {"prompt_tokens": 5, "completion_tokens": 3}


def test_a_failed_response_is_no_final_and_an_error_is_numbered_next() -> None:
    relay = NativeRelay()
    failed = dict(FINAL, status="failed")
    _, tail = relay.relay([event("response.created", 0, response={}),
                           event("response.failed", 1, response=failed)])  # fmt: skip
    assert tail and relay.done and relay.final is None and relay.usage is not None
    cut = NativeRelay()
    cut.relay([event("response.created", 0, response={}), b": keep-alive"])
    raw = cut.error(UpstreamTimeout("silent"))
    data = orjson.loads(raw.split(b"data: ", 1)[1])
    TypeAdapter(ResponseStreamEvent).validate_python(data)
    assert data["sequence_number"] == 2 and data["code"] == "upstream_timeout"


def test_text_mentioning_an_ending_does_not_end_it() -> None:
    relay = NativeRelay()
    tricky = event("response.output_text.delta", 0, delta='say "response.completed" [DONE] error')
    head, tail = relay.relay([tricky, b"data: {not json response.failed"])
    assert head.startswith(tricky) and tail == b"" and not relay.done and relay.deltas == 1


def test_chat_usage_of_odd_values() -> None:
    assert chat_usage(None) is None and chat_usage({"output_tokens": 1}) is None
    assert chat_usage({"input_tokens": 2, "output_tokens": "x"}) == {
        "prompt_tokens": 2,
        "completion_tokens": 0,
    }
