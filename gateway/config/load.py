"""YAML → ``Config``: the only place configuration is a dict; and which file to read.

Every error in a file is collected and reported at once as ``FILE:LINE: dotted.path: message``.
Unknown keys are errors. ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` are replaced from
the environment inside scalar values (an unquoted result is typed again, so ``port: ${PORT:-80}``
is an integer). An unset ``${VAR}`` becomes the empty string, as in a shell; optional settings read
an empty string as "not set". A ``${VAR:?...}`` that is unset is reported once per variable, and
nothing else is reported about the settings it left empty (their errors would only follow from it).

``locate`` picks the file: ``--config``, else ``$GATEWAY_CONFIG``, else ``config/gateway.yaml``
when it exists, else the embedded default shipped inside the package (``gateway/default.yaml``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

import yaml

from gateway.config import sections
from gateway.config.fields import Ctx, Node, Obj
from gateway.config.schema import Config

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}")
DEFAULT_PATH = "config/gateway.yaml"
EMBEDDED = "default.yaml"  # inside the ``gateway`` package


class ConfigError(Exception):
    """A configuration that cannot be used; ``errors`` holds every line to print."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- which file --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """The config file to read; ``embedded`` when none was given or found and the package's own
    default is used."""

    path: str
    embedded: bool = False


def embedded_path() -> str:
    """The path of the default config shipped inside the package."""
    return str(resources.files("gateway").joinpath(EMBEDDED))


def embedded_text() -> str:
    """The default config shipped inside the package, comments and all."""
    return resources.files("gateway").joinpath(EMBEDDED).read_text(encoding="utf-8")


def locate(explicit: str | None, env: Mapping[str, str] | None = None) -> Source:
    """``explicit`` (``--config``), else ``$GATEWAY_CONFIG``, else ``config/gateway.yaml`` of the
    working directory when it exists, else the embedded default."""
    if explicit:
        return Source(explicit)
    named = (os.environ if env is None else env).get("GATEWAY_CONFIG")
    if named:
        return Source(named)
    if os.path.exists(DEFAULT_PATH):
        return Source(DEFAULT_PATH)
    return Source(embedded_path(), embedded=True)


# --- YAML with lines ---------------------------------------------------------------------------


@dataclass
class _Reader:
    """Turns composed YAML into located ``Node``s, substituting ``${...}`` on the way; remembers
    where each required variable was missing."""

    ctx: Ctx
    loader: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""))
    unset: dict[str, list[str]] = field(default_factory=dict)  # variable → paths it left empty

    def substitute(self, text: str, line: int, path: str) -> str:
        def one(match: re.Match[str]) -> str:
            name, op, arg = match.group(1), match.group(2), match.group(3)
            value = self.ctx.env.get(name)
            if op == ":-":
                return value if value else (arg or "")
            if op == ":?" and not value:
                if name not in self.unset:
                    why = arg or "required"
                    self.ctx.error(line, path, f"environment variable {name} is not set: {why}")
                self.unset.setdefault(name, []).append(path)
                return ""
            return value or ""

        return _VAR.sub(one, text)

    def convert(self, node: yaml.Node, path: str) -> Node:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            items: dict[str, Node] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    self.ctx.error(
                        key_node.start_mark.line + 1, path or "(top)", "keys must be strings"
                    )
                    continue
                sub = f"{path}.{key}" if path else key
                if key in items:
                    self.ctx.error(key_node.start_mark.line + 1, sub, "appears twice")
                items[key] = self.convert(value_node, sub)
            return Node(items, line)
        if isinstance(node, yaml.SequenceNode):
            return Node([self.convert(n, f"{path}[{i}]") for i, n in enumerate(node.value)], line)
        assert isinstance(node, yaml.ScalarNode)
        if "${" in node.value:
            text = self.substitute(node.value, line, path)
            tag = node.tag
            if node.style is None:  # an unquoted value is typed again after substitution
                tag = self.loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
            node = yaml.ScalarNode(tag, text, node.start_mark, node.end_mark, node.style)
        return Node(self.loader.construct_object(node, deep=True), line, node.value)

    def only_the_cause(self) -> None:
        """Drop the errors of settings a missing variable left empty: the variable is the one
        thing to fix, and it is reported already."""
        emptied = {p for paths in self.unset.values() for p in paths}
        if emptied:
            self.ctx.errors = [
                e
                for e in self.ctx.errors
                if e[1] not in emptied or e[2].startswith("environment variable ")
            ]


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
    reader = _Reader(ctx)
    root = reader.convert(composed, "") if composed else Node({}, 1)
    config = sections.build(Obj(ctx, root, ""), ctx, source)
    reader.only_the_cause()
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
