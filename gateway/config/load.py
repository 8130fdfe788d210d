"""YAML → ``Config``: the only place configuration is a dict.

Every error in a file is collected and reported at once as ``FILE:LINE: dotted.path: message``.
Unknown keys are errors. ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` are replaced from
the environment inside scalar values (an unquoted result is typed again, so ``port: ${PORT:-80}``
is an integer). An unset ``${VAR}`` becomes the empty string, as in a shell; optional settings read
an empty string as "not set".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import yaml

from gateway.config import sections
from gateway.config.fields import Ctx, Node, Obj
from gateway.config.schema import Config

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}")


class ConfigError(Exception):
    """A configuration that cannot be used; ``errors`` holds every line to print."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- YAML with lines ---------------------------------------------------------------------------


def _substitute(text: str, ctx: Ctx, line: int, path: str) -> str:
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = ctx.env.get(name)
        if op == ":-":
            return value if value else (arg or "")
        if op == ":?" and not value:
            ctx.error(line, path, f"environment variable {name} is not set: {arg or 'required'}")
            return ""
        return value or ""

    return _VAR.sub(one, text)


def _convert(node: yaml.Node, ctx: Ctx, loader: yaml.SafeLoader, path: str) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        items: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                ctx.error(key_node.start_mark.line + 1, path or "(top)", "keys must be strings")
                continue
            sub = f"{path}.{key}" if path else key
            if key in items:
                ctx.error(key_node.start_mark.line + 1, sub, "appears twice")
            items[key] = _convert(value_node, ctx, loader, sub)
        return Node(items, line)
    if isinstance(node, yaml.SequenceNode):
        return Node(
            [_convert(n, ctx, loader, f"{path}[{i}]") for i, n in enumerate(node.value)], line
        )
    assert isinstance(node, yaml.ScalarNode)
    if "${" in node.value:
        text = _substitute(node.value, ctx, line, path)
        tag = node.tag
        if node.style is None:  # an unquoted value is typed again after substitution
            tag = loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        node = yaml.ScalarNode(tag, text, node.start_mark, node.end_mark, node.style)
    return Node(loader.construct_object(node, deep=True), line, node.value)


def parse_text(text: str, source: str, env: Mapping[str, str] | None = None) -> Config:
    """Parse and validate one YAML text; raise ``ConfigError`` listing every problem."""
    ctx = Ctx(source, os.environ if env is None else env)
    try:
        composed = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}:{line}: (yaml): {problem}"]) from None
    root = _convert(composed, ctx, yaml.SafeLoader(""), "") if composed else Node({}, 1)
    config = sections.build(Obj(ctx, root, ""), ctx, source)
    if ctx.errors:
        raise ConfigError(ctx.lines())
    return config


def load_file(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a configuration file."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([f"{path}:0: (file): cannot read: {exc.strerror}"]) from None
    return parse_text(text, path, env)
