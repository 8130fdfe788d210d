"""A whole upstream OpenAI chat completion as an Anthropic Messages answer, and the pieces of an
answer the stream translator shares (message and tool ids, stop reasons, usage, tool inputs,
reasoning). Pure.

Choices the Anthropic contract leaves open, made here:

- The message id is ``msg_`` + the OpenAI id without its ``chatcmpl-`` prefix, so the same answer
  always gets the same id; an answer without an id gets ``msg_`` + a hash of itself.
- ``reasoning_content`` (or vLLM's newer ``reasoning``) becomes a ``thinking`` block before the
  text, signed ``gateway-unsigned`` (``anthropic_events.SIGNATURE``): the reasoning reaches the
  client in the place Anthropic's own extended thinking uses, and nothing pretends to be signed.
- Tool ``arguments`` that are not a JSON object are kept, not dropped: ``input`` becomes
  ``{"_raw_arguments": "<what the model wrote>"}``; empty arguments become ``{}``.
- A whole answer keeps the upstream's vendor extras (``model_output_metadata``, ...) as top-level
  fields of the ``message``; the official SDKs ignore unknown fields and keep them reachable
  (Python: ``message.model_extra``). OpenAI's own answer fields (``system_fingerprint``,
  ``service_tier``, ``object``, ``created``, vLLM's ``prompt_logprobs`` and the like) are not
  carried: they describe the OpenAI exchange, not the Anthropic message. Reasoning travels as
  ``thinking`` blocks.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from gateway.dialects import MAX_DEPTH, loads_object
from gateway.dialects.anthropic_events import SIGNATURE, anthropic_message

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "end_turn",
}
_ID_PREFIXES = ("chatcmpl-", "cmpl-", "msg_")
# Top-level keys of an upstream answer that never go into an Anthropic ``message``: the OpenAI
# envelope (translated or meaningless here), OpenAI/vLLM-only serving fields, and the names of
# ``Message`` fields this translation does not fill (an upstream value there would not match the
# SDK's type for them).
_NOT_CARRIED = frozenset(
    {"id", "object", "created", "model", "choices", "usage"}
    | {"system_fingerprint", "service_tier", "prompt_logprobs", "prompt_token_ids"}
    | {"kv_transfer_params"}
    | {"container", "diagnostics", "stop_details"}
)
_RAW_ARGUMENTS = "_raw_arguments"


class Usage(NamedTuple):
    prompt_tokens: int
    completion_tokens: int


def message_id(openai_id: object, seed: object) -> str:
    """``msg_`` + the tail of the upstream id; without one, ``msg_`` + a hash of ``seed``."""
    if not isinstance(openai_id, str) or not openai_id:
        canonical = json.dumps(seed, sort_keys=True, default=str).encode()
        return "msg_" + hashlib.sha256(canonical).hexdigest()[:24]
    for prefix in _ID_PREFIXES:
        if openai_id.startswith(prefix):
            return "msg_" + openai_id[len(prefix) :]
    return "msg_" + openai_id


def stop_reason(choice: dict[str, Any]) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)`` of an OpenAI choice.

    vLLM names the stop string that ended the answer in ``stop_reason``, SGLang in ``matched_stop``
    (both give a token id instead when a stop token ended it, which is an ordinary end of turn).
    """
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason", choice.get("matched_stop"))
    if finish == "stop" and isinstance(matched, str):
        return "stop_sequence", matched
    return _STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn", None


def usage_of(value: object) -> Usage | None:
    """The token counts of an OpenAI ``usage`` object, if it has any."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    return Usage(
        prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0
    )


def reasoning_of(message: dict[str, Any]) -> str | None:
    reasoning = message.get("reasoning_content", message.get("reasoning"))
    return reasoning if isinstance(reasoning, str) and reasoning else None


def tool_input(arguments: object) -> dict[str, Any]:
    """The ``input`` object of a tool call from its OpenAI ``arguments`` JSON string; kept raw
    when not an object, or nested deeper than an answer can be written with it (the 4th level)."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    parsed = loads_object(arguments, MAX_DEPTH - 3)
    return parsed if parsed is not None else {_RAW_ARGUMENTS: arguments}


def tool_id(msg_id: str, index: int) -> str:
    return f"toolu_{msg_id.removeprefix('msg_')}_{index}"


def tool_use(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def string(value: object) -> str:
    return value if isinstance(value, str) else ""


def to_anthropic_response(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic Messages answer; vendor extras kept."""
    plain = plain_answer(answer, model)
    return plain if plain is not None else translated_answer(answer, model)


def plain_answer(answer: dict[str, Any], model: str) -> dict[str, Any] | None:
    """``translated_answer``'s result for the commonest answer: one choice of text that stopped
    or ran out of tokens, with usage and a ``chatcmpl-`` id, no tool calls, reasoning or vendor
    extras, checked in one pass, the message built by the same ``anthropic_message``. None for
    anything else (the general path). The property tests hold the two paths to the same
    output."""
    answer_id, choices, usage = answer.get("id"), answer.get("choices"), answer.get("usage")
    if (
        type(answer_id) is not str
        or not answer_id.startswith("chatcmpl-")
        or type(choices) is not list
        or not choices
        or type(usage) is not dict
        or not _NOT_CARRIED.issuperset(answer)
    ):
        return None
    choice = choices[0]
    if type(choice) is not dict:
        return None
    message, finish = choice.get("message"), choice.get("finish_reason")
    if (
        type(message) is not dict
        or (finish != "stop" and finish != "length")
        or choice.get("stop_reason", choice.get("matched_stop")) is not None
        or message.get("tool_calls")
        or message.get("function_call") is not None
        or message.get("reasoning_content", message.get("reasoning")) is not None
    ):
        return None
    text, prompt, completion = (
        message.get("content"),
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
    )
    if type(text) is not str or type(prompt) is not int or type(completion) is not int:
        return None
    content = [{"type": "text", "text": text}] if text else []
    msg_id = message_id(answer_id, answer)
    return anthropic_message(
        msg_id, model, content, _STOP_REASONS[finish], None, prompt, completion
    )


def translated_answer(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """Any OpenAI chat completion as an Anthropic Messages answer (the general path)."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    msg_id = message_id(answer.get("id"), answer)
    reason, sequence = stop_reason(choice if isinstance(choice, dict) else {})
    usage = usage_of(answer.get("usage")) or Usage(0, 0)
    content = _answer_blocks(message if isinstance(message, dict) else {}, msg_id)
    out = anthropic_message(
        msg_id, model, content, reason, sequence, usage.prompt_tokens, usage.completion_tokens
    )
    for key, value in answer.items():
        if key not in _NOT_CARRIED:
            out.setdefault(key, value)  # model_output_metadata and other vendor extras
    return out


def _answer_blocks(message: dict[str, Any], msg_id: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    reasoning = reasoning_of(message)
    if reasoning:
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": SIGNATURE})
    text = message.get("content")
    if isinstance(text, str) and text:
        blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        legacy = message.get("function_call")
        calls = [{"function": legacy}] if isinstance(legacy, dict) else []
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            call_id = string(call.get("id")) or tool_id(msg_id, i)
            arguments = tool_input(function.get("arguments"))
            blocks.append(tool_use(call_id, string(function.get("name")), arguments))
    return blocks
