"""The OpenAI Responses API, answer side: a worker's chat completion as a ``response`` object,
and the parts of it the event stream (``dialects.responses_stream``) shares. Pure.

The ``response`` carries what the request asked for (``instructions``, ``tools``,
``tool_choice``, ``max_output_tokens``, ``metadata``, ``text``, ``reasoning``, …: the ``Shape``,
decided once per request) and the answer as output items: a ``reasoning`` item when the worker
sent ``reasoning_content`` (or ``reasoning``), a ``message`` with one ``output_text`` part for its
text, and a ``function_call`` per tool call (a namespaced tool's flat name split back into
``namespace`` and ``name``). ``usage`` is ``input_tokens``/``output_tokens``/``total_tokens`` with
their details objects. A worker that stopped at its token limit gives ``status: incomplete``
(``incomplete_details.reason: max_output_tokens``), as OpenAI does.

Item ids derive from the response's own (``msg_<hex>_<index>``, ``fc_…``, ``rs_…``), so a
response's ids are unique and the same in its stream and its stored copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.dialects import MAX_DEPTH
from gateway.errors import BadRequest

_dumps = orjson.dumps

ECHOED = ("instructions", "max_output_tokens", "previous_response_id", "temperature", "top_p")
ECHOED_OR_NULL = ("user", "prompt_cache_key", "reasoning")
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


# Never changed once made; not frozen, as a frozen dataclass's __init__ costs a microsecond
# more, once per request.
@dataclass(slots=True, eq=False)
class Shape:
    """What every ``response`` object of one request carries besides its output: ``echo``
    (the request's fields it repeats, made from ``body`` when asked for), encoded once
    (``echo_json``, its members) as every event of a stream repeats it, and the bytes of every
    response's start (``head``, up to its status) and of its model."""

    id: str  # resp_<hex>
    created_at: int
    model: str  # the public name the client asked for
    body: dict[str, Any]  # the request
    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat → (namespace, name)
    echo_json: bytes = b""
    head: bytes = b""  # {"id":…,"object":"response","created_at":…,"status":"
    model_json: bytes = b""

    @property
    def echo(self) -> dict[str, Any]:
        return _echo(self.body)

    def item_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_{self.id[5:]}_{index}"

    def response(
        self,
        status: str,
        output: list[Any],
        usage: Any = None,
        details: Any = None,
        error: Any = None,
    ) -> dict[str, Any]:
        """The ``response`` object in ``status`` with ``output`` (and ``usage``,
        ``incomplete_details``, ``error``)."""
        out: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": details,
            "model": self.model,
            "output": output,
        }
        out.update(self.echo)
        out["usage"] = usage
        return out

    def encode(
        self,
        status: str,
        output: bytes,
        usage: Any = None,
        details: Any = None,
        error: Any = None,
    ) -> bytes:
        """``response(...)`` as JSON, ``output`` given encoded (``usage`` too, when bytes):
        the echo is not encoded again."""
        return b"".join(  # (_RESPONSE's pieces: one copy of each, where % copied them twice)
            (
                self.head,
                status.encode(),
                b'","error":',
                b"null" if error is None else _dumps(error),
                b',"incomplete_details":',
                b"null" if details is None else _dumps(details),
                b',"model":',
                self.model_json,
                b',"output":',
                output,
                b",",
                self.echo_json,
                b',"usage":',
                usage if type(usage) is bytes else _dumps(usage),
                b"}",
            )
        )


_RESPONSE = b'%s%s","error":%s,"incomplete_details":%s,"model":%s,"output":%s,%s,"usage":%s}'
# encode("in_progress", b"[]") as a template of its head, model and echo (a stream's start)
IN_PROGRESS = _RESPONSE % (b"%s", b"in_progress", b"null", b"null", b"%s", b"[]", b"%s", b"null")
# A completed message item with its one text part, as message_item and text_part build them
# (the stream's events write them too)
MESSAGE_ITEM = (
    b'{"id":"%s","type":"message","role":"assistant","status":"completed","content":[%s]}'
)
TEXT_PART = b'{"type":"output_text","text":%s,"annotations":[],"logprobs":[]}'
# The output of a message alone, its id and text to fill in
_TEXT_ALONE = b"[" + MESSAGE_ITEM % (b"%s", TEXT_PART % b"%s") + b"]"
# usage_of's object, written directly (the members in its order)
_USAGE = (
    b'{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d,"cache_write_tokens":0},'
    b'"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d}'
)


def shape(
    body: dict[str, Any],
    response_id: str,
    created_at: int,
    model: str,
    names: dict[str, tuple[str, str]] | None = None,
) -> Shape:
    """The shape of the responses to a checked request ``body``; ``names``: the flat names
    of its namespaced tools (``Translated.names``)."""
    get = body.get
    try:
        if _PLAIN.issuperset(body) and not get("metadata"):  # the commonest: from a template
            echo_json = _PLAIN_ECHO % (  # (each member's JSON written out: no call more)
                b"null" if (instructions := get("instructions")) is None else _dumps(instructions),
                b"null" if (most := get("max_output_tokens")) is None else _dumps(most),
                b"null" if (previous := get("previous_response_id")) is None else _dumps(previous),
                b"null" if (temperature := get("temperature")) is None else _dumps(temperature),
                b"null" if (top_p := get("top_p")) is None else _dumps(top_p),
                b"false" if get("parallel_tool_calls") is False else b"true",
                b"false" if get("store") is False else b"true",
            )
        else:
            echo_json = _dumps(_echo(body))[1:-1]
    except (orjson.JSONEncodeError, RecursionError):
        raise BadRequest(
            f"The request is nested too deeply (at most {MAX_DEPTH} levels of arrays and "
            "objects); flatten it."
        ) from None
    head = b'{"id":%s,"object":"response","created_at":%d,"status":"' % (
        _dumps(response_id),
        created_at,
    )
    return Shape(response_id, created_at, model, body, names or {}, echo_json, head, _dumps(model))


# A request of none but these fields (and no metadata) echoes no tools, tool_choice, text,
# user, prompt_cache_key, reasoning nor metadata: their defaults, written in _PLAIN_ECHO
_PLAIN_ECHO = (
    b'"instructions":%s,"max_output_tokens":%s,"previous_response_id":%s,"temperature":%s,'
    b'"top_p":%s,"tools":[],"tool_choice":"auto","parallel_tool_calls":%s,'
    b'"text":{"format":{"type":"text"}},"store":%s,"metadata":{},"truncation":"disabled",'
    b'"background":false'
)
_PLAIN = frozenset(
    {"model", "input", "instructions", "max_output_tokens", "previous_response_id", "stream",
     "store", "temperature", "top_p", "metadata", "include", "parallel_tool_calls"}
)  # fmt: skip


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """What a ``response`` repeats of any request, in its order."""
    get = body.get
    echo: dict[str, Any] = {
        "instructions": get("instructions"),
        "max_output_tokens": get("max_output_tokens"),
        "previous_response_id": get("previous_response_id"),
        "temperature": get("temperature"),
        "top_p": get("top_p"),
    }
    for name in ECHOED_OR_NULL:  # in this order, when sent
        if get(name) is not None:
            echo[name] = body[name]
    reasoning = get("reasoning")
    if isinstance(reasoning, dict):  # what OpenAI repeats of it
        echo["reasoning"] = {k: v for k, v in reasoning.items() if k in ("effort", "summary")}
    tools = get("tools")
    echo["tools"] = [t for t in tools if _kept(t)] if tools else []
    echo["tool_choice"] = get("tool_choice") or "auto"
    echo["parallel_tool_calls"] = get("parallel_tool_calls") is not False
    echo["text"] = get("text") or {"format": {"type": "text"}}
    echo["store"] = get("store") is not False
    echo["metadata"] = get("metadata") or {}
    echo["truncation"] = "disabled"
    echo["background"] = False
    return echo


def _kept(tool: object) -> bool:
    """Tools echoed in the response: those the model was given (hosted ones were not)."""
    return isinstance(tool, dict) and tool.get("type") in ("function", "namespace")


def usage_of(chat_usage: Any, estimate: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """A chat ``usage`` as the Responses ``usage`` (``estimate``: input and output tokens to
    report when the worker sent none)."""
    prompt, completion, cached, reasoning = _counts(chat_usage, estimate)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def usage_json(chat_usage: Any, estimate: tuple[int, int] = (0, 0)) -> bytes:
    """``usage_of(...)`` encoded, from a template (a usage without details, the commonest,
    counted here: ``_counts`` written out)."""
    prompt = chat_usage.get("prompt_tokens") if type(chat_usage) is dict else None
    details = type(prompt) is int and (
        "prompt_tokens_details" in chat_usage or "completion_tokens_details" in chat_usage
    )
    if type(prompt) is not int or details:
        prompt, completion, cached, reasoning = _counts(chat_usage, estimate)
        return _USAGE % (prompt, cached, completion, reasoning, prompt + completion)
    completion = chat_usage.get("completion_tokens")
    completion = completion if type(completion) is int and completion >= 0 else 0
    return _USAGE % (prompt, 0, completion, 0, prompt + completion)


def _counts(chat_usage: Any, estimate: tuple[int, int]) -> tuple[int, int, int, int]:
    """Input, output, cached input and reasoning tokens of a chat ``usage``."""
    prompt = chat_usage.get("prompt_tokens") if type(chat_usage) is dict else None
    if type(prompt) is not int:  # no count (a bool is none either)
        return estimate[0], estimate[1], 0, 0
    completion = chat_usage.get("completion_tokens")
    completion = completion if type(completion) is int and completion >= 0 else 0
    cached = reasoning = 0  # (most workers send neither details object)
    if "prompt_tokens_details" in chat_usage:
        cached = _detail(chat_usage, "prompt_tokens_details", "cached_tokens")
    if "completion_tokens_details" in chat_usage:
        reasoning = _detail(chat_usage, "completion_tokens_details", "reasoning_tokens")
    return prompt, completion, cached, reasoning


def _int(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def _detail(usage: dict[str, Any], part: str, name: str) -> int:
    details = usage.get(part)
    return _int(details.get(name)) if isinstance(details, dict) else 0


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": status,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    content = [] if text is None else [text_part(text)]
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def call_item(
    shape: Shape, item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    """A ``function_call`` item; a flat name the request's namespaces made is split back."""
    item: dict[str, Any] = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }
    split = shape.names.get(name)
    if split is not None:
        item["namespace"], item["name"] = split
    return item


def arguments_of(value: object) -> str:
    """A tool call's arguments as the JSON text Responses clients parse (an object some
    workers send is written out; nothing at all is ``{}``)."""
    if isinstance(value, str):
        return value or "{}"
    if value is None:
        return "{}"
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return "{}"


def status_of(finish_reason: object) -> tuple[str, dict[str, str] | None]:
    """The response's ``status`` and ``incomplete_details`` for a chat ``finish_reason``."""
    reason = INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def reasoning_of(message: dict[str, Any]) -> str | None:
    """The reasoning a worker sent beside its answer (vLLM: ``reasoning_content``, newer
    versions ``reasoning``)."""
    for key in ("reasoning_content", "reasoning"):
        text = message.get(key)
        if isinstance(text, str) and text:
            return text
    return None


def to_response(answer: dict[str, Any], shape: Shape, estimate: tuple[int, int]) -> dict[str, Any]:
    """A whole chat completion (parsed) as the ``response`` object."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    choice = choice if isinstance(choice, dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    output = output_items(message, shape)
    status, details = status_of(choice.get("finish_reason"))
    return shape.response(status, output, usage_of(answer.get("usage"), estimate), details)


def encode_response(
    answer: dict[str, Any], shape: Shape, estimate: tuple[int, int]
) -> tuple[bytes, str]:
    """``to_response`` encoded (the echo encoded once, in the shape: never built again as a
    dict here), and its status."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    choice = choice if isinstance(choice, dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    status, details = status_of(choice.get("finish_reason"))
    usage = usage_json(answer.get("usage"), estimate)
    return shape.encode(status, _output_json(message, shape), usage, details), status


def _output_json(message: dict[str, Any], shape: Shape) -> bytes:
    """``output_items(message, shape)`` encoded; text alone (the commonest answer) written
    from the templates."""
    content, calls = message.get("content"), message.get("tool_calls")
    text_alone = type(content) is str and content and not (type(calls) is list and calls)
    # (no reasoning: neither key, the commonest, or what reasoning_of finds in them)
    unreasoned = "reasoning_content" not in message and "reasoning" not in message
    if text_alone and (unreasoned or reasoning_of(message) is None):
        return _TEXT_ALONE % (shape.item_id("msg", 0).encode(), _dumps(content))
    return _dumps(output_items(message, shape))


def output_items(message: dict[str, Any], shape: Shape) -> list[dict[str, Any]]:
    """The output items of a chat ``message``: reasoning, text, function calls, in order."""
    items: list[dict[str, Any]] = []
    reasoning = reasoning_of(message)
    if reasoning is not None:
        items.append(reasoning_item(shape.item_id("rs", len(items)), reasoning))
    content = message.get("content")
    if isinstance(content, str) and content:
        items.append(message_item(shape.item_id("msg", len(items)), content))
    calls = message.get("tool_calls")
    for i, call in enumerate(calls if isinstance(calls, list) else ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        name, arguments = function.get("name"), function.get("arguments")
        call_id = call.get("id") if isinstance(call.get("id"), str) else None
        items.append(
            call_item(
                shape,
                shape.item_id("fc", len(items)),
                call_id or shape.item_id("call", i),
                name if isinstance(name, str) else "",
                arguments_of(arguments),
            )
        )
    if not items:  # an empty answer is an empty message, as OpenAI answers it
        items.append(message_item(shape.item_id("msg", 0), ""))
    return items
