"""The ``messages`` of an Anthropic Messages request as the OpenAI chat messages the upstream gets:
roles, content blocks, tool calls and results, images, and system turns between the others. Pure.

Choices the Anthropic contract leaves open, made here:

- Text-only content becomes a plain string (several text blocks joined by a newline), which every
  OpenAI-compatible server accepts; content with images becomes a list of content parts.
- ``thinking`` and ``redacted_thinking`` blocks of earlier assistant turns are dropped: an OpenAI
  upstream has no place for them. ``cache_control``, ``citations`` and a tool result's
  ``is_error`` are dropped.
- ``tool_result`` blocks become ``role: tool`` messages placed before the rest of their user
  message. Their text (a string, or text blocks joined by a newline) is the tool message; their
  images follow in the user message (a tool message holds text only); a ``tool_reference`` block
  (a deferred tool loaded by tool search) reads ``Tool loaded: <name>``.
- A ``role: "system"`` message between the turns (Claude Code sends them) is folded into the
  user turn before it (appended), or, when an assistant turn or nothing comes before it, into
  the user turn after it (prepended), wrapped in ``<system-reminder>`` tags; with no user turn
  on either side it becomes a user message of its own. Many chat templates (Mistral, Gemma,
  Llama 2) refuse a system message past the first, or turns out of user/assistant order, and
  the conversation's earlier turns stay byte for byte the same as it grows (the worker's prefix
  cache holds).
- Claude Code's ``x-anthropic-billing-header: …`` text block of ``system`` (metadata the Anthropic
  API reads, and which changes with the client's version) is dropped.
- A ``document`` block of plain text (``source.type`` ``text`` or ``content``) becomes its text;
  a PDF (base64 or URL) is refused: the worker reads text and images only.
- Validation names the offending field path in ``param`` and at the start of the message.
"""

from __future__ import annotations

import json
from reprlib import repr as brief  # a bounded repr: a client's value may nest 1,024 deep
from typing import Any

from gateway.errors import BadRequest

_TOOL_BLOCKS = ("tool_use", "tool_result")
_BLOCKS = {
    "user": ("text", "image", "tool_result", "document"),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
}
_ALL_BLOCKS = (*_BLOCKS["user"], *_BLOCKS["assistant"])
_RESULT_BLOCKS = ("text", "image", "tool_reference", "document")
_OPENAI_FORMS = {
    "developer": "'developer' is an OpenAI role; put the instructions in the top-level 'system'"
    " field.",
    "tool": "'tool' is an OpenAI role; send tool results as tool_result blocks in a user message.",
    "tool_calls": "OpenAI's form of tool calls; send tool_use blocks in the assistant message's"
    " content instead.",
    "tool_call_id": "OpenAI's form of a tool result; send a tool_result block with 'tool_use_id'"
    " in a user message instead.",
}
_IMAGE_NOTE = "[image attached below]"
_BILLING = "x-anthropic-billing-header:"
Message = dict[str, Any]


def bad(param: str, problem: str) -> BadRequest:
    return BadRequest(f"{param}: {problem}", param=param)


def has_anthropic_block(message: object) -> bool:
    """Whether a message holds a block only the Anthropic dialect has."""
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


def system_messages(value: object) -> list[Message]:
    """The top-level ``system`` prompt as the leading system message (none when empty)."""
    if isinstance(value, list) and any(_is_billing(block) for block in value):
        value = [block for block in value if not _is_billing(block)]
    text = joined_text(value, "system") if value is not None else ""
    return [{"role": "system", "content": text}] if text else []


def _is_billing(block: object) -> bool:
    """Claude Code's billing line, a text block the Anthropic API reads as a header."""
    text = block.get("text") if isinstance(block, dict) else None
    return isinstance(text, str) and text.startswith(_BILLING)


def joined_text(value: object, path: str) -> str:
    """A string, or a list of text blocks joined by newlines."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise bad(path, "must be a string or a list of text blocks.")
    return "\n".join(_text_of(block, f"{path}[{k}]") for k, block in enumerate(value))


def _text_of(block: object, path: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise bad(
            f"{path}.type", 'only text blocks are allowed here: {"type": "text", "text": ...}.'
        )
    text = block.get("text")
    if not isinstance(text, str):
        raise bad(f"{path}.text", "must be a string.")
    return text


class _Conversation:
    """The OpenAI messages so far, and system text waiting for the next user turn."""

    __slots__ = ("issued", "out", "pending", "user_last")

    def __init__(self) -> None:
        self.out: list[Message] = []
        self.pending: list[str] = []  # system notes that come before their user turn
        self.user_last = False  # whether the last turn (system turns aside) was the user's
        self.issued: set[str] = set()  # tool_use ids of earlier assistant turns

    def system(self, note: str) -> None:
        if not self.user_last:
            self.pending.append(note)
        elif self.out[-1]["role"] == "user":
            self.out[-1]["content"] = _with_note(self.out[-1]["content"], note, after=True)
        else:  # the user turn held only tool results
            self.out.append({"role": "user", "content": note})

    def user(self, messages: list[Message]) -> None:
        if self.pending:
            note = "\n\n".join(self.pending)
            self.pending = []
            if messages and messages[-1]["role"] == "user":
                messages[-1]["content"] = _with_note(messages[-1]["content"], note, after=False)
            else:
                messages.append({"role": "user", "content": note})
        self.out.extend(messages)
        self.user_last = True

    def assistant(self, messages: list[Message]) -> None:
        self.flush()
        self.out.extend(messages)
        self.user_last = False

    def flush(self) -> None:
        if self.pending:
            self.out.append({"role": "user", "content": "\n\n".join(self.pending)})
            self.pending = []


def _with_note(content: object, note: str, after: bool) -> object:
    if isinstance(content, str):
        return f"{content}\n\n{note}" if after else f"{note}\n\n{content}"
    parts = content if isinstance(content, list) else []
    part = {"type": "text", "text": note}
    return [*parts, part] if after else [part, *parts]


def openai_messages(value: object) -> list[Message]:
    """The conversation as OpenAI chat messages (after the leading system message)."""
    if not isinstance(value, list) or not value:
        problem = "required; send" if value is None else "must be"
        raise bad("messages", f'{problem} a non-empty list of {{"role", "content"}} messages.')
    talk = _Conversation()
    for i, message in enumerate(value):
        _message(message, f"messages[{i}]", talk)
    talk.flush()
    return talk.out


def _message(message: object, path: str, talk: _Conversation) -> None:
    if not isinstance(message, dict):
        raise bad(path, "must be an object with 'role' and 'content'.")
    role = _role(message, path)
    content = message.get("content")
    if not isinstance(content, str | list):
        raise bad(f"{path}.content", "must be a string or a list of content blocks.")
    if not content:
        raise bad(f"{path}.content", "is empty; send a non-empty string or at least one block.")
    if role == "system":
        talk.system(
            f"<system-reminder>\n{joined_text(content, f'{path}.content')}\n</system-reminder>"
        )
    elif isinstance(content, str):
        (talk.user if role == "user" else talk.assistant)([{"role": role, "content": content}])
    elif role == "user":
        talk.user(_user_messages(content, path, talk.issued))
    else:
        talk.assistant(_assistant_messages(content, path, talk.issued))


def _role(message: dict[str, Any], path: str) -> str:
    role = message.get("role")
    if isinstance(role, str) and role in _OPENAI_FORMS:
        raise bad(f"{path}.role", _OPENAI_FORMS[role])
    for key in ("tool_calls", "tool_call_id"):
        if key in message:
            raise bad(f"{path}.{key}", _OPENAI_FORMS[key])
    if not isinstance(role, str) or (role not in _BLOCKS and role != "system"):
        raise bad(f"{path}.role", f"must be 'user', 'assistant' or 'system' (got {brief(role)}).")
    return str(role)


def _block_type(block: object, path: str, role: str) -> str:
    if not isinstance(block, dict):
        raise bad(path, "must be a content block object with a 'type'.")
    kind = block.get("type")
    if not isinstance(kind, str) or kind not in _ALL_BLOCKS:
        what = f"unknown content block type {brief(kind)}" if "type" in block else "missing"
        raise bad(f"{path}.type", f"{what}; use text, image, tool_use or tool_result.")
    if kind not in _BLOCKS[role]:
        other = "a user" if role == "assistant" else "an assistant"
        raise bad(f"{path}.type", f"{kind} blocks belong in {other} message.")
    return kind


def _user_messages(blocks: list[Any], path: str, issued: set[str]) -> list[Message]:
    results: list[Message] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"{path}.content[{j}]"
        kind = _block_type(block, where, "user")
        if kind == "tool_result":
            results.append(_tool_message(block, where, issued, parts))
        elif kind == "text":
            parts.append({"type": "text", "text": _text_of(block, where)})
        elif kind == "document":
            parts.append({"type": "text", "text": _document_text(block, where)})
        else:
            parts.append(_image_part(block, where))
    if parts:
        texts = [part["text"] for part in parts if part["type"] == "text"]
        content = "\n".join(texts) if len(texts) == len(parts) else parts
        results.append({"role": "user", "content": content})
    return results


def _tool_message(
    block: dict[str, Any], path: str, issued: set[str], parts: list[dict[str, Any]]
) -> Message:
    """The tool message of a ``tool_result``; its images go to ``parts`` (the user message)."""
    tool_id = block.get("tool_use_id")
    if not isinstance(tool_id, str) or tool_id not in issued:
        raise bad(
            f"{path}.tool_use_id",
            f"{brief(tool_id)} is not the id of a tool_use block in an earlier assistant message;"
            " answer only tool calls the conversation made, with their ids as they were.",
        )
    content = block.get("content")
    if content is None or isinstance(content, str):
        return {"role": "tool", "tool_call_id": tool_id, "content": content or ""}
    if not isinstance(content, list):
        raise bad(f"{path}.content", "must be a string or a list of content blocks.")
    texts: list[str] = []
    for k, item in enumerate(content):
        where = f"{path}.content[{k}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(item, dict) or kind not in _RESULT_BLOCKS:
            raise bad(f"{where}.type", "a tool result holds text, image and tool_reference blocks.")
        if kind == "text":
            texts.append(_text_of(item, where))
        elif kind == "document":
            texts.append(_document_text(item, where))
        elif kind == "tool_reference":
            texts.append(f"Tool loaded: {_tool_reference(item, where)}")
        else:
            parts.append(_image_part(item, where))
            texts.append(_IMAGE_NOTE)
    return {"role": "tool", "tool_call_id": tool_id, "content": "\n".join(texts)}


def _tool_reference(block: dict[str, Any], path: str) -> str:
    name = block.get("tool_name")
    if not isinstance(name, str) or not name:
        raise bad(f"{path}.tool_name", "must name the tool loaded.")
    return name


def _document_text(block: dict[str, Any], path: str) -> str:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if isinstance(source, dict) and kind == "text" and isinstance(source.get("data"), str):
        return str(source["data"])
    if isinstance(source, dict) and kind == "content":
        return joined_text(source.get("content"), f"{path}.source.content")
    raise bad(
        f"{path}.source",
        "only plain-text documents reach the worker"
        ' ({"type": "text", "media_type": "text/plain", "data": ...}); send a PDF\'s text.',
    )


def _image_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if not isinstance(source, dict) or kind not in ("base64", "url"):
        raise bad(
            f"{path}.source",
            'must be {"type": "base64", "media_type", "data"} or {"type": "url", "url"}.',
        )
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise bad(f"{path}.source.url", "must be the image's URL.")
        return {"type": "image_url", "image_url": {"url": url}}
    media, data = source.get("media_type"), source.get("data")
    if not isinstance(media, str) or not isinstance(data, str) or not data:
        raise bad(f"{path}.source", "a base64 image needs 'media_type' and 'data' strings.")
    return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}


def _assistant_messages(blocks: list[Any], path: str, issued: set[str]) -> list[Message]:
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
    message: Message = {"role": "assistant", "content": "\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
        issued.update(call["id"] for call in calls)
    return [message]


def _tool_call(block: dict[str, Any], path: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise bad(f"{path}.id", "must be a non-empty string: the id its tool_result answers.")
    if not isinstance(name, str) or not name:
        raise bad(f"{path}.name", "must be the name of the tool called.")
    if not isinstance(arguments, dict):
        raise bad(f"{path}.input", "must be an object holding the tool's arguments.")
    try:
        encoded = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        raise bad(f"{path}.input", "is nested too deeply.") from None
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": encoded}}
