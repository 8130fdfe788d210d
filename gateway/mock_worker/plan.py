"""What the mock worker answers to one chat request, decided without I/O.

Owns request validation (the 400s), the reply rules (canned reply, ``echo:``, ``say:N``, the tool
round trip), the ``max_tokens`` and ``stop`` cuts, tool-call synthesis, reasoning and the token
counts; and the ``x-mock-*`` request headers every API reads (:func:`read_controls`).
``gateway.mock_worker.wire`` turns a :class:`Plan` into bytes; ``gateway.mock_worker`` serves
it. A token is a whitespace-delimited word together with the whitespace before it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

_WORD = re.compile(r"\s*\S+(?:\s+\Z)?")  # trailing whitespace stays on the last word
REASONING_TOKENS: tuple[str, ...] = ("Let", " me", " think.")
MAX_SAY = 100_000
_PLACE_HINTS = ("location", "city", "place", "address", "where", "region", "country")
_PLACES = ("Athens, Greece", "Paris, France")


class BadRequest(Exception):
    """The request cannot be answered; rendered as a 400 ``invalid_request_error``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def tokenize(text: str) -> list[str]:
    """Words with their leading whitespace; ``"".join`` gives back the text minus leading space."""
    words: list[str] = _WORD.findall(text.lstrip())
    return words


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One synthesized call; ``fragments`` is ``arguments`` cut into the streamed pieces."""

    id: str
    name: str
    arguments: str
    fragments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole answer: reasoning tokens, then content tokens or tool calls, then the finish."""

    model: str
    stream: bool
    include_usage: bool
    reasoning: Sequence[str]
    content: Sequence[str]
    canned: bool  # content is a prefix of the canned reply (precomputed chunks apply)
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    stop_reason: str | None
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        calls = sum(1 + len(call.fragments) for call in self.tool_calls)
        return len(self.reasoning) + len(self.content) + calls

    def usage(self) -> dict[str, int]:
        done = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }


def plan_chat(body: Any, canned: Sequence[str], ids: Iterator[int], default_model: str) -> Plan:
    """Decides the answer to a parsed chat request body; raises :class:`BadRequest`."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    messages = _messages(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        model = default_model
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    last_user = _last_user_text(messages)
    limit = _max_tokens(body)
    stops = _stops(body)
    calls = _tool_calls(body, messages, last_user, ids)
    reasoning: Sequence[str] = REASONING_TOKENS if "reason" in model.lower() else ()
    prompt = sum(len(text_of(m.get("content")).split()) + 3 for m in messages)
    plan = Plan(model, stream, include_usage, reasoning, (), False, (), "stop", None, prompt)
    if limit is not None and limit <= len(reasoning):
        return replace(plan, reasoning=reasoning[:limit], finish_reason="length")
    if calls:
        return replace(plan, tool_calls=calls, finish_reason="tool_calls")
    tokens, is_canned = _reply(messages, last_user, canned)
    budget = None if limit is None else limit - len(reasoning)
    tokens, is_canned, finish, stop_reason = _cut(tokens, is_canned, stops, budget)
    return replace(
        plan, content=tokens, canned=is_canned, finish_reason=finish, stop_reason=stop_reason
    )


def text_of(content: Any) -> str:
    """The text of a message ``content``: a string, or the text parts of a list joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` is required and must be a non-empty list.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"`messages[{i}]` must be an object.")
    return messages


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content")).lstrip()
    return ""


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadRequest(f"`{key}` must be a positive integer.")
        return value
    return None


def _stops(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(s for s in stop if s)
    raise BadRequest("`stop` must be a string or a list of strings.")


def _reply(
    messages: Sequence[Mapping[str, Any]], last_user: str, canned: Sequence[str]
) -> tuple[Sequence[str], bool]:
    if messages[-1].get("role") == "tool":
        return tokenize("The tool said: " + _trailing_tool_text(messages)), False
    if last_user.startswith("echo:"):
        return tokenize(last_user[5:]), False
    count = _say_count(last_user)
    if count is not None:
        return [f" tok{i}" if i else "tok0" for i in range(count)], False
    return canned, True


def _trailing_tool_text(messages: Sequence[Mapping[str, Any]]) -> str:
    texts: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        texts.append(text_of(message.get("content")))
    return " ".join(reversed(texts))


def _say_count(text: str) -> int | None:
    if not text.startswith("say:"):
        return None
    words = text[4:].split(maxsplit=1)
    if not words or not words[0].isdecimal():
        return None
    return min(int(words[0]), MAX_SAY)


def _cut(
    tokens: Sequence[str], canned: bool, stops: tuple[str, ...], budget: int | None
) -> tuple[Sequence[str], bool, str, str | None]:
    """Applies ``stop`` (cut before the earliest match), then the token budget."""
    stop_reason: str | None = None
    if stops:
        text = "".join(tokens)
        found = [(i, s) for s in stops if (i := text.find(s)) >= 0]
        if found:
            index, stop_reason = min(found, key=lambda hit: hit[0])
            tokens, canned = tokenize(text[:index]), False
    if budget is not None and len(tokens) > budget:
        return tokens[:budget], canned, "length", None
    return tokens, canned, "stop", stop_reason


def _tool_calls(
    body: Mapping[str, Any],
    messages: Sequence[Mapping[str, Any]],
    last_user: str,
    ids: Iterator[int],
) -> tuple[ToolCall, ...]:
    tools = body.get("tools")
    if not tools:
        return ()
    functions = _functions(tools)
    choice = body.get("tool_choice", "auto")
    named = _named_choice(choice)
    if choice == "none" or messages[-1].get("role") == "tool":
        return ()
    if named is not None:
        match = [f for f in functions if f["name"] == named]
        if not match:
            raise BadRequest(f"Tool '{named}' named in `tool_choice` is not in `tools`.")
        return (_call(match[0], 0, ids),)
    lowered = last_user.lower()
    if choice != "required" and "tool" not in lowered and "weather" not in lowered:
        return ()
    if "parallel" not in lowered or body.get("parallel_tool_calls") is False:
        return (_call(functions[0], 0, ids),)
    if len(functions) >= 2:
        return (_call(functions[0], 0, ids), _call(functions[1], 0, ids))
    return (_call(functions[0], 0, ids), _call(functions[0], 1, ids))


def _functions(tools: Any) -> list[dict[str, Any]]:
    shape = '{"type": "function", "function": {"name": ...}}'
    if not isinstance(tools, list):
        raise BadRequest(f"`tools` must be a list of {shape}.")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest(f"`tools[{i}]` must be {shape}.")
        out.append(function)
    return out


def _named_choice(choice: Any) -> str | None:
    if choice in ("none", "auto", "required"):
        return None
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        name: str = function["name"]
        return name
    raise BadRequest('`tool_choice` must be "none", "auto", "required" or a named function.')


def _call(function: Mapping[str, Any], variant: int, ids: Iterator[int]) -> ToolCall:
    arguments = orjson.dumps(_arguments(function.get("parameters"), variant)).decode()
    return ToolCall(f"call_{next(ids)}", function["name"], arguments, split_fragments(arguments))


def split_fragments(text: str) -> tuple[str, ...]:
    """Cuts ``text`` into 3 (4 when 40 characters or longer) non-empty, near-equal pieces."""
    count = min(3 if len(text) < 40 else 4, len(text))
    bounds = [len(text) * k // count for k in range(count + 1)] if count else [0]
    return tuple(text[bounds[k] : bounds[k + 1]] for k in range(count))


def _arguments(parameters: Any, variant: int) -> dict[str, Any]:
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if not isinstance(properties, dict):
        return {}
    return {name: _value(name, schema, variant) for name, schema in properties.items()}


def _value(name: str, schema: Any, variant: int) -> Any:
    """A plausible value for one JSON-schema property; ``variant`` makes a second call differ."""
    if not isinstance(schema, dict):
        return "mock"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[min(variant, len(enum) - 1)]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind in ("number", "integer"):
        return 1 + variant
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return _arguments(schema, variant)
    if any(hint in name.lower() for hint in _PLACE_HINTS):
        return _PLACES[variant % len(_PLACES)]
    return "mock" if variant == 0 else f"mock{variant + 1}"


CONTROL_HEADERS = (
    "x-mock-status",
    "x-mock-die-after",
    "x-mock-delay",
    "x-mock-token-delay",
    "x-mock-no-usage",
)


@dataclass(frozen=True, slots=True)
class Controls:
    """The ``x-mock-*`` headers of one request."""

    token_delay: float
    delay: float = 0.0
    status: int | None = None
    die_after: int | None = None
    no_usage: bool = False


def read_controls(headers: Mapping[str, str], default: Controls) -> Controls:
    """The request's ``x-mock-*`` headers over ``default``; raises :class:`BadRequest`."""
    if not any(name in headers for name in CONTROL_HEADERS):
        return default
    no_usage = headers.get("x-mock-no-usage", "").strip().lower()
    return Controls(
        token_delay=_seconds(headers, "x-mock-token-delay", default.token_delay),
        delay=_seconds(headers, "x-mock-delay", 0.0),
        status=_integer(headers, "x-mock-status", 400, 599),
        die_after=_integer(headers, "x-mock-die-after", 0, 1 << 30),
        no_usage=no_usage not in ("", "0", "false", "no"),
    )


def _seconds(headers: Mapping[str, str], name: str, default: float) -> float:
    value = headers.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise BadRequest(f"`{name}` must be a non-negative number of seconds, not {value!r}.")
    return seconds


def _integer(headers: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    text = value.strip()
    if not text.isdecimal() or not low <= int(text) <= high:
        raise BadRequest(f"`{name}` must be an integer from {low} to {high}, not {value!r}.")
    return int(text)
