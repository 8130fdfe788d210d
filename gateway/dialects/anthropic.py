"""The Anthropic Messages dialect: telling an Anthropic body from an OpenAI one, translating a
Messages request into the OpenAI chat request the upstream gets, estimating a request's tokens, and
the Anthropic model list. Pure: dict in, dict out. The answer side (whole answers and stream
events) lives in ``anthropic_stream`` and is re-exported here, so callers import this module only.

Choices the Anthropic contract leaves open, made here:

- Text-only content becomes a plain string (several text blocks joined by a newline), which every
  OpenAI-compatible server accepts; content with images becomes a list of content parts.
- ``thinking`` and ``redacted_thinking`` blocks of earlier assistant turns are dropped: an OpenAI
  upstream has no place for them. ``cache_control`` and a tool result's ``is_error`` are dropped.
- ``tool_result`` blocks become ``role: tool`` messages placed before the rest of their user
  message; their content is a string or text blocks joined by a newline.
- ``metadata.user_id`` becomes ``user``; the rest of ``metadata`` is dropped.
- Top-level fields this translation does not consume (``thinking``, ``top_k``, ``region``,
  ``agent_id``, vendor extensions) are forwarded as they are.
- Validation names the offending field path in ``param`` and at the start of the message.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from reprlib import repr as _brief  # a bounded repr: a client's value may nest 1,024 deep
from typing import Any

from gateway.dialects.anthropic_stream import (
    TEXT_DELTA_END,
    StreamTranslator,
    Usage,
    encode_event,
    encode_events,
    error_event,
    ping,
    plain_text,
    to_anthropic_response,
)
from gateway.errors import BadRequest

__all__ = [
    "TEXT_DELTA_END",
    "StreamTranslator",
    "Usage",
    "encode_event",
    "encode_events",
    "error_event",
    "estimate_tokens",
    "is_anthropic",
    "models_list",
    "ping",
    "plain_text",
    "to_anthropic_response",
    "to_openai_request",
]

_TOOL_BLOCKS = ("tool_use", "tool_result")
_BLOCKS = {
    "user": ("text", "image", "tool_result"),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
}
_ALL_BLOCKS = (*_BLOCKS["user"], *_BLOCKS["assistant"])
_OPENAI_FORMS = {
    "system": "'system' is an OpenAI role; put the system prompt in the top-level 'system' field.",
    "developer": "'developer' is an OpenAI role; put the instructions in the top-level 'system'"
    " field.",
    "tool": "'tool' is an OpenAI role; send tool results as tool_result blocks in a user message.",
    "tool_calls": "OpenAI's form of tool calls; send tool_use blocks in the assistant message's"
    " content instead.",
    "tool_call_id": "OpenAI's form of a tool result; send a tool_result block with 'tool_use_id'"
    " in a user message instead.",
}
_CONSUMED = frozenset(
    {"model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p"}
    | {"stream", "metadata", "tools", "tool_choice"}
)
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}

# estimate_tokens: about 4 characters a token for English text and JSON, a few tokens of chat
# template per message and per request, and an image at Anthropic's ceiling for a full-size image
# (the estimate feeds token reservations, where erring high is the safe side).
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_REQUEST = 3
_TOKENS_PER_IMAGE = 1600
_IMAGE_TYPES = ("image", "image_url", "input_image")
_UNCOUNTED = frozenset(
    {"role", "type", "id", "tool_use_id", "tool_call_id", "cache_control", "signature"}
)


def is_anthropic(path: str, has_anthropic_version: bool, body: object) -> bool:
    """Whether a chat request speaks Anthropic Messages (otherwise OpenAI chat)."""
    if has_anthropic_version or path.rstrip("/").endswith("/messages"):
        return True
    if not isinstance(body, dict):
        return False
    if "system" in body:
        return True
    tools = body.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "input_schema" in t for t in tools):
        return True
    messages = body.get("messages")
    return isinstance(messages, list) and any(_has_anthropic_block(m) for m in messages)


def _has_anthropic_block(message: object) -> bool:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return False  # string content: the common OpenAI case, decided without a scan
    return any(
        isinstance(block, dict)
        and (
            block.get("type") in _TOOL_BLOCKS
            or (block.get("type") == "image" and "source" in block)
        )
        for block in content
    )


def to_openai_request(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """An Anthropic Messages request as the OpenAI chat request for the upstream."""
    plain = _plain_request(body, upstream_model)
    return plain if plain is not None else _translated_request(body, upstream_model)


# The fields of the commonest request: a conversation of string messages, a string system prompt
# at most, sampling settings, streamed or not; nothing else to validate or carry.
_PLAIN_FIELDS = frozenset(
    ("model", "messages", "max_tokens", "system", "stream", "temperature", "top_p")
)


def _plain_request(body: dict[str, Any], upstream_model: str) -> dict[str, Any] | None:
    """``_translated_request``'s result for the commonest request, in one pass with no call per
    message (the whole translation costs more than the rest of the request's own Python on a
    cold cache); None for anything else, which takes the general path and its diagnostics.
    The property tests hold the two paths to the same output."""
    limit, system, stream = body.get("max_tokens"), body.get("system"), body.get("stream")
    if (
        type(limit) is not int
        or limit < 1
        or not (system is None or type(system) is str)
        or not (stream is None or type(stream) is bool)
        or not _PLAIN_FIELDS.issuperset(body)
    ):
        return None
    messages = body.get("messages")
    if type(messages) is not list or not messages:
        return None
    out_messages = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role, content = message.get("role"), message.get("content")
        if (role != "user" and role != "assistant") or type(content) is not str or not content:
            return None
        out_messages.append({"role": role, "content": content})
    out: dict[str, Any] = {"model": upstream_model, "max_tokens": limit, "messages": out_messages}
    if "temperature" in body:
        out["temperature"] = body["temperature"]
    if "top_p" in body:
        out["top_p"] = body["top_p"]
    if stream is not None:
        out["stream"] = stream
        if stream:
            out["stream_options"] = {"include_usage": True}
    return out


def _translated_request(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    out: dict[str, Any] = {"model": upstream_model, "max_tokens": _max_tokens(body)}
    out["messages"] = _system(body.get("system")) + _messages(body.get("messages"))
    out.update(_sampling(body))
    out.update(_tooling(body))
    out.update(_streaming(body.get("stream")))
    for key, value in body.items():
        if key not in _CONSUMED:
            out.setdefault(key, value)
    return out


def _bad(param: str, problem: str) -> BadRequest:
    return BadRequest(f"{param}: {problem}", param=param)


def _max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_tokens")
    if value is None:
        raise _bad(
            "max_tokens",
            "required in an Anthropic Messages request; send the most tokens to generate,"
            ' e.g. "max_tokens": 1024.',
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad("max_tokens", f"must be a positive integer, e.g. 1024 (got {_brief(value)}).")
    return value


def _system(value: object) -> list[dict[str, Any]]:
    text = _joined_text(value, "system") if value is not None else ""
    return [{"role": "system", "content": text}] if text else []


def _joined_text(value: object, path: str) -> str:
    """A string, or a list of text blocks joined by newlines."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _bad(path, "must be a string or a list of text blocks.")
    return "\n".join(_text_of(block, f"{path}[{k}]") for k, block in enumerate(value))


def _text_of(block: object, path: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise _bad(
            f"{path}.type", 'only text blocks are allowed here: {"type": "text", "text": ...}.'
        )
    text = block.get("text")
    if not isinstance(text, str):
        raise _bad(f"{path}.text", "must be a string.")
    return text


def _messages(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        problem = "required; send" if value is None else "must be"
        raise _bad("messages", f'{problem} a non-empty list of {{"role", "content"}} messages.')
    issued: set[str] = set()  # tool_use ids of earlier assistant turns
    out: list[dict[str, Any]] = []
    for i, message in enumerate(value):
        out.extend(_message(message, f"messages[{i}]", issued))
    return out


def _message(message: object, path: str, issued: set[str]) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise _bad(path, "must be an object with 'role' and 'content'.")
    role = _role(message, path)
    content = message.get("content")
    if not isinstance(content, str | list):
        raise _bad(f"{path}.content", "must be a string or a list of content blocks.")
    if not content:
        raise _bad(f"{path}.content", "is empty; send a non-empty string or at least one block.")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "user":
        return _user_messages(content, path, issued)
    return _assistant_messages(content, path, issued)


def _role(message: dict[str, Any], path: str) -> str:
    role = message.get("role")
    if isinstance(role, str) and role in _OPENAI_FORMS:
        raise _bad(f"{path}.role", _OPENAI_FORMS[role])
    for key in ("tool_calls", "tool_call_id"):
        if key in message:
            raise _bad(f"{path}.{key}", _OPENAI_FORMS[key])
    if not isinstance(role, str) or role not in _BLOCKS:
        raise _bad(f"{path}.role", f"must be 'user' or 'assistant' (got {_brief(role)}).")
    return str(role)


def _block_type(block: object, path: str, role: str) -> str:
    if not isinstance(block, dict):
        raise _bad(path, "must be a content block object with a 'type'.")
    kind = block.get("type")
    if not isinstance(kind, str) or kind not in _ALL_BLOCKS:
        what = f"unknown content block type {_brief(kind)}" if "type" in block else "missing"
        raise _bad(f"{path}.type", f"{what}; use text, image, tool_use or tool_result.")
    if kind not in _BLOCKS[role]:
        other = "a user" if role == "assistant" else "an assistant"
        raise _bad(f"{path}.type", f"{kind} blocks belong in {other} message.")
    return kind


def _user_messages(blocks: list[Any], path: str, issued: set[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"{path}.content[{j}]"
        kind = _block_type(block, where, "user")
        if kind == "tool_result":
            results.append(_tool_message(block, where, issued))
        elif kind == "text":
            parts.append({"type": "text", "text": _text_of(block, where)})
        else:
            parts.append(_image_part(block, where))
    if parts:
        texts = [part["text"] for part in parts if part["type"] == "text"]
        content = "\n".join(texts) if len(texts) == len(parts) else parts
        results.append({"role": "user", "content": content})
    return results


def _tool_message(block: dict[str, Any], path: str, issued: set[str]) -> dict[str, Any]:
    tool_id = block.get("tool_use_id")
    if not isinstance(tool_id, str) or tool_id not in issued:
        raise _bad(
            f"{path}.tool_use_id",
            f"{_brief(tool_id)} is not the id of a tool_use block in an earlier assistant message;"
            " answer only tool calls the conversation made, with their ids as they were.",
        )
    content = block.get("content")
    text = _joined_text(content if content is not None else "", f"{path}.content")
    return {"role": "tool", "tool_call_id": tool_id, "content": text}


def _image_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if not isinstance(source, dict) or kind not in ("base64", "url"):
        raise _bad(
            f"{path}.source",
            'must be {"type": "base64", "media_type", "data"} or {"type": "url", "url"}.',
        )
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise _bad(f"{path}.source.url", "must be the image's URL.")
        return {"type": "image_url", "image_url": {"url": url}}
    media, data = source.get("media_type"), source.get("data")
    if not isinstance(media, str) or not isinstance(data, str) or not data:
        raise _bad(f"{path}.source", "a base64 image needs 'media_type' and 'data' strings.")
    return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}


def _assistant_messages(blocks: list[Any], path: str, issued: set[str]) -> list[dict[str, Any]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"{path}.content[{j}]"
        kind = _block_type(block, where, "assistant")
        if kind == "text":
            texts.append(_text_of(block, where))
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
    if not texts and not calls:
        return []  # only thinking blocks: nothing the upstream can take
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
        issued.update(call["id"] for call in calls)
    return [message]


def _tool_call(block: dict[str, Any], path: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{path}.id", "must be a non-empty string: the id its tool_result answers.")
    if not isinstance(name, str) or not name:
        raise _bad(f"{path}.name", "must be the name of the tool called.")
    if not isinstance(arguments, dict):
        raise _bad(f"{path}.input", "must be an object holding the tool's arguments.")
    try:
        encoded = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        raise _bad(f"{path}.input", "is nested too deeply.") from None
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": encoded}}


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {key: body[key] for key in ("temperature", "top_p") if key in body}
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences", "must be a list of strings.")
        if stops:
            out["stop"] = stops
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("metadata", 'must be an object, e.g. {"user_id": "..."}.')
    if metadata and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out


def _tooling(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools", 'must be a list of {"name", "description", "input_schema"} tools.')
        if tools:  # OpenAI refuses an empty list
            out["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is not None:
        out.update(_tool_choice(choice))
    return out


def _tool(tool: object, path: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise _bad(path, "must be an object with 'name' and 'input_schema'.")
    if tool.get("type") == "function" or "function" in tool:
        raise _bad(
            path,
            "an OpenAI-style function tool in an Anthropic request;"
            ' send {"name", "description", "input_schema"} instead.',
        )
    kind, name, schema = tool.get("type"), tool.get("name"), tool.get("input_schema")
    if kind not in (None, "custom"):
        what = _brief(kind)
        raise _bad(f"{path}.type", f"{what} tools are not available here; define a custom tool.")
    if not isinstance(name, str) or not name:
        raise _bad(f"{path}.name", "must be the tool's name.")
    if not isinstance(schema, dict):
        raise _bad(f"{path}.input_schema", 'must be a JSON Schema object: {"type": "object", ...}.')
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: object) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(kind, str):
        raise _bad("tool_choice", 'must be an object: {"type": "auto" | "any" | "tool" | "none"}.')
    out: dict[str, Any] = {}
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("tool_choice.name", "must name the tool the model has to call.")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    else:
        raise _bad("tool_choice.type", f"must be auto, any, tool or none (got {_brief(kind)}).")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


def _streaming(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, bool):
        raise _bad("stream", "must be true or false.")
    if not value:
        return {"stream": False}
    return {"stream": True, "stream_options": {"include_usage": True}}


def models_list(models: list[tuple[str, int]]) -> dict[str, Any]:
    """The Anthropic model list of ``(id, created epoch seconds)`` pairs, one page."""
    data = [
        {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lifecycle": "active",  # required by the anthropic SDK's ModelInfo since 2.x
        }
        for model_id, created in models
    ]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"data": data, "has_more": False, "first_id": first, "last_id": last}


def estimate_tokens(body: dict[str, Any]) -> int:
    """A cheap estimate of a request's prompt tokens, Anthropic or OpenAI body.

    About a token per 4 characters of every text (system, messages, tool calls and results, tool
    definitions with their schemas' keys), plus a few per message and request, and a flat count per
    image (see the constants above).
    """
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    chars, images = _measure([body.get("system"), messages], keys=False)
    chars += _measure(body.get("tools"), keys=True)[0]
    tokens = -(-chars // _CHARS_PER_TOKEN)
    return (
        _TOKENS_PER_REQUEST
        + _TOKENS_PER_MESSAGE * len(messages)
        + tokens
        + _TOKENS_PER_IMAGE * images
    )


def _measure(value: object, keys: bool) -> tuple[int, int]:
    """Characters and images in a JSON value; iterative, so no nesting depth can break it."""
    chars = images = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if not keys and item.get("type") in _IMAGE_TYPES:
                images += 1
                continue
            for key, child in item.items():
                if keys:
                    chars += len(key)
                elif key in _UNCOUNTED:
                    continue
                stack.append(child)
    return chars, images
