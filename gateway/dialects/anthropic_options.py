"""The settings of an Anthropic Messages request (everything but its messages) as OpenAI chat
fields: ``max_tokens`` (clamped to the model's ``max_output_tokens``), sampling, stop sequences,
``metadata``, tools and ``tool_choice``, ``stream``, ``thinking`` and ``output_config``, and
which fields are dropped. Pure.

Choices the Anthropic contract leaves open, made here:

- ``max_tokens`` above the model's ``max_output_tokens`` (when configured) is lowered to it.
- ``metadata.user_id`` becomes ``user`` (Claude Code's, a JSON string with a ``session_id``,
  is passed whole: the affinity router reads the session from it); the rest is dropped.
- ``thinking`` (``enabled``, ``adaptive``, ``between_tools``) asks the worker to reason:
  ``chat_template_kwargs: {"enable_thinking": true}`` (Qwen3, DeepSeek, GLM and Granite
  templates read it; others ignore it); ``disabled`` sends ``false``. A client's own
  ``chat_template_kwargs`` win. ``display`` is not honoured: reasoning always comes back.
- ``output_config.effort`` becomes ``reasoning_effort`` (``low``, ``medium``, ``high``; ``xhigh``
  and ``max`` → ``high``); without it, an ``enabled`` thinking budget picks one (below 4,096
  tokens ``low``, below 16,384 ``medium``, else ``high``). A ``thinking`` type or an effort this
  gateway does not know is left out, so a newer client is not refused. ``output_config.format``
  (a JSON schema) becomes ``response_format``.
- Tools keep only ``name``, ``description`` and ``input_schema``: ``cache_control``,
  ``defer_loading`` (every declared tool is callable on the worker), ``strict`` and
  ``input_examples`` are dropped. Server tools (``web_search_…``, ``bash_…``, …) are refused:
  a worker cannot run them.
- Anthropic-only fields the worker has no use for are dropped (``STRIPPED``); any other field
  this translation does not consume (``top_k``, ``region``, ``agent_id``, vendor extensions) is
  forwarded as it is.
"""

from __future__ import annotations

from reprlib import repr as brief
from typing import Any

from gateway.dialects.anthropic_messages import bad

CONSUMED = frozenset(
    {"model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p"}
    | {"stream", "metadata", "tools", "tool_choice", "thinking", "output_config"}
)
STRIPPED = frozenset(
    {"cache_control", "context_management", "container", "mcp_servers", "service_tier", "speed"}
    | {"inference_geo", "diagnostics", "betas", "compaction", "fallbacks", "thread"}
    | {"billing_policy", "fallback_credit_token", "output_format"}
    # The request's limit is its max_tokens (clamped to the model's ceiling); another limit
    # forwarded beside it would be read by a worker unclamped and unreserved.
    | {"max_completion_tokens"}
)
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_THINKING = {"enabled": True, "adaptive": True, "between_tools": True, "disabled": False}


def max_tokens(body: dict[str, Any], ceiling: int | None) -> int:
    """The request's ``max_tokens``, at most ``ceiling`` when there is one."""
    value = body.get("max_tokens")
    if value is None:
        raise bad(
            "max_tokens",
            "required in an Anthropic Messages request; send the most tokens to generate,"
            ' e.g. "max_tokens": 1024.',
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad("max_tokens", f"must be a positive integer, e.g. 1024 (got {brief(value)}).")
    return value if ceiling is None or value <= ceiling else ceiling


def sampling(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "temperature" in body:
        out["temperature"] = body["temperature"]
    if "top_p" in body:
        out["top_p"] = body["top_p"]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise bad("stop_sequences", "must be a list of strings.")
        if stops:
            out["stop"] = stops
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad("metadata", 'must be an object, e.g. {"user_id": "..."}.')
    if metadata and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out


def reasoning(body: dict[str, Any]) -> dict[str, Any]:
    """``thinking`` and ``output_config`` as the worker's reasoning settings."""
    out: dict[str, Any] = {}
    thinking, config = body.get("thinking"), body.get("output_config")
    budget: object = None
    if thinking is not None:
        if not isinstance(thinking, dict):
            raise bad(
                "thinking",
                'must be an object: {"type": "enabled", "budget_tokens": N}, {"type": "adaptive"}'
                ' or {"type": "disabled"}.',
            )
        kind = thinking.get("type")
        if isinstance(kind, str) and kind in _THINKING:  # a type to come is left to the worker
            out["chat_template_kwargs"] = {"enable_thinking": _THINKING[kind]}
        budget = thinking.get("budget_tokens") if kind == "enabled" else None
    if config is not None and not isinstance(config, dict):
        raise bad("output_config", 'must be an object, e.g. {"effort": "high"}.')
    effort = _effort(config.get("effort") if config else None, budget)
    if effort is not None:
        out["reasoning_effort"] = effort
    if config and config.get("format") is not None:
        out["response_format"] = _response_format(config["format"])
    return out


def _effort(effort: object, budget: object) -> str | None:
    if effort is not None:
        if not isinstance(effort, str):
            raise bad(
                "output_config.effort", f"must be a string such as high (got {brief(effort)})."
            )
        return _EFFORTS.get(effort)  # a level to come is left to the worker's default
    if isinstance(budget, bool) or not isinstance(budget, int):
        return None
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def _response_format(value: object) -> dict[str, Any]:
    schema = value.get("schema") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or value.get("type") != "json_schema"
        or not isinstance(schema, dict)
    ):
        raise bad("output_config.format", 'must be {"type": "json_schema", "schema": {...}}.')
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def merge_template_kwargs(out: dict[str, Any], client: object) -> None:
    """A client's own ``chat_template_kwargs`` win over the ones ``thinking`` asked for."""
    mine = out.get("chat_template_kwargs")
    if isinstance(client, dict) and isinstance(mine, dict):
        out["chat_template_kwargs"] = {**mine, **client}
    elif client is not None:
        out["chat_template_kwargs"] = client


def tooling(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise bad("tools", 'must be a list of {"name", "description", "input_schema"} tools.')
        if tools:  # OpenAI refuses an empty list
            out["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is not None:
        out.update(_tool_choice(choice))
    return out


def _tool(tool: object, path: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise bad(path, "must be an object with 'name' and 'input_schema'.")
    if tool.get("type") == "function" or "function" in tool:
        raise bad(
            path,
            "an OpenAI-style function tool in an Anthropic request;"
            ' send {"name", "description", "input_schema"} instead.',
        )
    kind, name, schema = tool.get("type"), tool.get("name"), tool.get("input_schema")
    if kind not in (None, "custom"):
        what = brief(kind)
        raise bad(
            f"{path}.type",
            f"{what} is a server tool the worker cannot run; define a custom tool instead.",
        )
    if not isinstance(name, str) or not name:
        raise bad(f"{path}.name", "must be the tool's name.")
    if not isinstance(schema, dict):
        raise bad(f"{path}.input_schema", 'must be a JSON Schema object: {"type": "object", ...}.')
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: object) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(kind, str):
        raise bad("tool_choice", 'must be an object: {"type": "auto" | "any" | "tool" | "none"}.')
    out: dict[str, Any] = {}
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise bad("tool_choice.name", "must name the tool the model has to call.")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    else:
        raise bad("tool_choice.type", f"must be auto, any, tool or none (got {brief(kind)}).")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


def streaming(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, bool):
        raise bad("stream", "must be true or false.")
    if not value:
        return {"stream": False}
    return {"stream": True, "stream_options": {"include_usage": True}}
