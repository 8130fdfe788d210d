"""The tools of a Responses request as chat tools, and their names back again. Pure.

A ``function`` tool is flattened Responses-style (``{"type": "function", "name", "parameters"}``);
chat nests it (``{"type": "function", "function": {...}}``). A ``namespace`` tool (Codex CLI
groups an MCP server's tools in one) holds functions: each becomes the chat function
``<namespace>__<name>`` (the namespace's trailing and the name's leading underscores trimmed, as
Codex CLI itself flattens them), and ``names`` maps every such flat name back to its namespace
and name, so the answer's ``function_call`` items carry both again. Every other tool type
(``web_search``, ``file_search``, ``code_interpreter``, ``computer_use_preview``,
``image_generation``, ``mcp``, ``custom``, …) is run by OpenAI's servers or needs a grammar a chat
worker lacks: ``hosted == "drop"`` leaves it out and names it in ``dropped``; ``"reject"`` is a 400
naming every such tool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest, shown

SEPARATOR = "__"
CHOICES = frozenset({"auto", "none", "required"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/-]")  # what a tool's label may hold in a header
MAX_LABEL = 64


@dataclass(frozen=True, slots=True)
class Tools:
    """The chat tools and tool choice, flat names → (namespace, name), the tools left out."""

    chat: list[dict[str, Any]]
    names: dict[str, tuple[str, str]]
    dropped: tuple[str, ...]
    choice: object = None  # the chat tool_choice (None: the worker's default)


NO_TOOLS = Tools([], {}, ())


def flat_name(namespace: str, name: str) -> str:
    """The chat function name of ``name`` in ``namespace``."""
    return namespace.rstrip("_") + SEPARATOR + name.lstrip("_")


def label(tool: dict[str, Any]) -> str:
    """How a dropped tool is named: its type, and its name when it has one (header-safe)."""
    kind, name = tool.get("type"), tool.get("name")
    text = str(kind) if isinstance(kind, str) else "tool"
    if isinstance(name, str) and name:
        text += ":" + name
    return _UNSAFE.sub("_", text)[:MAX_LABEL]


def tools_of(tools: object, choice: object, hosted: str) -> Tools:
    """The chat side of ``tools`` and ``tool_choice``; ``hosted``: ``drop`` or ``reject``."""
    if tools is None or tools == []:
        if choice is None:
            return NO_TOOLS  # the commonest request: no tools at all
        tools = []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be a list of tools.", param="tools")
    chat: list[dict[str, Any]] = []
    names: dict[str, tuple[str, str]] = {}
    dropped: list[str] = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or not isinstance(kind, str):
            raise BadRequest(f"'tools[{i}]' must be an object with a 'type'.", param=f"tools[{i}]")
        if kind == "function":
            chat.append(_function(tool, f"tools[{i}]"))
        elif kind == "namespace":
            _namespace(tool, f"tools[{i}]", chat, names, dropped)
        else:
            dropped.append(label(tool))
    _unique(chat, names)
    out = Tools(chat, names, tuple(dict.fromkeys(dropped)))
    out = _choose(choice, out)
    if hosted == "reject" and out.dropped:
        raise BadRequest(
            f"'tools' holds tools a chat worker cannot run: {', '.join(out.dropped)}; remove "
            "them (this gateway refuses them: responses.hosted_tools is reject).",
            param="tools",
        )
    return out


def _function(tool: dict[str, Any], param: str, name: str | None = None) -> dict[str, Any]:
    own = tool.get("name")
    if not isinstance(own, str) or not own:
        raise BadRequest(f"'{param}' (function) needs a 'name' string.", param=param)
    function: dict[str, Any] = {"name": name or own}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _namespace(
    tool: dict[str, Any],
    param: str,
    chat: list[dict[str, Any]],
    names: dict[str, tuple[str, str]],
    dropped: list[str],
) -> None:
    namespace, inner = tool.get("name"), tool.get("tools")
    if not isinstance(namespace, str) or not namespace or not isinstance(inner, list):
        raise BadRequest(
            f"'{param}' (namespace) needs a 'name' string and a 'tools' list.", param=param
        )
    for j, member in enumerate(inner):
        where = f"{param}.tools[{j}]"
        if not isinstance(member, dict) or not isinstance(member.get("type"), str):
            raise BadRequest(f"'{where}' must be an object with a 'type'.", param=where)
        if member["type"] != "function":
            dropped.append(_UNSAFE.sub("_", namespace)[:MAX_LABEL] + "." + label(member))
            continue
        own = member.get("name")
        flat = flat_name(namespace, own) if isinstance(own, str) and own else None
        chat.append(_function(member, where, flat))
        if flat is not None:
            names[flat] = (namespace, str(own))


def _unique(chat: list[dict[str, Any]], names: dict[str, tuple[str, str]]) -> None:
    """A namespaced tool's flat name must name nothing else (it could not be mapped back)."""
    seen: set[str] = set()
    for tool in chat:
        name = tool["function"]["name"]
        if name in seen and name in names:
            namespace, own = names[name]
            raise BadRequest(
                f"'tools': '{shown(own)}' of namespace '{shown(namespace)}' is sent to the "
                f"model as '{shown(name)}', which another tool is named too; rename one.",
                param="tools",
            )
        seen.add(name)


def _choose(choice: object, tools: Tools) -> Tools:
    """``tool_choice`` as chat's (an ``allowed_tools`` choice narrows the tools)."""
    if choice is None or (isinstance(choice, str) and choice in CHOICES):
        return Tools(tools.chat, tools.names, tools.dropped, choice)
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(kind, str):
        raise BadRequest(
            "'tool_choice' must be auto, none, required or an object with a 'type'.",
            param="tool_choice",
        )
    if kind == "function":
        name, namespace = choice.get("name"), choice.get("namespace")
        if not isinstance(name, str) or not name:
            raise BadRequest("'tool_choice' (function) needs a 'name'.", param="tool_choice")
        if isinstance(namespace, str) and namespace:
            name = flat_name(namespace, name)
        named = {"type": "function", "function": {"name": name}}
        return Tools(tools.chat, tools.names, tools.dropped, named)
    if kind == "allowed_tools":
        return _allowed(choice, tools)
    # A hosted tool forced: it is not there to force (dropped), so the worker chooses.
    dropped = tools.dropped + ((label(choice),) if label(choice) not in tools.dropped else ())
    return Tools(tools.chat, tools.names, dropped, None)


def _allowed(choice: dict[str, Any], tools: Tools) -> Tools:
    mode, allowed = choice.get("mode", "auto"), choice.get("tools")
    if mode not in ("auto", "required") or not isinstance(allowed, list):
        raise BadRequest(
            "'tool_choice' (allowed_tools) needs a 'mode' (auto or required) and a 'tools' list.",
            param="tool_choice",
        )
    wanted = set()
    for entry in allowed:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            namespace = entry.get("namespace")
            name = entry["name"]
            wanted.add(flat_name(namespace, name) if isinstance(namespace, str) else name)
    chat = [tool for tool in tools.chat if tool["function"]["name"] in wanted]
    return Tools(chat, tools.names, tools.dropped, mode if chat else None)
