"""The Responses relay's cheaper steps give the events of the plain ones: the ends of events
looked up (not formatted) while a stream is short, formatted past that; a text chunk's bytes
searched for a backslash by value."""

from __future__ import annotations

import orjson

from gateway.dialects.responses_answer import shape
from gateway.dialects.responses_stream import _KNOWN_ENDS, ResponsesRelay


def _chunk(delta: dict[str, object]) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
    return b"data: " + orjson.dumps(
        {"id": "c", "object": "chat.completion.chunk", "choices": [choice]}
    )


def _events(stream: bytes) -> list[dict[str, object]]:
    return [orjson.loads(line[6:]) for line in stream.split(b"\n") if line.startswith(b"data: ")]


def test_events_are_numbered_in_order_past_the_ends_made_once() -> None:
    """More text chunks than ``_KNOWN_ENDS``: every event numbered one more than the last, by
    the framed path and by the parsing path alike."""
    texts = ["a\\b" if i % 7 == 0 else f"t{i} " for i in range(_KNOWN_ENDS + 40)]
    events = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": text}) for text in texts] + [b"data: [DONE]"]
    made = shape({"model": "m", "input": "x"}, "resp_" + "a" * 48, 1, "m")
    fast, slow = ResponsesRelay(made, 2), ResponsesRelay(made, 2)
    slow._learn = 0  # never learns a frame: every chunk is parsed
    framed = b"".join(fast.relay(events[i : i + 50]) for i in range(0, len(events), 50))
    framed += fast.finish()
    parsed = slow.relay(events) + slow.finish()
    assert framed == parsed
    events_out = _events(framed)
    numbers = [event["sequence_number"] for event in events_out]
    assert numbers == list(range(len(numbers))) and numbers[-1] > _KNOWN_ENDS
    deltas = [e["delta"] for e in events_out if e["type"] == "response.output_text.delta"]
    assert "".join(str(delta) for delta in deltas) == "".join(texts)
