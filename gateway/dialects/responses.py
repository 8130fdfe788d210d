"""The OpenAI Responses API, request side: checking a ``POST /v1/responses`` body and turning it
(with the stored conversation it continues) into an OpenAI chat request any worker takes. Pure.

- ``input``: a string (one user message) or items: messages (roles ``user``, ``assistant``,
  ``system``, ``developer``; ``input_text``/``output_text``/``refusal``/``input_image`` parts),
  ``function_call`` (assistant ``tool_calls``, consecutive calls in one message) and
  ``function_call_output`` (``role: tool``). ``reasoning`` items (and the calls of hosted tools
  the worker never ran) are dropped: a chat worker takes no reasoning back.
- ``instructions``, ``system`` and ``developer`` messages reach the worker as ``system``
  messages; those that open the conversation are joined into one (many chat templates take a
  single leading system message).
- ``tools``: ``function`` tools flattened Responses-style → chat's nested shape; a ``namespace``
  tool's functions become ``<namespace>__<name>`` (the flat name is mapped back in the answer);
  any other tool (``web_search``, ``file_search``, ``custom``, …) cannot run on a chat worker:
  dropped (and named) or refused, as ``responses.hosted_tools`` says.
- ``max_output_tokens`` → ``max_tokens``, ``reasoning.effort`` → ``reasoning_effort``,
  ``text.format`` → ``response_format``; ``temperature``, ``top_p``, ``tool_choice``,
  ``parallel_tool_calls``, ``user``, ``prompt_cache_key``, ``stream`` as they are. Fields of the
  Responses API with no chat meaning (``store``, ``include``, ``metadata``, ``truncation``, …)
  stay here; any other field (a vendor's ``top_k``, the gateway's ``region``) is forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.dialects import MAX_DEPTH, within_depth
from gateway.dialects.responses_tools import Tools, flat_name, tools_of
from gateway.errors import BadRequest, shown

# Fields of a Responses request this translation reads or deliberately leaves behind.
KNOWN = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
        "max_output_tokens", "temperature", "top_p", "reasoning", "text", "stream", "store",
        "metadata", "previous_response_id", "prompt_cache_key", "include", "user",
        "truncation", "service_tier", "background", "max_tool_calls", "top_logprobs",
        "safety_identifier", "client_metadata", "stream_options", "prompt_cache_retention",
        "conversation", "prompt",
    }
)  # fmt: skip
UNSUPPORTED = ("background", "conversation", "prompt")  # need server state the gateway lacks
DROPPED_ITEMS = frozenset(
    {
        "reasoning", "web_search_call", "file_search_call", "image_generation_call",
        "code_interpreter_call", "computer_call", "computer_call_output", "mcp_list_tools",
        "compaction", "local_shell_call", "local_shell_call_output",
    }
)  # fmt: skip
# The fields of the commonest request, translated in one step when its input is a string.
PLAIN = frozenset(
    {"model", "input", "instructions", "max_output_tokens", "stream", "store", "temperature",
     "top_p", "metadata", "include", "parallel_tool_calls"}
)  # fmt: skip
ECHO_DEPTH = MAX_DEPTH - 8  # an echoed field sits at most this much deeper in an event
# The type each field must have when sent (not null); ``object``: any (checked elsewhere).
FIELDS: dict[str, type] = {
    "stream": bool, "store": bool, "parallel_tool_calls": bool, "instructions": str,
    "previous_response_id": str, "user": str, "prompt_cache_key": str, "temperature": float,
    "top_p": float, "metadata": dict, "reasoning": dict, "text": dict,
    "background": object, "conversation": object, "prompt": object,
}  # fmt: skip
PROBLEMS = {
    bool: "must be true or false.",
    str: "must be a string.",
    float: "must be a number.",
    dict: "must be an object.",
}
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})


# Never changed once made; not frozen, as a frozen dataclass's __init__ costs a microsecond
# more, once per request.
@dataclass(slots=True, eq=False)
class Translated:
    """A Responses request as chat: the chat body, how flat tool names map back to namespaced
    ones, the tools dropped (named), and the request's own input as items (for the store)."""

    chat: dict[str, Any]
    names: dict[str, tuple[str, str]]
    dropped: tuple[str, ...]
    items: list[Any]


def _bad(param: str, problem: str) -> BadRequest:
    return BadRequest(f"'{param}' {problem}", param=param)


def check(body: object) -> dict[str, Any]:
    """``body`` as a Responses request (the fields the gateway routes, reserves and stores by,
    of the right types), or the 400 naming what is wrong. One pass over the fields sent."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object with 'model' and 'input'.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "is required: name the model to use (a non-empty string).")
    value = body.get("input")
    if type(value) is not str:  # (a string, the commonest input, is all it can be)
        _input(value, body.get("previous_response_id") is not None)
    for name, value in body.items():
        kind = FIELDS.get(name)
        if kind is None or value is None:
            continue
        if kind is not object and (type(value) is not kind and not _number(kind, value)):
            raise _bad(name, PROBLEMS[kind])
        if kind is dict and not within_depth(value, ECHO_DEPTH):
            raise _too_deep(name)
        if name in UNSUPPORTED and value is not False:
            raise _bad(name, "is not supported by the gateway; send the conversation in 'input'.")
    max_output_tokens(body)
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        namespace = isinstance(tool, dict) and tool.get("type") == "namespace"
        if namespace and not within_depth(tool, ECHO_DEPTH):
            raise _too_deep("tools")
    return body


def _number(kind: type, value: object) -> bool:
    """A JSON number where a float is asked (an integer is one too)."""
    return kind is float and type(value) is int


def _too_deep(name: str) -> BadRequest:
    """The fields a ``response`` repeats deeper than the request had them (inside an event's
    ``response``) must nest shallow enough to be written there."""
    return BadRequest(
        f"'{name}' is nested too deeply (at most {ECHO_DEPTH} levels inside 'text', "
        "'metadata', 'reasoning' and namespace tools); flatten it.",
        param=name,
    )


def _input(value: object, continued: bool) -> None:
    if isinstance(value, str):
        return
    if value is None and continued:
        return
    if not isinstance(value, list):
        raise _bad("input", "is required: a string, or a list of input items.")
    if not value and not continued:
        raise _bad("input", "must not be an empty list: send at least one item.")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"input[{i}]", "must be an object (a message or another input item).")


def max_output_tokens(body: dict[str, Any]) -> int | None:
    """The request's ``max_output_tokens``: a whole number ≥ 1, or None when absent."""
    value = body.get("max_output_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad("max_output_tokens", "must be a whole number ≥ 1.")
    return value


def items_of(body: dict[str, Any]) -> list[Any]:
    """The request's own input as a list of items (a string is one user message)."""
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


def translate(
    body: dict[str, Any], history: list[Any], hosted: str, items: list[Any] | None = None
) -> Translated:
    """The chat request for a checked Responses ``body`` continuing ``history`` (the stored
    conversation's items, oldest first); ``hosted``: ``drop`` or ``reject``; ``items``: the
    body's own (``items_of``), when the caller has them already."""
    items = items_of(body) if items is None else items
    if not history and type(body.get("input")) is str and PLAIN.issuperset(body):
        return _plain(body, items)
    return _general(body, history, hosted, items)


def _plain(body: dict[str, Any], items: list[Any]) -> Translated:
    """``_general``'s translation of the commonest request (``PLAIN``: a string input, its
    instructions, no tools), in one step: the same chat body, its members in the same order."""
    instructions, user = body.get("instructions"), {"role": "user", "content": body["input"]}
    if type(instructions) is str and instructions:
        messages = [{"role": "system", "content": instructions}, user]
    else:
        messages = [user]
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("stream") is True:
        chat["stream"] = True
    if body.get("temperature") is not None:
        chat["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        chat["top_p"] = body["top_p"]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    return Translated(chat, {}, (), items)


def _general(body: dict[str, Any], history: list[Any], hosted: str, items: list[Any]) -> Translated:
    """Any request: its conversation, tools, sampling and other fields, field by field."""
    tools = tools_of(body.get("tools"), body.get("tool_choice"), hosted)
    messages = _conversation(body.get("instructions"), history, items, len(history))
    chat: dict[str, Any] = {
        name: value for name, value in body.items() if name not in KNOWN and value is not None
    }
    chat["model"] = body["model"]
    chat["messages"] = messages
    if body.get("stream") is True:
        chat["stream"] = True
    _sampling(body, chat)
    _tools(body, tools, chat)
    return Translated(chat, tools.names, tools.dropped, items)


def _sampling(body: dict[str, Any], chat: dict[str, Any]) -> None:
    for name in ("temperature", "top_p", "user", "prompt_cache_key"):
        if body.get(name) is not None:
            chat[name] = body[name]
    limit = max_output_tokens(body)
    if limit is not None:
        chat["max_tokens"] = limit
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    form = text.get("format") if isinstance(text, dict) else None
    if form is not None:
        response_format = _response_format(form)
        if response_format is not None:
            chat["response_format"] = response_format


def _response_format(form: object) -> dict[str, Any] | None:
    """``text.format`` as chat's ``response_format`` (None for plain text)."""
    kind = form.get("type") if isinstance(form, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema" or not isinstance(form, dict):
        raise _bad("text.format", "must have type text, json_object or json_schema.")
    if not isinstance(form.get("name"), str) or not isinstance(form.get("schema"), dict):
        raise _bad("text.format", "json_schema needs a 'name' (string) and a 'schema' (object).")
    schema = {k: form[k] for k in ("name", "schema", "strict", "description") if k in form}
    return {"type": "json_schema", "json_schema": schema}


def _tools(body: dict[str, Any], tools: Tools, chat: dict[str, Any]) -> None:
    if not tools.chat:
        return
    chat["tools"] = tools.chat
    if tools.choice is not None:
        chat["tool_choice"] = tools.choice
    if isinstance(body.get("parallel_tool_calls"), bool):
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]


def _conversation(
    instructions: object, history: list[Any], items: list[Any], offset: int
) -> list[dict[str, Any]]:
    """The chat messages: ``instructions``, then ``history`` and ``items`` in order, with the
    system messages that open the conversation joined into one."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for i, item in enumerate(history):
        _item(item, i, messages, "previous_response_id")
    for i, item in enumerate(items):
        _item(item, i, messages, "input")
    lead = 0
    while lead < len(messages) and messages[lead]["role"] == "system":
        lead += 1
    if lead > 1:
        joined = "\n\n".join(m["content"] for m in messages[:lead])
        messages[:lead] = [{"role": "system", "content": joined}]
    if not messages:
        raise _bad("input", "holds nothing to send the model (only reasoning items).")
    return messages


def _item(item: Any, i: int, out: list[dict[str, Any]], where: str) -> None:
    """One input item appended to the chat messages ``out``."""
    if type(item) is dict and "type" in item and item["type"] == "message":
        role, content = item.get("role"), item.get("content")
        if type(content) is str and type(role) is str and role in ROLES:  # the commonest
            out.append({"role": ROLES[role], "content": content})
            return
    param = f"{where}[{i}]" if where == "input" else where
    if not isinstance(item, dict):
        raise _bad(param, "must be an object (a message or another input item).")
    kind = item.get("type", "message" if "role" in item else None)
    if not isinstance(kind, str):
        raise _bad(param, "must have a 'type' (message, function_call, function_call_output).")
    if kind == "message":
        out.append(_message(item, param))
    elif kind == "function_call":
        _call(item, param, out)
    elif kind == "function_call_output":
        out.append(_output(item, param))
    elif kind in DROPPED_ITEMS:
        return
    else:
        raise _bad(
            param,
            f"has type '{shown(kind)}', which the gateway cannot give a chat worker; send "
            "messages, function_call and function_call_output items.",
        )


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = ROLES.get(item["role"]) if isinstance(item.get("role"), str) else None
    if role is None:
        raise _bad(f"{param}.role", "must be user, assistant, system or developer.")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"{param}.content", "must be a string or a list of content parts.")
    parts = [_part(part, f"{param}.content[{j}]") for j, part in enumerate(content)]
    if role != "user" and any(p["type"] != "text" for p in parts):
        raise _bad(f"{param}.content", f"of a {item['role']} message must be text.")
    return {"role": role, "content": _content(parts)}


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text parts as one string (as vLLM joins them); parts with an image as a list."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _part(part: object, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(part, dict) or not isinstance(kind, str):
        raise _bad(param, "must be a content part with a 'type'.")
    if kind in TEXT_PARTS or kind == "refusal":
        text = part.get("refusal" if kind == "refusal" else "text")
        if not isinstance(text, str):
            raise _bad(param, f"({shown(kind)}) needs a 'text' string.")
        return {"type": "text", "text": text}
    if kind in ("input_image", "image_url"):
        return _image(part, param)
    raise _bad(
        param,
        f"has type '{shown(kind)}', which the gateway cannot give a chat worker; send "
        "input_text and input_image parts (an image by its URL or data: URL).",
    )


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    url = part.get("image_url")
    if isinstance(url, dict):  # chat's own shape, {"url": ...}
        url = url.get("url")
    if not isinstance(url, str) or not url:
        raise _bad(param, "needs an 'image_url' (a URL or a data: URL); file ids are not kept.")
    image: dict[str, Any] = {"url": url}
    if isinstance(part.get("detail"), str):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _call(item: dict[str, Any], param: str, out: list[dict[str, Any]]) -> None:
    """A ``function_call`` as a tool call of the assistant message before it (a new one when
    the last message is not the assistant's)."""
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not isinstance(name, str) or not name:
        raise _bad(param, "(function_call) needs 'call_id' and 'name' strings.")
    if not isinstance(arguments, str):
        raise _bad(param, "(function_call) needs 'arguments', a JSON string.")
    namespace = item.get("namespace")
    if isinstance(namespace, str) and namespace:
        name = flat_name(namespace, name)
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant":  # its content is text (or None)
        last.setdefault("tool_calls", []).append(call)
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _output(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str):
        raise _bad(param, "(function_call_output) needs a 'call_id' string.")
    if isinstance(output, str):
        return {"role": "tool", "tool_call_id": call_id, "content": output}
    if not isinstance(output, list):
        raise _bad(param, "(function_call_output) needs an 'output' string or content list.")
    parts = [_part(part, f"{param}.output[{j}]") for j, part in enumerate(output)]
    return {"role": "tool", "tool_call_id": call_id, "content": _content(parts)}
