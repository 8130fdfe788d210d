"""Readers of configuration values: a located YAML ``Node``, the ``Obj`` that takes a mapping's
settings by name (what is left over is an error), and the scalar parsers.

A parser takes a ``Node`` and returns a value or raises ``Invalid`` with a message that completes
``dotted.path: ``. Pure: no I/O.

Defaults are written once, in the dataclasses of ``config.schema``: a reader passes a dataclass
only the settings the file gives (``Obj.settings``), and its constructor fills in the rest;
where a reader needs a default as a value, ``default`` reads it from the dataclass.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, date, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


@dataclass(slots=True)
class Node:
    """A YAML value with the line it stands on (1-based)."""

    value: Any  # dict[str, Node] | list[Node] | scalar
    line: int
    text: str | None = None  # a scalar's source text (after ${VAR}), for settings that are text


class Invalid(Exception):
    """Raised by a field parser; the message completes ``path: ``."""


class Ctx:
    """Collects errors while one file is read."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env
        self.errors: list[tuple[int, str, str]] = []

    def error(self, line: int, path: str, message: str) -> None:
        self.errors.append((line, path, message))

    def lines(self) -> list[str]:
        return [f"{self.source}:{ln}: {p}: {m}" for ln, p, m in sorted(self.errors)]


class Obj:
    """A mapping being read: fields are taken by name, what is left over is an error."""

    def __init__(self, ctx: Ctx, node: Node | None, path: str) -> None:
        self.ctx = ctx
        self.path = path
        self.line = node.line if node is not None else 0
        self.items: dict[str, Node] = {}
        if node is not None and node.value is not None:
            if isinstance(node.value, dict):
                self.items = node.value
            else:
                ctx.error(node.line, path or "(top)", "expected a mapping of settings")
        self.taken: set[str] = set()

    def sub(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.items

    def node(self, name: str) -> Node | None:
        self.taken.add(name)
        return self.items.get(name)

    def get(self, name: str, parse: Callable[[Node], T], default: T) -> T:
        node = self.node(name)
        if node is None:
            return default
        try:
            return parse(node)
        except Invalid as exc:
            self.ctx.error(node.line, self.sub(name), str(exc))
            return default

    def need(self, name: str, parse: Callable[[Node], T], default: T) -> T:
        if name not in self.items:
            self.ctx.error(self.line, self.sub(name), "is required")
        return self.get(name, parse, default)

    def settings(self, cls: type[Any], **parsers: Callable[[Node], Any]) -> dict[str, Any]:
        """The fields of ``cls`` this mapping sets, each read by its parser, as keywords for
        ``cls``. A setting left out, or invalid (reported), is not among them: the dataclass's
        default stands. A parser named after no field of ``cls`` is a programming error."""
        stray = parsers.keys() - {f.name for f in fields(cls)}
        if stray:
            raise TypeError(f"{cls.__name__} has no field {sorted(stray)[0]!r}")
        out: dict[str, Any] = {}
        for name, parse in parsers.items():
            node = self.node(name)
            if node is None:
                continue
            try:
                out[name] = parse(node)
            except Invalid as exc:
                self.ctx.error(node.line, self.sub(name), str(exc))
        return out

    def obj(self, name: str) -> Obj:
        return Obj(self.ctx, self.node(name), self.sub(name))

    def each(self, name: str, what: str = "a list") -> list[Obj]:
        """The items of the list of mappings ``name``, each as an ``Obj``."""
        node = self.node(name)
        if node is None or node.value is None:
            return []
        if not isinstance(node.value, list):
            self.ctx.error(node.line, self.sub(name), f"expected {what}")
            return []
        return [Obj(self.ctx, item, f"{self.sub(name)}[{i}]") for i, item in enumerate(node.value)]

    def entries(self) -> list[tuple[str, Obj]]:
        """The entries of a mapping of named mappings (``upstreams``, ``models``, ``plans``)."""
        out = []
        for name, node in self.items.items():
            self.taken.add(name)
            if not _NAME.match(name):
                self.ctx.error(node.line, self.sub(name), f"{name!r} is not a valid name")
            out.append((name, Obj(self.ctx, node, self.sub(name))))
        return out

    def done(self) -> None:
        for name, node in self.items.items():
            if name not in self.taken:
                self.ctx.error(node.line, self.sub(name), "unknown setting")


def default(cls: type[Any], name: str) -> Any:
    """The default of field ``name`` of the dataclass ``cls`` (a ``slots`` dataclass keeps it
    only in its fields, not as a class attribute)."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise TypeError(f"{cls.__name__}.{name} has no default")
    raise TypeError(f"{cls.__name__} has no field {name!r}")


# --- scalar parsers: each takes a Node and returns a value or raises Invalid -------------------


def _plain(value: Any) -> Any:
    """A located value as plain Python, for messages."""
    if isinstance(value, Node):
        return _plain(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _show(value: Any) -> str:
    text = repr(_plain(value))
    return text if len(text) <= 60 else text[:57] + "..."


def p_str(node: Node) -> str:
    """A text setting takes the scalar as written: an unquoted ``token: 0x1f`` (or a ``${VAR}``
    that expands to it) is the text "0x1f", not the number 31."""
    if isinstance(node.value, str):
        return node.value
    if node.text is not None and isinstance(node.value, int | float):
        return node.text
    raise Invalid(f"expected a string, got {_show(node.value)}")


def p_nonempty(node: Node) -> str:
    text = p_str(node)
    if not text:
        raise Invalid("must not be empty")
    return text


def p_name(node: Node) -> str:
    """A name of something the configuration defines or refers to (a key, a model, ...)."""
    text = p_nonempty(node)
    if not _NAME.match(text):
        raise Invalid(f"{text!r} is not a valid name (letters, digits and ._:/@+- only)")
    return text


def p_int(minimum: int = 0, maximum: int | None = None) -> Callable[[Node], int]:
    def parse(node: Node) -> int:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected a whole number ≥ {minimum}, got {_show(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            span = f"from {minimum} to {maximum}" if maximum is not None else f"≥ {minimum}"
            raise Invalid(f"must be {span}, got {value}")
        return value

    return parse


def p_float(minimum: float = 0.0, exclusive: bool = False) -> Callable[[Node], float]:
    def parse(node: Node) -> float:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"expected a number, got {_show(value)}")
        if value < minimum or (exclusive and value == minimum):
            raise Invalid(f"must be {'>' if exclusive else '≥'} {minimum}, got {value}")
        return float(value)

    return parse


def p_bool(node: Node) -> bool:
    if not isinstance(node.value, bool):
        raise Invalid(f"expected true or false, got {_show(node.value)}")
    return node.value


def p_optional(parse: Callable[[Node], T]) -> Callable[[Node], T | None]:
    def optional(node: Node) -> T | None:
        if node.value is None or node.value == "":
            return None
        return parse(node)

    return optional


def p_enum(*choices: str) -> Callable[[Node], str]:
    def parse(node: Node) -> str:
        if node.value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}; got {_show(node.value)}")
        return str(node.value)

    return parse


def p_some(choices: tuple[str, ...], noun: str) -> Callable[[Node], tuple[str, ...]]:
    """A non-empty list of some of ``choices`` (each a ``noun``), kept in their order."""

    def parse(node: Node) -> tuple[str, ...]:
        if not isinstance(node.value, list) or not node.value:
            raise Invalid(f"expected a non-empty list of {', '.join(choices)}")
        values = {p_str(item) for item in node.value}
        bad = sorted(values - set(choices))
        if bad:
            raise Invalid(f"unknown {noun} {bad[0]!r}; use {', '.join(choices)}")
        return tuple(choice for choice in choices if choice in values)

    return parse


def p_list(parse: Callable[[Node], T], ctx: Ctx, path: str) -> Callable[[Node], tuple[T, ...]]:
    """A list whose items are parsed one by one; a bad item is reported at its own line."""

    def parse_list(node: Node) -> tuple[T, ...]:
        if node.value is None:
            return ()
        if not isinstance(node.value, list):
            raise Invalid(f"expected a list, got {_show(node.value)}")
        out: list[T] = []
        for i, item in enumerate(node.value):
            try:
                out.append(parse(item))
            except Invalid as exc:
                ctx.error(item.line, f"{path}[{i}]", str(exc))
        return tuple(out)

    return parse_list


def p_network(node: Node) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = p_str(node).strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Invalid(f"{text!r} is not an IP address or CIDR network") from None


def p_timestamp(node: Node) -> float:
    value = node.value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(f"expected an ISO 8601 time, got {_show(value)}") from None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    raise Invalid(f"expected an ISO 8601 time, got {_show(value)}")


def p_http_url(node: Node) -> str:
    """A base http:// or https:// URL with a host and a sane port (trailing slashes dropped)."""
    text = p_nonempty(node).strip().rstrip("/")
    _check_url(text, f"{text!r} is not an http:// or https:// URL", f"{text!r} has a bad port")
    return text


def p_secret_url(node: Node) -> str:
    """An http:// or https:// URL kept as written, never quoted in a message (a webhook URL
    may carry a token)."""
    text = p_nonempty(node).strip()
    _check_url(text, "expected an http:// or https:// URL with a host", "the URL has a bad port")
    return text


def _check_url(text: str, not_http: str, bad_port: str) -> None:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(not_http)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise Invalid(bad_port) from None
