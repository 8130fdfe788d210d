"""The Anthropic dialect, request side and whole answers: detection, request translation and its
validation, answer translation, the model list, token estimates, and the golden cases (which also
replay every translated answer and stream through the official SDK)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from anthropic.types import ModelInfo

from gateway.dialects.anthropic import (
    encode_event,
    error_event,
    estimate_tokens,
    is_anthropic,
    models_list,
    ping,
    to_anthropic_response,
    to_openai_request,
)
from gateway.errors import BadRequest

from .golden import (
    answer,
    assert_strict_stream,
    check,
    chunk,
    fragment,
    sdk_message,
    sdk_stream,
    translate_stream,
    usage_chunk,
)

UPSTREAM = "vendor/upstream-model"
USER_HI = {"role": "user", "content": "hi"}
PNG_BLOCK = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
}
PNG_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WEATHER_FUNCTION = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": WEATHER_TOOL["input_schema"],
        "description": "Current weather of a city",
    },
}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-gw", "max_tokens": 64, "messages": [USER_HI]} | fields


def tool_use(call_id: str, city: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": city}}


def tool_result(call_id: str, content: Any = "sunny") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content}


def tool_call(call_id: str, city: str) -> dict[str, Any]:
    arguments = json.dumps({"city": city}, separators=(",", ":"))
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }


ROUND_TRIP = [
    {"role": "user", "content": "Weather in Oslo and Rome?"},
    {"role": "assistant", "content": [tool_use("toolu_01A", "Oslo"), tool_use("call_xyz", "Rome")]},
    {
        "role": "user",
        "content": [
            tool_result("toolu_01A", "rain"),
            tool_result(
                "call_xyz", [{"type": "text", "text": "sun"}, {"type": "text", "text": "28C"}]
            ),
            {"type": "text", "text": "Compare them."},
        ],
    },
]


# --- detection ---------------------------------------------------------------------------------

DETECTION = [
    ("/v1/messages", False, {}, True),
    ("/api/v1/messages/", False, None, True),
    ("/v1/chat/completions", True, {}, True),
    ("/v1/chat/completions", False, {"system": "be brief", "messages": []}, True),
    ("/v1/chat/completions", False, {"tools": [WEATHER_TOOL]}, True),
    ("/v1/chat/completions", False, {"messages": ROUND_TRIP[1:2]}, True),
    (
        "/v1/chat/completions",
        False,
        {"messages": [{"role": "user", "content": [tool_result("x")]}]},
        True,
    ),
    (
        "/v1/chat/completions",
        False,
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
        True,
    ),
    ("/v1/chat/completions", False, {"model": "m", "messages": [USER_HI]}, False),
    ("/v1/chat/completions", False, {"tools": [WEATHER_FUNCTION]}, False),
    (
        "/v1/chat/completions",
        False,
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        False,
    ),
    (
        "/v1/chat/completions",
        False,
        {"messages": [{"role": "user", "content": [{"type": "image"}]}]},
        False,
    ),
    ("/v1/llm/chat", False, None, False),
    ("/v1/llm/chat", False, ["system"], False),
    ("/v1/llm/chat", False, {"messages": "system", "tools": "input_schema"}, False),
]


@pytest.mark.parametrize(("path", "version", "payload", "expected"), DETECTION)
def test_detection(path: str, version: bool, payload: object, expected: bool) -> None:
    assert is_anthropic(path, version, payload) is expected


# --- request translation ------------------------------------------------------------------------

TRANSLATIONS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("no_extras", {}, {"model": UPSTREAM, "max_tokens": 64, "messages": [USER_HI]}),
    (
        "system_string",
        {"system": "Be brief."},
        {"messages": [{"role": "system", "content": "Be brief."}, USER_HI]},
    ),
    (
        "system_blocks",
        {
            "system": [
                {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "B"},
            ]
        },
        {"messages": [{"role": "system", "content": "A\nB"}, USER_HI]},
    ),
    ("system_empty", {"system": ""}, {"messages": [USER_HI]}),
    (
        "text_blocks_joined",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ]
        },
        {"messages": [{"role": "user", "content": "a\nb"}]},
    ),
    (
        "images",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    ],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                    ],
                }
            ]
        },
    ),
    ("tools", {"tools": [WEATHER_TOOL]}, {"tools": [WEATHER_FUNCTION]}),
    ("tools_empty", {"tools": []}, {"messages": [USER_HI]}),
    ("tool_choice_auto", {"tool_choice": {"type": "auto"}}, {"tool_choice": "auto"}),
    ("tool_choice_any", {"tool_choice": {"type": "any"}}, {"tool_choice": "required"}),
    ("tool_choice_none", {"tool_choice": {"type": "none"}}, {"tool_choice": "none"}),
    (
        "tool_choice_tool",
        {"tool_choice": {"type": "tool", "name": "get_weather"}},
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    ),
    (
        "tool_choice_no_parallel",
        {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
        {"tool_choice": "auto", "parallel_tool_calls": False},
    ),
    (
        "tool_round_trip",
        {"messages": ROUND_TRIP},
        {
            "messages": [
                ROUND_TRIP[0],
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [tool_call("toolu_01A", "Oslo"), tool_call("call_xyz", "Rome")],
                },
                {"role": "tool", "tool_call_id": "toolu_01A", "content": "rain"},
                {"role": "tool", "tool_call_id": "call_xyz", "content": "sun\n28C"},
                {"role": "user", "content": "Compare them."},
            ]
        },
    ),
    (
        "assistant_text_and_tool_use_thinking_dropped",
        {
            "messages": [
                USER_HI,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        tool_use("t1", "Oslo"),
                    ],
                },
                {"role": "user", "content": [tool_result("t1")]},
                {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
            ]
        },
        {
            "messages": [
                USER_HI,
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [tool_call("t1", "Oslo")],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
            ]
        },
    ),
    (
        "tool_result_without_content",
        {
            "messages": [
                USER_HI,
                {"role": "assistant", "content": [tool_use("t1", "Oslo")]},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": True}],
                },
            ]
        },
        {
            "messages": [
                USER_HI,
                {"role": "assistant", "content": None, "tool_calls": [tool_call("t1", "Oslo")]},
                {"role": "tool", "tool_call_id": "t1", "content": ""},
            ]
        },
    ),
    (
        "sampling",
        {
            "stop_sequences": ["END", "\n\n"],
            "temperature": 0.3,
            "top_p": 0.8,
            "metadata": {"user_id": "u-1"},
        },
        {"stop": ["END", "\n\n"], "temperature": 0.3, "top_p": 0.8, "user": "u-1"},
    ),
    ("no_stops_no_user", {"stop_sequences": [], "metadata": {}}, {"messages": [USER_HI]}),
    ("stream", {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}),
    ("no_stream", {"stream": False}, {"stream": False}),
    (
        "extras_forwarded",
        {"top_k": 5, "region": "oslo", "agent_id": "a1", "chat_template_kwargs": {"x": 1}},
        {"top_k": 5, "region": "oslo", "agent_id": "a1", "chat_template_kwargs": {"x": 1}},
    ),
    (
        "anthropic_only_fields_stripped",
        {
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "cache_control": {"type": "ephemeral"},
            "container": "c1",
            "mcp_servers": [],
            "service_tier": "auto",
            "speed": "fast",
            "inference_geo": "us",
            "diagnostics": {"previous_message_id": "msg_1"},
        },
        {},
    ),
    (
        "thinking_enabled_small_budget",
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "low"},
    ),
    (
        "thinking_enabled_medium_budget",
        {"thinking": {"type": "enabled", "budget_tokens": 4096}},
        {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "medium"},
    ),
    (
        "thinking_enabled_large_budget",
        {"thinking": {"type": "enabled", "budget_tokens": 16384}},
        {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "high"},
    ),
    (
        "thinking_adaptive_with_effort",
        {
            "thinking": {"type": "adaptive", "display": "omitted"},
            "output_config": {"effort": "max"},
        },
        {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "high"},
    ),
    (
        "thinking_disabled",
        {"thinking": {"type": "disabled"}},
        {"chat_template_kwargs": {"enable_thinking": False}},
    ),
    (
        "thinking_of_a_type_to_come",
        {"thinking": {"type": "auto"}, "output_config": {"effort": "extreme"}},
        {},
    ),
    (
        "effort_beats_budget_and_client_template_kwargs_win",
        {
            "thinking": {"type": "enabled", "budget_tokens": 32000},
            "output_config": {"effort": "low"},
            "chat_template_kwargs": {"enable_thinking": False, "custom": 1},
        },
        {
            "chat_template_kwargs": {"enable_thinking": False, "custom": 1},
            "reasoning_effort": "low",
        },
    ),
    (
        "output_format",
        {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": {"type": "object"}},
            }
        },
    ),
    (
        "tool_extras_dropped",
        {
            "tools": [
                {**WEATHER_TOOL, "cache_control": {"type": "ephemeral"}, "defer_loading": True},
                {**WEATHER_TOOL, "type": "custom", "strict": True, "input_examples": [{}]},
            ]
        },
        {"tools": [WEATHER_FUNCTION, WEATHER_FUNCTION]},
    ),
    (
        "system_turn_after_user_folded_into_it",
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {
                    "role": "system",
                    "content": [
                        {"type": "text", "text": "# Env", "cache_control": {"type": "ephemeral"}}
                    ],
                },
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "hi\n\n<system-reminder>\n# Env\n</system-reminder>"}
            ]
        },
    ),
    (
        "system_turn_after_assistant_goes_to_next_user",
        {
            "messages": [
                USER_HI,
                {"role": "assistant", "content": "Hello."},
                {"role": "system", "content": "Be brief."},
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Again"},
            ]
        },
        {
            "messages": [
                USER_HI,
                {"role": "assistant", "content": "Hello."},
                {
                    "role": "user",
                    "content": "<system-reminder>\nBe brief.\n</system-reminder>\n\n"
                    "<system-reminder>\nBe kind.\n</system-reminder>\n\nAgain",
                },
            ]
        },
    ),
    (
        "system_turn_first_and_last",
        {
            "messages": [
                {"role": "system", "content": "First."},
                USER_HI,
                {"role": "assistant", "content": "Hello."},
                {"role": "system", "content": "Last."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "<system-reminder>\nFirst.\n</system-reminder>\n\nhi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "<system-reminder>\nLast.\n</system-reminder>"},
            ]
        },
    ),
    (
        "system_turn_after_tool_results",
        {
            "messages": [
                USER_HI,
                {"role": "assistant", "content": [tool_use("t1", "Oslo")]},
                {"role": "user", "content": [tool_result("t1")]},
                {"role": "system", "content": "Note."},
                {"role": "system", "content": "More."},
            ]
        },
        {
            "messages": [
                USER_HI,
                {"role": "assistant", "content": None, "tool_calls": [tool_call("t1", "Oslo")]},
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {
                    "role": "user",
                    "content": "<system-reminder>\nNote.\n</system-reminder>\n\n"
                    "<system-reminder>\nMore.\n</system-reminder>",
                },
            ]
        },
    ),
    (
        "system_turn_after_an_image",
        {
            "messages": [
                {"role": "user", "content": [PNG_BLOCK]},
                {"role": "system", "content": "Note."},
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        PNG_PART,
                        {"type": "text", "text": "<system-reminder>\nNote.\n</system-reminder>"},
                    ],
                }
            ]
        },
    ),
    (
        "tool_result_with_image_reference_and_document",
        {
            "messages": [
                USER_HI,
                {"role": "assistant", "content": [tool_use("t1", "Oslo")]},
                {
                    "role": "user",
                    "content": [
                        tool_result(
                            "t1",
                            [
                                {"type": "text", "text": "Here:", "cache_control": {"type": "x"}},
                                PNG_BLOCK,
                                {"type": "tool_reference", "tool_name": "CronCreate"},
                                {
                                    "type": "document",
                                    "source": {
                                        "type": "text",
                                        "media_type": "text/plain",
                                        "data": "notes",
                                    },
                                },
                            ],
                        ),
                        {"type": "text", "text": "Go on."},
                    ],
                },
            ]
        },
        {
            "messages": [
                USER_HI,
                {"role": "assistant", "content": None, "tool_calls": [tool_call("t1", "Oslo")]},
                {
                    "role": "tool",
                    "tool_call_id": "t1",
                    "content": "Here:\n[image attached below]\nTool loaded: CronCreate\nnotes",
                },
                {"role": "user", "content": [PNG_PART, {"type": "text", "text": "Go on."}]},
            ]
        },
    ),
    (
        "document_content_blocks",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "content",
                                "content": [{"type": "text", "text": "d"}],
                            },
                        },
                        {"type": "text", "text": "Sum up."},
                    ],
                }
            ]
        },
        {"messages": [{"role": "user", "content": "d\nSum up."}]},
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in TRANSLATIONS], ids=[c[0] for c in TRANSLATIONS]
)
def test_request_translation(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    request = body(**fields)
    before = copy.deepcopy(request)
    translated = to_openai_request(request, UPSTREAM)
    assert request == before, "the client's body is not changed"
    assert translated == {"model": UPSTREAM, "max_tokens": 64, "messages": [USER_HI]} | expected


# --- request validation -------------------------------------------------------------------------

ASSISTANT_T1 = {"role": "assistant", "content": [tool_use("t1", "Oslo")]}


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


NOT_ISSUED = (
    "is not the id of a tool_use block in an earlier assistant message;"
    " answer only tool calls the conversation made, with their ids as they were."
)
MESSAGES_LIST = 'a non-empty list of {"role", "content"} messages.'
EMPTY = "is empty; send a non-empty string or at least one block."
BLOCK_TYPES = "use text, image, tool_use or tool_result."
TEXT_ONLY = 'only text blocks are allowed here: {"type": "text", "text": ...}.'
POSITIVE = "must be a positive integer, e.g. 1024"
TOOL_USE_NO_ID = {"type": "tool_use", "name": "f", "input": {}}

# (case, fields replacing the valid body's (None removes one), param, what the message says after
# "<param>: ")
BAD_REQUESTS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "max_tokens_missing",
        {"max_tokens": None},
        "max_tokens",
        "required in an Anthropic Messages request; send the most tokens to generate,"
        ' e.g. "max_tokens": 1024.',
    ),
    ("max_tokens_zero", {"max_tokens": 0}, "max_tokens", f"{POSITIVE} (got 0)."),
    ("max_tokens_string", {"max_tokens": "64"}, "max_tokens", f"{POSITIVE} (got '64')."),
    ("max_tokens_bool", {"max_tokens": True}, "max_tokens", f"{POSITIVE} (got True)."),
    ("messages_missing", {"messages": None}, "messages", f"required; send {MESSAGES_LIST}"),
    ("messages_empty", {"messages": []}, "messages", f"must be {MESSAGES_LIST}"),
    ("messages_not_list", {"messages": "hi"}, "messages", f"must be {MESSAGES_LIST}"),
    (
        "message_not_object",
        {"messages": ["hi"]},
        "messages[0]",
        "must be an object with 'role' and 'content'.",
    ),
    (
        "role_missing",
        {"messages": [{"content": "hi"}]},
        "messages[0].role",
        "must be 'user', 'assistant' or 'system' (got None).",
    ),
    (
        "role_unknown",
        {"messages": [{"role": "bot", "content": "hi"}]},
        "messages[0].role",
        "must be 'user', 'assistant' or 'system' (got 'bot').",
    ),
    (
        "role_not_a_string",
        {"messages": [{"role": ["user"], "content": "hi"}]},
        "messages[0].role",
        "must be 'user', 'assistant' or 'system' (got ['user']).",
    ),
    (
        "role_system_empty",
        {"messages": [USER_HI, {"role": "system", "content": ""}]},
        "messages[1].content",
        EMPTY,
    ),
    (
        "role_system_image",
        {"messages": [USER_HI, {"role": "system", "content": [{"type": "image"}]}]},
        "messages[1].content[0].type",
        TEXT_ONLY,
    ),
    (
        "role_tool",
        {
            "messages": [
                USER_HI,
                ASSISTANT_T1,
                {"role": "tool", "tool_call_id": "t1", "content": "x"},
            ]
        },
        "messages[2].role",
        "'tool' is an OpenAI role; send tool results as tool_result blocks in a user message.",
    ),
    (
        "tool_calls_in_message",
        {"messages": [USER_HI, {"role": "assistant", "content": "x", "tool_calls": []}]},
        "messages[1].tool_calls",
        "OpenAI's form of tool calls; send tool_use blocks in the assistant message's content"
        " instead.",
    ),
    (
        "content_empty_string",
        {"messages": [{"role": "user", "content": ""}]},
        "messages[0].content",
        EMPTY,
    ),
    ("content_empty_list", {"messages": [user()]}, "messages[0].content", EMPTY),
    (
        "content_missing",
        {"messages": [{"role": "user"}]},
        "messages[0].content",
        "must be a string or a list of content blocks.",
    ),
    (
        "block_not_object",
        {"messages": [user("hi")]},
        "messages[0].content[0]",
        "must be a content block object with a 'type'.",
    ),
    (
        "block_type_unknown",
        {"messages": [user({"type": "video", "url": "x"})]},
        "messages[0].content[0].type",
        f"unknown content block type 'video'; {BLOCK_TYPES}",
    ),
    (
        "block_type_missing",
        {"messages": [user({"text": "hi"})]},
        "messages[0].content[0].type",
        f"missing; {BLOCK_TYPES}",
    ),
    (
        "openai_image_part",
        {"messages": [user({"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}})]},
        "messages[0].content[1].type",
        f"unknown content block type 'image_url'; {BLOCK_TYPES}",
    ),
    (
        "text_not_string",
        {"messages": [user({"type": "text", "text": 5})]},
        "messages[0].content[0].text",
        "must be a string.",
    ),
    (
        "tool_use_in_user",
        {"messages": [user(tool_use("t1", "Oslo"))]},
        "messages[0].content[0].type",
        "tool_use blocks belong in an assistant message.",
    ),
    (
        "thinking_in_user",
        {"messages": [user({"type": "thinking", "thinking": "x"})]},
        "messages[0].content[0].type",
        "thinking blocks belong in an assistant message.",
    ),
    (
        "tool_result_in_assistant",
        {"messages": [USER_HI, {"role": "assistant", "content": [tool_result("t1")]}]},
        "messages[1].content[0].type",
        "tool_result blocks belong in a user message.",
    ),
    (
        "image_in_assistant",
        {"messages": [USER_HI, {"role": "assistant", "content": [{"type": "image"}]}]},
        "messages[1].content[0].type",
        "image blocks belong in a user message.",
    ),
    (
        "tool_result_unknown_id",
        {"messages": [USER_HI, ASSISTANT_T1, user(tool_result("t2"))]},
        "messages[2].content[0].tool_use_id",
        f"'t2' {NOT_ISSUED}",
    ),
    (
        "tool_result_before_its_call",
        {"messages": [user(tool_result("t1")), ASSISTANT_T1]},
        "messages[0].content[0].tool_use_id",
        f"'t1' {NOT_ISSUED}",
    ),
    (
        "tool_result_image_without_source",
        {"messages": [USER_HI, ASSISTANT_T1, user(tool_result("t1", [{"type": "image"}]))]},
        "messages[2].content[0].content[0].source",
        'must be {"type": "base64", "media_type", "data"} or {"type": "url", "url"}.',
    ),
    (
        "tool_result_tool_use",
        {"messages": [USER_HI, ASSISTANT_T1, user(tool_result("t1", [TOOL_USE_NO_ID]))]},
        "messages[2].content[0].content[0].type",
        "a tool result holds text, image and tool_reference blocks.",
    ),
    (
        "tool_result_not_a_list",
        {"messages": [USER_HI, ASSISTANT_T1, user(tool_result("t1", {"type": "text"}))]},
        "messages[2].content[0].content",
        "must be a string or a list of content blocks.",
    ),
    (
        "tool_reference_without_name",
        {
            "messages": [
                USER_HI,
                ASSISTANT_T1,
                user(tool_result("t1", [{"type": "tool_reference"}])),
            ]
        },
        "messages[2].content[0].content[0].tool_name",
        "must name the tool loaded.",
    ),
    (
        "document_pdf",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBERi0=",
                            },
                        }
                    ],
                }
            ]
        },
        "messages[0].content[0].source",
        "only plain-text documents reach the worker"
        ' ({"type": "text", "media_type": "text/plain", "data": ...}); send a PDF\'s text.',
    ),
    (
        "tool_use_without_id",
        {"messages": [USER_HI, {"role": "assistant", "content": [TOOL_USE_NO_ID]}]},
        "messages[1].content[0].id",
        "must be a non-empty string: the id its tool_result answers.",
    ),
    (
        "tool_use_input_not_object",
        {
            "messages": [
                USER_HI,
                {"role": "assistant", "content": [TOOL_USE_NO_ID | {"id": "t", "input": "{}"}]},
            ]
        },
        "messages[1].content[0].input",
        "must be an object holding the tool's arguments.",
    ),
    (
        "image_source_bad",
        {"messages": [user({"type": "image", "source": {"type": "file", "file_id": "f"}})]},
        "messages[0].content[0].source",
        'must be {"type": "base64", "media_type", "data"} or {"type": "url", "url"}.',
    ),
    (
        "image_base64_no_data",
        {"messages": [user({"type": "image", "source": {"type": "base64", "media_type": "x"}})]},
        "messages[0].content[0].source",
        "a base64 image needs 'media_type' and 'data' strings.",
    ),
    ("system_image", {"system": [{"type": "image"}]}, "system[0].type", TEXT_ONLY),
    ("system_number", {"system": 5}, "system", "must be a string or a list of text blocks."),
    (
        "openai_tool_mixed_in",
        {"tools": [WEATHER_TOOL, WEATHER_FUNCTION]},
        "tools[1]",
        "an OpenAI-style function tool in an Anthropic request;"
        ' send {"name", "description", "input_schema"} instead.',
    ),
    (
        "tool_without_schema",
        {"tools": [{"name": "f"}]},
        "tools[0].input_schema",
        'must be a JSON Schema object: {"type": "object", ...}.',
    ),
    (
        "tool_without_name",
        {"tools": [{"input_schema": {}}]},
        "tools[0].name",
        "must be the tool's name.",
    ),
    (
        "server_tool",
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        "tools[0].type",
        "'web_search_20250305' is a server tool the worker cannot run;"
        " define a custom tool instead.",
    ),
    (
        "tools_not_list",
        {"tools": WEATHER_TOOL},
        "tools",
        'must be a list of {"name", "description", "input_schema"} tools.',
    ),
    (
        "tool_choice_string",
        {"tool_choice": "auto"},
        "tool_choice",
        'must be an object: {"type": "auto" | "any" | "tool" | "none"}.',
    ),
    (
        "tool_choice_openai_required",
        {"tool_choice": {"type": "required"}},
        "tool_choice.type",
        "must be auto, any, tool or none (got 'required').",
    ),
    (
        "tool_choice_tool_without_name",
        {"tool_choice": {"type": "tool"}},
        "tool_choice.name",
        "must name the tool the model has to call.",
    ),
    (
        "stop_sequences_string",
        {"stop_sequences": "END"},
        "stop_sequences",
        "must be a list of strings.",
    ),
    (
        "metadata_string",
        {"metadata": "u-1"},
        "metadata",
        'must be an object, e.g. {"user_id": "..."}.',
    ),
    ("stream_string", {"stream": "yes"}, "stream", "must be true or false."),
]


@pytest.mark.parametrize(
    ("fields", "param", "problem"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_requests(fields: dict[str, Any], param: str, problem: str) -> None:
    request = {k: v for k, v in body(**fields).items() if v is not None}
    with pytest.raises(BadRequest) as raised:
        to_openai_request(request, UPSTREAM)
    assert (raised.value.param, raised.value.message) == (param, f"{param}: {problem}")
    assert raised.value.status == 400


def test_deeply_nested_tool_input_is_a_bad_request() -> None:
    deep: dict[str, Any] = {}
    for _ in range(5000):
        deep = {"a": deep}
    request = body(
        messages=[
            USER_HI,
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "f", "input": deep}],
            },
        ]
    )
    with pytest.raises(BadRequest, match="nested too deeply"):
        to_openai_request(request, UPSTREAM)


# --- whole answers ------------------------------------------------------------------------------

TEXT = {"role": "assistant", "content": "Hello."}
CALLS = {"role": "assistant", "content": None, "tool_calls": [tool_call("call_1", "Oslo")]}
STOPS: list[tuple[str, str | None, dict[str, Any], tuple[str, str | None]]] = [
    ("stop", "stop", {}, ("end_turn", None)),
    ("length", "length", {}, ("max_tokens", None)),
    ("tool_calls", "tool_calls", {}, ("tool_use", None)),
    ("function_call", "function_call", {}, ("tool_use", None)),
    ("content_filter", "content_filter", {}, ("end_turn", None)),
    ("missing", None, {}, ("end_turn", None)),
    ("vllm_stop_string", "stop", {"stop_reason": "END"}, ("stop_sequence", "END")),
    ("vllm_stop_token", "stop", {"stop_reason": 128009}, ("end_turn", None)),
    ("sglang_matched_stop", "stop", {"matched_stop": "\n\n"}, ("stop_sequence", "\n\n")),
    ("stop_string_but_length", "length", {"stop_reason": "END"}, ("max_tokens", None)),
]


@pytest.mark.parametrize(
    ("finish", "extra", "expected"), [c[1:] for c in STOPS], ids=[c[0] for c in STOPS]
)
def test_stop_reasons(finish: str, extra: dict[str, Any], expected: tuple[str, str | None]) -> None:
    translated = to_anthropic_response(answer(TEXT, finish, (5, 2), **extra), "claude-gw")
    assert (translated["stop_reason"], translated["stop_sequence"]) == expected
    sdk_message(translated)


TOOL_ARGUMENTS: list[tuple[str, object, dict[str, Any]]] = [
    ("object", '{"city": "Oslo"}', {"city": "Oslo"}),
    ("blank", "", {}),
    ("whitespace", "  ", {}),
    ("invalid_json_kept_raw", '{"city": "Os', {"_raw_arguments": '{"city": "Os'}),
    ("not_an_object_kept_raw", "[1, 2]", {"_raw_arguments": "[1, 2]"}),
    ("already_a_dict", {"city": "Oslo"}, {"city": "Oslo"}),
]


@pytest.mark.parametrize(
    ("arguments", "expected"), [c[1:] for c in TOOL_ARGUMENTS], ids=[c[0] for c in TOOL_ARGUMENTS]
)
def test_tool_arguments(arguments: object, expected: dict[str, Any]) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    translated = to_anthropic_response(answer(message, "tool_calls", (5, 2)), "claude-gw")
    assert translated["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": expected}
    ]
    sdk_message(translated)


def test_whole_answer() -> None:
    message = {
        "role": "assistant",
        "content": "Let me check.",
        "reasoning_content": "User wants weather.",
    } | {"tool_calls": [tool_call("call_1", "Oslo"), tool_call("call_2", "Rome")]}
    upstream = answer(message, "tool_calls", (30, 12)) | {
        "system_fingerprint": "fp_1",
        "model_output_metadata": {"reasoning": "r"},
    }
    translated = to_anthropic_response(upstream, "claude-gw")
    assert translated == {
        "id": "msg_gold1",
        "type": "message",
        "role": "assistant",
        "model": "claude-gw",
        "content": [
            {
                "type": "thinking",
                "thinking": "User wants weather.",
                "signature": "gateway-unsigned",
            },
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 12},
        "model_output_metadata": {"reasoning": "r"},
    }
    assert sdk_message(translated).content[3].input == {"city": "Rome"}  # type: ignore[union-attr]


ANSWER_SHAPES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "vllm_reasoning_key",
        {
            "id": "chatcmpl-1",
            "choices": [{"message": {"reasoning": "r", "content": "x"}, "finish_reason": "stop"}],
        },
        {
            "id": "msg_1",
            "content": [
                {"type": "thinking", "thinking": "r", "signature": "gateway-unsigned"},
                {"type": "text", "text": "x"},
            ],
        },
    ),
    (
        "empty_content",
        {"id": "cmpl-2", "choices": [{"message": {"content": ""}, "finish_reason": "length"}]},
        {"id": "msg_2", "content": []},
    ),
    (
        "foreign_id",
        {"id": "gen-77", "choices": [{"message": TEXT, "finish_reason": "stop"}]},
        {"id": "msg_gen-77", "content": [{"type": "text", "text": "Hello."}]},
    ),
    (
        "no_usage",
        {"id": "msg_3", "choices": [{"message": TEXT}]},
        {"id": "msg_3", "usage": {"input_tokens": 0, "output_tokens": 0}},
    ),
    (
        "no_choices",
        {"id": "chatcmpl-4", "choices": []},
        {"id": "msg_4", "content": [], "stop_reason": "end_turn"},
    ),
    (
        "call_without_id",
        {
            "id": "chatcmpl-5",
            "choices": [
                {"message": {"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}}
            ],
        },
        {"content": [{"type": "tool_use", "id": "toolu_5_0", "name": "f", "input": {}}]},
    ),
    (
        "legacy_function_call",
        {
            "id": "chatcmpl-6",
            "choices": [
                {
                    "message": {"function_call": {"name": "f", "arguments": '{"a":1}'}},
                    "finish_reason": "function_call",
                }
            ],
        },
        {
            "content": [{"type": "tool_use", "id": "toolu_6_0", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use",
        },
    ),
]


@pytest.mark.parametrize(
    ("upstream", "expected"), [c[1:] for c in ANSWER_SHAPES], ids=[c[0] for c in ANSWER_SHAPES]
)
def test_answer_shapes(upstream: dict[str, Any], expected: dict[str, Any]) -> None:
    translated = to_anthropic_response(upstream, "claude-gw")
    assert {key: translated[key] for key in expected} == expected
    sdk_message(translated)


def test_answer_without_id_gets_a_deterministic_one() -> None:
    upstream = {"choices": [{"message": TEXT, "finish_reason": "stop"}]}
    first, second = (to_anthropic_response(upstream, "m")["id"] for _ in range(2))
    other = to_anthropic_response({"choices": [{"message": CALLS}]}, "m")["id"]
    assert first == second != other
    assert first.startswith("msg_") and len(first) == 28


# --- events, model list, estimates ----------------------------------------------------------------


def test_event_helpers() -> None:
    assert ping() == ("ping", {"type": "ping"})
    assert error_event("overloaded_error", "Busy; retry.") == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Busy; retry."}},
    )
    assert encode_event(*error_event("api_error", "Ø")) == (
        b"event: error\n"
        + 'data: {"type":"error","error":{"type":"api_error","message":"Ø"}}\n\n'.encode()
    )


def test_models_list() -> None:
    listed = models_list([("mixtral", 1700000000), ("llama", 0)])
    assert listed == {
        "data": [
            {
                "type": "model",
                "id": "mixtral",
                "display_name": "mixtral",
                "created_at": "2023-11-14T22:13:20Z",
                "lifecycle": "active",
            },
            {
                "type": "model",
                "id": "llama",
                "display_name": "llama",
                "created_at": "1970-01-01T00:00:00Z",
                "lifecycle": "active",
            },
        ],
        "has_more": False,
        "first_id": "mixtral",
        "last_id": "llama",
    }
    assert [ModelInfo.model_validate(m).id for m in listed["data"]] == ["mixtral", "llama"]
    assert models_list([]) == {"data": [], "has_more": False, "first_id": None, "last_id": None}


ESTIMATES: list[tuple[str, dict[str, Any], int]] = [
    ("empty", {}, 3),
    ("openai_string", {"messages": [{"role": "user", "content": "x" * 40}]}, 3 + 4 + 10),
    (
        "openai_parts",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "x" * 40},
                        {"type": "image_url", "image_url": {"url": "data:" + "A" * 9000}},
                    ],
                }
            ]
        },
        3 + 4 + 10 + 1600,
    ),
    (
        "openai_tool_calls",
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f" * 3, "arguments": "a" * 5},
                        }
                    ],
                }
            ]
        },
        3 + 4 + 2,
    ),
    (
        "anthropic_system",
        {"system": [{"type": "text", "text": "s" * 8}], "messages": [USER_HI]},
        3 + 4 + 3,
    ),
    (
        "anthropic_tool_blocks",
        {
            "messages": [
                {"role": "assistant", "content": [tool_use("t", "Oslo")]},
                user(tool_result("t", "rain")),
            ]
        },
        3 + 8 + 5,
    ),
    (
        "tools_with_keys",
        {"tools": [{"name": "abcd", "input_schema": {"type": "object"}}]},
        3 + 8,
    ),  # 30 characters, keys included
]


@pytest.mark.parametrize(
    ("request_body", "expected"), [c[1:] for c in ESTIMATES], ids=[c[0] for c in ESTIMATES]
)
def test_estimate_tokens(request_body: dict[str, Any], expected: int) -> None:
    assert estimate_tokens(request_body) == expected


def test_estimate_survives_any_nesting() -> None:
    deep: list[Any] = ["xxxx"]
    for _ in range(100_000):
        deep = [deep]
    assert estimate_tokens({"messages": [{"role": "user", "content": deep}]}) == 3 + 4 + 1


# --- golden cases ---------------------------------------------------------------------------------

WEATHER_CHOICE_FORMS = {"tools": [WEATHER_TOOL, {**WEATHER_TOOL, "name": "get_time"}]}
EPHEMERAL = {"type": "ephemeral"}
READ_TOOL = {
    "name": "Read",
    "description": "Reads a file.",
    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
}
GOLDEN: dict[str, tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]] = {
    "text_system_string": (
        body(
            system="You are terse.",
            temperature=0.2,
            top_p=0.9,
            metadata={"user_id": "u-42"},
            stream=True,
        ),
        answer({"role": "assistant", "content": "Hi there!"}, "stop", (12, 3)),
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hi"}),
            chunk({"content": " there!"}),
            chunk({}, "stop"),
            usage_chunk(12, 3),
        ],
    ),
    "system_blocks_images": (
        body(
            system=[
                {"type": "text", "text": "You describe images."},
                {"type": "text", "text": "Be exact."},
            ],
            messages=[
                user(
                    {"type": "text", "text": "Compare:"},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/jpeg",
                            "data": "/9j/4AAQ",
                        },
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://img.test/b.png"}},
                )
            ],
        ),
        answer({"role": "assistant", "content": "Both are cats."}, "stop", (900, 5)),
        [
            chunk({"role": "assistant"}),
            chunk({"content": "Both are cats."}),
            chunk({}, "stop"),
            usage_chunk(900, 5),
        ],
    ),
    "tool_use_after_text": (
        body(tools=[WEATHER_TOOL], tool_choice={"type": "auto"}, stream=True),
        answer(
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [tool_call("call_a1", "Oslo")],
            },
            "tool_calls",
            (80, 20),
        ),
        [
            chunk({"role": "assistant", "content": "Check"}),
            chunk({"content": "ing."}),
            chunk(fragment(0, "", "call_a1", "get_weather")),
            chunk(fragment(0, '{"city"')),
            chunk(fragment(0, ':"Oslo"}')),
            chunk({}, "tool_calls"),
            usage_chunk(80, 20),
        ],
    ),
    "parallel_tool_calls_interleaved": (
        body(**WEATHER_CHOICE_FORMS, tool_choice={"type": "any"}),
        answer(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    tool_call("call_o", "Oslo"),
                    tool_call("call_r", "Rome"),
                    {
                        **tool_call("call_t", "Rome"),
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            },
            "tool_calls",
            (95, 40),
        ),
        [
            chunk(fragment(0, '{"ci', "call_o", "get_weather")),
            chunk(fragment(1, '{"city":', "call_r", "get_weather")),
            chunk(fragment(0, 'ty":"Os')),
            chunk(fragment(2, "{}", "call_t", "get_time")),
            chunk(fragment(1, '"Rome"}')),
            chunk(fragment(0, 'lo"}')),
            chunk({}, "tool_calls"),
            usage_chunk(95, 40),
        ],
    ),
    "tool_result_round_trip": (
        body(
            **WEATHER_CHOICE_FORMS,
            messages=ROUND_TRIP,
            tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
        ),
        answer({"role": "assistant", "content": "Rome is warmer."}, "stop", (150, 6)),
        [chunk({"role": "assistant", "content": "Rome is warmer."}, "stop"), usage_chunk(150, 6)],
    ),
    "max_tokens_stop": (
        body(
            max_tokens=4,
            stop_sequences=["###"],
            tool_choice={"type": "none"},
            **WEATHER_CHOICE_FORMS,
        ),
        answer({"role": "assistant", "content": "Once upon a"}, "length", (9, 4)),
        [
            chunk({"content": "Once"}),
            chunk({"content": " upon a"}),
            chunk({}, "length"),
            usage_chunk(9, 4),
        ],
    ),
    "stop_sequence_vllm": (
        body(stop_sequences=["END", "###"], stream=True),
        answer({"role": "assistant", "content": "Done"}, "stop", (9, 2), stop_reason="END"),
        [chunk({"content": "Done"}), chunk({}, "stop", stop_reason="END"), usage_chunk(9, 2)],
    ),
    "reasoning_content": (
        body(
            thinking={"type": "enabled", "budget_tokens": 512},
            region="oslo",
            agent_id="agent-7",
            top_k=20,
        ),
        answer(
            {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4."}, "stop", (15, 9)
        ),
        [
            chunk({"role": "assistant", "reasoning_content": "2+2"}),
            chunk({"reasoning_content": " is 4."}),
            chunk({"content": "4"}),
            chunk({}, "stop"),
            usage_chunk(15, 9),
        ],
    ),
    # What Claude Code sends (a second turn, cut short): a system turn between the others,
    # adaptive thinking with an effort, context management and cache marks, its session in
    # metadata.user_id, a deferred tool; the worker thinks, then calls a tool.
    "claude_code_turn": (
        body(
            max_tokens=32000,
            system=[
                {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332;"},
                {"type": "text", "text": "You are Claude Code.", "cache_control": EPHEMERAL},
            ],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Read notes.txt"}]},
                {"role": "system", "content": [{"type": "text", "text": "# Environment\ncwd: /w"}]},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "thinking",
                            "thinking": "Read it.",
                            "signature": "gateway-unsigned",
                        },
                        {
                            "type": "tool_use",
                            "id": "call_r1",
                            "name": "Read",
                            "input": {"file_path": "/w/notes.txt"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_r1",
                            "content": "1\tthe code is 7",
                            "cache_control": EPHEMERAL,
                        }
                    ],
                },
            ],
            tools=[
                {**READ_TOOL, "cache_control": EPHEMERAL},
                {**READ_TOOL, "name": "DeferredToolPlaceholder", "defer_loading": True},
            ],
            metadata={"user_id": '{"device_id":"d1","account_uuid":"","session_id":"s-1"}'},
            thinking={"type": "adaptive", "display": "omitted"},
            context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            output_config={"effort": "high"},
            stream=True,
        ),
        answer(
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "The code is 7; check the other file.",
                "tool_calls": [
                    {**tool_call("call_r2", "x"), "function": {"name": "Read", "arguments": "{}"}}
                ],
            },
            "tool_calls",
            (420, 31),
        ),
        [
            chunk({"role": "assistant", "reasoning_content": "The code is 7;"}),
            chunk({"reasoning_content": " check the other file."}),
            chunk(fragment(0, "{}", "call_r2", "Read")),
            chunk({}, "tool_calls"),
            usage_chunk(420, 31),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden(name: str) -> None:
    request, upstream_answer, upstream_stream = GOLDEN[name]
    translated = to_anthropic_response(upstream_answer, request["model"])
    events = translate_stream(upstream_stream, request["model"])
    check(
        name,
        {
            "anthropic_request": request,
            "openai_request": to_openai_request(request, UPSTREAM),
            "openai_answer": upstream_answer,
            "anthropic_answer": translated,
            "openai_stream": upstream_stream,
            "anthropic_stream": events,
        },
    )
    assert_strict_stream(events)
    assert sdk_stream(events).model_dump() == sdk_message(translated).model_dump()
