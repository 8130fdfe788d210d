"""The affinity key: the turns of one conversation share it, other conversations do not, and an
explicit session (Claude Code's included) wins over the prompt."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.dialects import anthropic
from gateway.routing.affinity import affinity_key, claude_code_session, prefix_text

SYSTEM = {"role": "system", "content": "You are a careful assistant."}


def key(body: dict[str, Any], tokens: int = 256) -> int | None:
    return affinity_key(orjson.dumps({"model": "m", **body}), tokens)


def turns(opening: str) -> list[list[dict[str, Any]]]:
    """Three turns of one conversation, each extending the previous prompt."""
    first = [SYSTEM, {"role": "user", "content": opening}]
    second = [
        *first,
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "And?"},
    ]
    third = [*second, {"role": "assistant", "content": "Done."}, {"role": "user", "content": "Ok"}]
    return [first, second, third]


def test_every_turn_of_a_conversation_has_its_first_turns_key() -> None:
    keys = {key({"messages": m, "stream": i % 2 == 0}) for i, m in enumerate(turns("Plan a trip"))}
    assert len(keys) == 1 and None not in keys


def test_conversations_with_other_openings_have_other_keys() -> None:
    keys = {key({"messages": turns(f"Question number {i}")[1]}) for i in range(50)}
    assert len(keys) == 50


def test_the_prefix_is_cut_at_the_token_budget() -> None:
    """Past affinity_prefix_tokens times 4 characters nothing counts: two prompts that differ only
    there share a key (and a system prompt longer than the budget groups its conversations)."""
    long = "x" * 4000
    a = key({"messages": [{"role": "system", "content": long + "A"}]}, tokens=100)
    b = key({"messages": [{"role": "system", "content": long + "B"}]}, tokens=100)
    assert a == b
    assert key({"messages": [{"role": "user", "content": "A"}]}) != key(
        {"messages": [{"role": "user", "content": "B"}]}
    )
    assert len(prefix_text([{"role": "user", "content": long}], 400)) == 400


def test_content_parts_and_strings_are_read_alike_for_text() -> None:
    parts = [{"type": "text", "text": "Plan a trip"}]
    assert key({"messages": [SYSTEM, {"role": "user", "content": parts}]}) == key(
        {"messages": [SYSTEM, {"role": "user", "content": "Plan a trip"}]}
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("prompt_cache_key", "pck-1"), ("session_id", "s-1"), ("user", "alice")],
)
def test_an_explicit_session_wins_over_the_prompt(field: str, value: str) -> None:
    a = key({field: value, "messages": turns("one")[0]})
    b = key({field: value, "messages": turns("two")[2]})
    assert a == b != key({"messages": turns("one")[0]})


def test_prompt_cache_key_wins_over_user() -> None:
    assert key({"prompt_cache_key": "p", "user": "u", "messages": []}) == key(
        {"prompt_cache_key": "p", "messages": []}
    )


def test_claude_code_user_id_yields_its_session() -> None:
    as_json = orjson.dumps({"device_id": "d1", "account_uuid": "a1", "session_id": "sess-9"})
    assert claude_code_session(as_json.decode()) == "sess-9"
    suffixed = (
        "user_0a1b_account_7c2e5b54-1111-2222-3333-444455556666"
        "_session_9f1c2d3e-aaaa-bbbb-cccc-ddddeeeeffff"
    )
    assert claude_code_session(suffixed) == "9f1c2d3e-aaaa-bbbb-cccc-ddddeeeeffff"
    assert claude_code_session("plain-user") is None
    assert claude_code_session("{not json") is None


def test_two_sessions_of_one_claude_code_user_differ_and_each_keeps_its_key() -> None:
    """Anthropic bodies, translated as the gateway does: metadata.user_id becomes ``user``."""

    def translated(session: str, opening: str) -> bytes:
        user_id = orjson.dumps({"device_id": "dev", "session_id": session}).decode()
        body = {
            "model": "m",
            "max_tokens": 64,
            "system": "You are Claude Code.",
            "metadata": {"user_id": user_id},
            "messages": [{"role": "user", "content": opening}],
        }
        return orjson.dumps(anthropic.to_openai_request(body, "up"))

    assert affinity_key(translated("s1", "fix the bug"), 256) == affinity_key(
        translated("s1", "another turn entirely"), 256
    )
    assert affinity_key(translated("s1", "x"), 256) != affinity_key(translated("s2", "x"), 256)


def test_no_key_for_what_has_neither_session_nor_prompt() -> None:
    assert affinity_key(b"not json", 256) is None
    assert affinity_key(b"[1, 2]", 256) is None
    assert key({"messages": "hello"}) is None
    assert key({"messages": [{"role": "assistant", "content": "hi"}]}) is None
