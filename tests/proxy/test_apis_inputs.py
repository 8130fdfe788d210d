"""The pure input checks of the non-chat APIs (``dialects.inputs``) and the answer reading of
``proxy.apis.answers``: image inputs in both dialects, each API's 400s, and that no JSON a client
can send makes them do anything but answer or refuse with a 400."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dialects import inputs
from gateway.errors import BadRequest
from gateway.proxy.apis import answers

IMAGE_URL = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
ANTHROPIC_IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png"}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, False),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, False),
        ({"messages": [{"role": "user", "content": [IMAGE_URL]}]}, True),
        ({"messages": [{"role": "user", "content": [ANTHROPIC_IMAGE]}]}, True),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [ANTHROPIC_IMAGE],
                            }
                        ],
                    }
                ]
            },
            True,
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            True,
        ),
        ({"input": "describe an image_url"}, False),  # a word in a text is no image
        ({"messages": "image_url"}, False),
        ([IMAGE_URL], False),
        (None, False),
    ],
)
def test_has_image_input(body: object, expected: bool) -> None:
    assert inputs.has_image_input(body) is expected


def test_the_byte_test_never_misses_an_image() -> None:
    """``may_carry_image`` on the bytes is only a shortcut: an image spelled with JSON escapes
    is still seen."""
    escaped = rb'{"messages":[{"role":"user","content":[{"type":"\u0069mage_url"}]}]}'
    body = orjson.loads(escaped)
    assert b"image" not in escaped and inputs.may_carry_image(escaped)
    assert inputs.has_image_input(body)
    plain = orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})
    assert not inputs.may_carry_image(plain)


def test_no_nesting_makes_the_image_walk_deep() -> None:
    deep: dict[str, Any] = {"type": "text", "text": "x"}
    for _ in range(5000):
        deep = {"type": "tool_result", "content": [deep]}
    assert inputs.has_image_input({"messages": [{"role": "user", "content": [deep]}]}) is False
    listed: Any = {"type": "image_url"}
    for _ in range(5000):
        listed = [listed]
    body = {"messages": [{"role": "user", "content": listed}]}
    assert inputs.has_image_input(body) is False


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)  # what orjson reads and writes
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["image_url", "image", "input_image", "text", "tool_result"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "model",
                    "prompt",
                    "input",
                    "query",
                    "documents",
                    "text_1",
                    "text_2",
                    "n",
                    "stream",
                    "messages",
                    "content",
                    "type",
                    "max_tokens",
                    "dimensions",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)
CHECKS = [
    inputs.check_completions,
    inputs.check_embeddings,
    inputs.check_rerank,
    inputs.check_score,
    inputs.check_images,
]


@given(JSON)
def test_no_json_breaks_the_checks(body: Any) -> None:
    assert inputs.has_image_input(body) in (True, False)
    for check in CHECKS:
        try:
            checked = check(body)
        except BadRequest as err:
            assert err.status == 400 and err.message
        else:
            assert isinstance(checked["model"], str) and checked["model"]


@given(JSON)
def test_whatever_carries_an_image_passes_the_byte_test(body: Any) -> None:
    raw = orjson.dumps(body)
    if inputs.has_image_input(body):
        assert inputs.may_carry_image(raw)


@pytest.mark.parametrize(
    ("check", "body", "param"),
    [
        (inputs.check_completions, {"prompt": "x"}, "model"),
        (inputs.check_completions, {"model": "m"}, "prompt"),
        (inputs.check_completions, {"model": "m", "prompt": []}, "prompt"),
        (inputs.check_completions, {"model": "m", "prompt": [1, "a"]}, "prompt"),
        (inputs.check_completions, {"model": "m", "prompt": "x", "n": 0}, "n"),
        (inputs.check_completions, {"model": "m", "prompt": "x", "stream": "yes"}, "stream"),
        (inputs.check_completions, {"model": "m", "prompt": "x", "max_tokens": True}, "max_tokens"),
        (inputs.check_embeddings, {"model": "m"}, "input"),
        (inputs.check_embeddings, {"model": "m", "input": []}, "input"),
        (inputs.check_embeddings, {"model": "m", "input": [[]]}, "input"),
        (inputs.check_embeddings, {"model": 5, "input": "x"}, "model"),
        (
            inputs.check_embeddings,
            {"model": "m", "input": "x", "encoding_format": "hex"},
            "encoding_format",
        ),
        (inputs.check_embeddings, {"model": "m", "input": "x", "dimensions": -1}, "dimensions"),
        (inputs.check_rerank, {"model": "m", "documents": ["a"]}, "query"),
        (inputs.check_rerank, {"model": "m", "query": "q"}, "documents"),
        (inputs.check_rerank, {"model": "m", "query": "q", "documents": []}, "documents"),
        (inputs.check_rerank, {"model": "m", "query": "q", "documents": "a"}, "documents"),
        (inputs.check_rerank, {"model": "m", "query": "q", "documents": [1]}, "documents"),
        (inputs.check_score, {"model": "m", "text_1": "a"}, "text_1"),
        (inputs.check_score, {"model": "m", "text_1": "a", "text_2": []}, "text_2"),
        (inputs.check_images, {"model": "m"}, "prompt"),
        (inputs.check_images, {"model": "m", "prompt": ""}, "prompt"),
        (inputs.check_images, {"model": "m", "prompt": "p", "n": 1000}, "n"),
    ],
)
def test_each_bad_field_is_named(check: Any, body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        check(body)
    assert info.value.param == param
    assert f"'{param}'" in info.value.message


@pytest.mark.parametrize(
    ("check", "body"),
    [
        (inputs.check_completions, {"model": "m", "prompt": [[1, 2], [3]], "n": 2, "echo": True}),
        (inputs.check_embeddings, {"model": "m", "input": [1, 2, 3], "encoding_format": "base64"}),
        (inputs.check_rerank, {"model": "m", "query": "q", "documents": [{"text": "a"}, "b"]}),
        (inputs.check_score, {"model": "m", "queries": "q", "documents": ["a", "b"]}),
        (inputs.check_score, {"model": "m", "data_1": ["a"], "data_2": ["b"]}),
        (inputs.check_images, {"model": "m", "prompt": "a fox", "n": 4, "size": "256x256"}),
    ],
)
def test_good_bodies_pass(check: Any, body: dict[str, Any]) -> None:
    assert check(body) is body


@given(
    st.dictionaries(
        st.text(max_size=6), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=6), max_size=6
    ),
    st.dictionaries(st.text(max_size=6), st.integers(0, 10**9) | st.text(max_size=6), max_size=4),
)
def test_usage_read_from_the_bytes_is_the_parsed_one(head: dict[str, Any], usage: Any) -> None:
    """The usage found by its key equals the usage of the whole answer parsed, whatever comes
    before it (strings that say "usage" included)."""
    head.pop("usage", None)
    raw = orjson.dumps({**head, "note": '"usage": {"prompt_tokens": 99}', "usage": usage})
    assert answers.usage_in(raw) == orjson.loads(raw)["usage"]


def test_usage_forms() -> None:
    tokens = answers.tokens
    assert tokens(b'{"usage":{"prompt_tokens":3,"completion_tokens":2}}').usage() == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
    }
    assert tokens(b'{"usage": {"total_tokens": 9}}').prompt == 9
    assert tokens(b'{"meta":{"billed_units":{"input_tokens":4}}}').prompt == 4
    assert tokens(b'{"results":[]}').usage() is None
    assert tokens(b'{"usage":"none"}').usage() is None
    assert answers.audio({"text": "x", "usage": {"type": "duration", "seconds": 3}}).seconds == 3
    assert answers.audio({"text": "x", "duration": 2.5}).seconds == 2.5
    assert answers.audio({"duration": float("nan")}).seconds == 0.0
    assert answers.images({"data": [{}, {}], "usage": {"input_tokens": 5}}).images == 2


def test_rename_only_the_workers_name() -> None:
    pattern = answers.renamer("org/big-7b", "small")
    raw = b'{"model" : "org/big-7b","data":[{"text":"\\"model\\":\\"org/big-7b\\""}]}'
    out = answers.rename(raw, pattern, "small", True)
    assert orjson.loads(out) == {"model": "small", "data": [{"text": '"model":"org/big-7b"'}]}
    assert answers.renamer("same", "same") is None
    events = b'data: {"model":"org/big-7b"}\n\ndata: {"model":"org/big-7b"}\n\n'
    assert answers.rename(events, pattern, "small", False).count(b'"model":"small"') == 2


def test_a_scored_sides_size_is_its_utf8_bytes_as_the_bodys_estimate() -> None:
    """A CJK character is about a token: counted as characters, a Chinese query read once per
    document was reserved at a third of the body's own rate (bytes / 4)."""
    query = "漢字" * 100  # 200 characters, 600 bytes
    assert inputs.scored_pairs({"query": query, "documents": ["a", "b", "c"]}) == (600, 3)
    assert inputs.scored_pairs({"query": "ab", "documents": ["c"]}) == (2, 1)
