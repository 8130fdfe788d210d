"""The Responses translation against golden files: each case is a Responses request (and the
conversation it continues), the chat request a worker gets, the worker's answer whole and
streamed, and what the client gets back, replayed through the official SDK's
``responses.create`` and ``responses.stream``."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from .responses_golden import (
    UPSTREAM,
    answer,
    check_golden,
    chunk,
    sdk_response,
    sdk_stream,
    stream_events,
    translated,
    usage_chunk,
    whole,
)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
FILES = {
    "type": "namespace",
    "name": "mcp__files__",
    "description": "The files MCP server",
    "tools": [
        {
            "type": "function",
            "name": "read_file",
            "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        }
    ],
}


def call(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "tool_calls": [
            {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        ]
    }


def more(index: int, arguments: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}


def _plain(value: Any) -> Any:
    """A dump without the ``parsed`` fields the stream helper adds (None without a format)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in ("parsed", "parsed_arguments")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def case(
    name: str,
    body: dict[str, Any],
    message: dict[str, Any],
    chunks: list[dict[str, Any]],
    finish: str = "stop",
    history: list[Any] | None = None,
) -> dict[str, Any]:
    """Run one golden case; returns the whole response and the streamed one (as the SDK
    accumulates both) for the case's own assertions."""
    plan, made = translated(copy.deepcopy(body), history)
    worker_answer = answer(message, finish, (21, 9))
    response = whole(worker_answer, made)
    streamed = [*chunks, chunk({}, finish), usage_chunk(21, 9)]
    events = stream_events(streamed, made)
    check_golden(
        name,
        {
            "responses_request": body,
            "history": history or [],
            "chat_request": plan.chat,
            "dropped_tools": list(plan.dropped),
            "chat_answer": worker_answer,
            "response": response,
            "chat_stream": streamed,
            "response_stream": events,
        },
    )
    parsed = sdk_response(response)
    final = sdk_stream(events, body.get("tools"))
    assert _plain(parsed.model_dump(exclude={"usage"})) == _plain(
        final.model_dump(exclude={"usage"})
    )
    assert final.usage is not None and final.usage.total_tokens == 30
    return {"response": parsed, "streamed": final, "chat": plan.chat, "events": events}


def test_text_with_instructions() -> None:
    body = {"model": "gw-model", "input": "Say hello", "instructions": "Be brief."}
    got = case(
        "text_instructions",
        body,
        {"role": "assistant", "content": "Hello there"},
        [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}),
         chunk({"content": " there"})],
    )  # fmt: skip
    assert got["chat"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert got["response"].output_text == got["streamed"].output_text == "Hello there"
    assert got["response"].model == "gw-model" and got["response"].status == "completed"
    assert got["response"].instructions == "Be brief."


def test_messages_roles_images_and_every_setting() -> None:
    body = {
        "model": "gw-model",
        "input": [
            {"role": "developer", "content": "Answer in JSON."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is in this image?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBO",
                 "detail": "low"},
            ]},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "A fox.", "annotations": []}]},
            {"role": "system", "content": "Mid-conversation note."},
            {"role": "user", "content": [{"type": "input_text", "text": "Its colour?"}]},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_output_tokens": 64,
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "colour", "strict": True,
                            "schema": {"type": "object",
                                       "properties": {"colour": {"type": "string"}}}}},
        "metadata": {"ticket": "42"},
        "user": "user-7",
        "prompt_cache_key": "conversation-1",
        "store": True,
        "include": ["message.output_text.logprobs"],
        "top_k": 20,
        "region": "oslo",
    }  # fmt: skip
    got = case(
        "messages_images_settings",
        body,
        {"role": "assistant", "content": '{"colour": "red"}'},
        [chunk({"role": "assistant", "content": '{"colour": '}), chunk({"content": '"red"}'})],
    )
    chat = got["chat"]
    assert [m["role"] for m in chat["messages"]] == [
        "system",
        "user",
        "assistant",
        "system",
        "user",
    ]
    assert chat["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"},
    }
    assert chat["max_tokens"] == 64 and chat["reasoning_effort"] == "low"
    assert chat["response_format"]["json_schema"]["name"] == "colour"
    assert (chat["top_k"], chat["region"], chat["prompt_cache_key"]) == (
        20,
        "oslo",
        "conversation-1",
    )
    assert not {"store", "include", "metadata", "reasoning", "text"} & chat.keys()
    assert got["response"].metadata == {"ticket": "42"} and got["response"].max_output_tokens == 64


def test_parallel_function_calls_with_a_namespace_and_a_hosted_tool() -> None:
    body = {
        "model": "gw-model",
        "input": "Weather in Paris, and read notes.txt",
        "tools": [WEATHER, FILES, {"type": "web_search"}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    got = case(
        "parallel_calls_namespace",
        body,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "mcp__files__read_file",
                              "arguments": '{"path":"notes.txt"}'}},
            ],
        },
        [chunk({"role": "assistant"}), chunk(call(0, "call_a", "get_weather", "")),
         chunk(call(1, "call_b", "mcp__files__read_file", '{"path":')),
         chunk(more(0, '{"city":"Paris"}')), chunk(more(1, '"notes.txt"}'))],
        finish="tool_calls",
    )  # fmt: skip
    chat = got["chat"]
    assert [t["function"]["name"] for t in chat["tools"]] == [
        "get_weather",
        "mcp__files__read_file",
    ]
    for response in (got["response"], got["streamed"]):
        calls = [(o.name, o.namespace, o.call_id, o.arguments) for o in response.output]
        assert calls == [
            ("get_weather", None, "call_a", '{"city":"Paris"}'),
            ("read_file", "mcp__files__", "call_b", '{"path":"notes.txt"}'),
        ]
    assert [t.type for t in got["response"].tools] == ["function", "namespace"]


def test_a_tool_loop_continues_with_the_outputs() -> None:
    history = [
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        {"type": "reasoning", "id": "rs_1", "summary": [],
         "content": [{"type": "reasoning_text", "text": "I should call the tool."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "get_weather",
         "arguments": '{"city":"Paris"}', "status": "completed"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_b", "name": "read_file",
         "namespace": "mcp__files__", "arguments": '{"path":"a"}', "status": "completed"},
    ]  # fmt: skip
    body = {
        "model": "gw-model",
        "input": [
            {"type": "function_call_output", "call_id": "call_a", "output": "sunny, 21 C"},
            {"type": "function_call_output", "call_id": "call_b",
             "output": [{"type": "input_text", "text": "notes"}]},
        ],
        "tools": [WEATHER, FILES],
        "previous_response_id": "resp_previous",
    }  # fmt: skip
    got = case(
        "tool_loop",
        body,
        {"role": "assistant", "content": "Sunny in Paris."},
        [chunk({"role": "assistant", "content": "Sunny"}), chunk({"content": " in Paris."})],
        history=history,
    )
    assert got["chat"]["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "mcp__files__read_file", "arguments": '{"path":"a"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny, 21 C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "notes"},
    ]  # fmt: skip
    assert got["response"].previous_response_id == "resp_previous"


def test_reasoning_content_becomes_a_reasoning_item() -> None:
    body = {"model": "gw-reasoner", "input": "2+2?", "reasoning": {"effort": "high"}}
    got = case(
        "reasoning_content",
        body,
        {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4."},
        [chunk({"role": "assistant", "reasoning_content": "2+2"}),
         chunk({"reasoning_content": " is 4."}), chunk({"content": "4"})],
    )  # fmt: skip
    for response in (got["response"], got["streamed"]):
        reasoning, _message = response.output
        assert reasoning.type == "reasoning" and reasoning.content is not None
        assert reasoning.content[0].text == "2+2 is 4."
        assert response.output_text == "4"
    kinds = [e["type"] for e in got["events"]]
    assert kinds.count("response.reasoning_text.delta") == 2


def test_a_worker_stopped_at_its_limit_is_incomplete() -> None:
    body = {"model": "gw-model", "input": "Count", "max_output_tokens": 2}
    got = case(
        "max_output_tokens_incomplete",
        body,
        {"role": "assistant", "content": "1 2"},
        [chunk({"role": "assistant", "content": "1"}), chunk({"content": " 2"})],
        finish="length",
    )
    for response in (got["response"], got["streamed"]):
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    assert got["events"][-1]["type"] == "response.incomplete"


# The request Codex CLI (0.171, a custom provider with wire_api = "responses") sends.
CODEX = {
    "model": "gw-coder",
    "instructions": "You are Codex, a coding agent.",
    "input": [
        {"type": "message", "role": "developer",
         "content": [{"type": "input_text", "text": "<permissions instructions>sandbox: "
                      "workspace-write</permissions instructions>"}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "<environment_context>cwd: /repo"
                      "</environment_context>"}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "What does notes.txt say?"}]},
    ],
    "tools": [
        {"type": "function", "name": "shell_command", "description": "Runs a shell command",
         "strict": False, "parameters": {"type": "object", "properties": {
             "command": {"type": "string"}, "workdir": {"type": "string"}},
             "required": ["command"], "additionalProperties": False}},
        {"type": "function", "name": "update_plan", "description": "Updates the plan",
         "strict": False, "parameters": {"type": "object", "properties": {
             "plan": {"type": "array", "items": {"type": "object"}}}}},
        {"type": "web_search", "external_web_access": False},
        FILES,
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    "text": {"verbosity": "medium"},
    "client_metadata": {"x-codex-installation-id": "test"},
}  # fmt: skip


def test_codex_cli_request() -> None:
    got = case(
        "codex_cli",
        CODEX,
        {"role": "assistant", "content": None, "reasoning_content": "Read the file.",
         "tool_calls": [{"id": "call_r", "type": "function", "function": {
             "name": "mcp__files__read_file", "arguments": '{"path":"notes.txt"}'}}]},
        [chunk({"role": "assistant", "reasoning_content": "Read the file."}),
         chunk(call(0, "call_r", "mcp__files__read_file", '{"path":"notes.txt"}'))],
        finish="tool_calls",
    )  # fmt: skip
    chat = got["chat"]
    assert chat["messages"][0] == {
        "role": "system",
        "content": "You are Codex, a coding agent.\n\n<permissions instructions>sandbox: "
        "workspace-write</permissions instructions>",
    }
    assert [t["function"]["name"] for t in chat["tools"]] == [
        "shell_command",
        "update_plan",
        "mcp__files__read_file",
    ]
    assert chat["reasoning_effort"] == "medium" and chat["stream"] is True
    assert chat["prompt_cache_key"] == CODEX["prompt_cache_key"]
    assert not {"include", "store", "text", "client_metadata", "instructions"} & chat.keys()
    _reasoning, read = got["streamed"].output
    assert (read.name, read.namespace) == ("read_file", "mcp__files__")
    assert got["streamed"].store is False


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": [1]}, "input[0]"),
        ({"model": "m", "input": 7}, "input"),
        ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "hi", "temperature": "hot"}, "temperature"),
        ({"model": "m", "input": "hi", "background": True}, "background"),
        ({"model": "m", "input": "hi", "metadata": []}, "metadata"),
    ],
)
def test_malformed_requests_are_400_naming_the_field(body: Any, param: str | None) -> None:
    from gateway.dialects.responses import check
    from gateway.errors import BadRequest

    with pytest.raises(BadRequest) as caught:
        check(body)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "item_reference", "id": "x"}, "input[0]"),
        ({"role": "robot", "content": "hi"}, "input[0].role"),
        ({"role": "user", "content": 5}, "input[0].content"),
        ({"role": "user", "content": [{"type": "input_file", "file_id": "f"}]},
         "input[0].content[0]"),
        ({"role": "user", "content": [{"type": "input_image", "file_id": "f"}]},
         "input[0].content[0]"),
        ({"role": "system", "content": [{"type": "input_image", "image_url": "u"}]},
         "input[0].content"),
        ({"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}, "input[0]"),
        ({"type": "function_call_output", "output": "x"}, "input[0]"),
    ],
)  # fmt: skip
def test_items_a_chat_worker_cannot_take_are_400(item: dict[str, Any], param: str) -> None:
    from gateway.dialects.responses import translate
    from gateway.errors import BadRequest

    with pytest.raises(BadRequest) as caught:
        translate({"model": "m", "input": [item]}, [], "drop")
    assert caught.value.param == param


def test_hosted_tools_are_dropped_and_named_or_refused() -> None:
    from gateway.dialects.responses import translate
    from gateway.errors import BadRequest

    tools = [WEATHER, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": []},
             {"type": "custom", "name": "apply_patch"}]  # fmt: skip
    body = {"model": "m", "input": "hi", "tools": tools, "tool_choice": {"type": "web_search"}}
    plan = translate(body, [], "drop")
    assert plan.dropped == ("web_search", "file_search", "custom:apply_patch")
    assert [t["function"]["name"] for t in plan.chat["tools"]] == ["get_weather"]
    assert "tool_choice" not in plan.chat  # the forced tool is gone: the worker chooses
    with pytest.raises(BadRequest, match="web_search, file_search, custom:apply_patch"):
        translate(body, [], "reject")
    only_hosted = translate({"model": "m", "input": "hi", "tools": tools[1:2]}, [], "drop")
    assert "tools" not in only_hosted.chat


def test_tool_choice_forms() -> None:
    from gateway.dialects.responses import translate

    def choice(value: Any) -> Any:
        plan = translate({"model": "m", "input": "x", "tools": [WEATHER, FILES],
                          "tool_choice": value}, [], "drop")  # fmt: skip
        return plan.chat.get("tool_choice"), [t["function"]["name"] for t in plan.chat["tools"]]

    names = ["get_weather", "mcp__files__read_file"]
    assert choice("required") == ("required", names)
    assert choice({"type": "function", "name": "get_weather"}) == (
        {"type": "function", "function": {"name": "get_weather"}},
        names,
    )
    allowed = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "function", "name": "read_file", "namespace": "mcp__files__"}],
    }
    assert choice(allowed) == ("required", ["mcp__files__read_file"])  # fmt: skip


def test_a_namespace_name_clashing_with_a_tool_is_400() -> None:
    from gateway.dialects.responses import translate
    from gateway.errors import BadRequest

    clash = dict(WEATHER, name="mcp__files__read_file")
    with pytest.raises(BadRequest, match="another tool is named too"):
        translate({"model": "m", "input": "x", "tools": [clash, FILES]}, [], "drop")


def test_output_goes_to_the_worker_model_name_only_through_the_handler() -> None:
    plan, _ = translated({"model": "gw-model", "input": "x"})
    assert plan.chat["model"] == UPSTREAM  # the helper maps it, as outbound() does
    assert json.dumps(plan.chat)  # plain JSON, ready to send
