"""The client dialects the gateway speaks (OpenAI chat, Anthropic Messages) and their SSE; here,
the bound every dialect keeps on JSON from outside: how deep a value may nest to be written."""

from __future__ import annotations

from typing import Any

import orjson

# orjson reads 1,024 levels of nested arrays and objects but writes only this many.
MAX_DEPTH = 254


def within_depth(value: object, levels: int) -> bool:
    """Whether ``value`` nests at most ``levels`` arrays and objects deep (a scalar: 0 levels).
    Iterative, so no depth can break it."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth == levels:
            return False
        stack.extend((child, depth + 1) for child in item)
    return True


def loads_object(text: str, levels: int) -> dict[str, Any] | None:
    """``text`` parsed as a JSON object nesting at most ``levels`` deep; None when it is not
    JSON, not an object, or deeper. A text with fewer brackets than ``levels`` is not walked."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    if text.count("{") + text.count("[") <= levels or within_depth(value, levels):
        return value
    return None
