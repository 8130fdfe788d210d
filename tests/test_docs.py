"""The docs cannot drift from the code: every configuration key of the schema is documented in
``docs/configuration.md`` and every documented key exists, with the default the loader really
applies; every route of both listeners is in ``docs/api.md``; every metric, access-log field and
restart-only section is in ``docs/operations.md``.

Keys are walked from the dataclasses of ``gateway.config.schema``: nested dataclasses are
sections, ``dict[str, X]`` fields are named entries (``upstreams.<name>.url``), ``tuple[X, ...]``
of dataclasses are lists (``routes[].prefix``). The YAML names are the field names (the loader
reads each field under its own name); the fields that are not YAML keys are listed in
``NOT_KEYS``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import types
import typing
from typing import Any

import pytest
import yaml

from gateway.app import build_runtime, create_admin_app, create_app
from gateway.config import schema
from gateway.config.load import ConfigError, parse_text
from gateway.config.reload import RESTART_SECTIONS
from gateway.metrics import Metrics
from gateway.proxy.exchange import Exchange
from gateway.web.observe import Observer

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
CONFIGURATION = DOCS / "configuration.md"

# Fields of the schema that are not YAML keys: the entry's name is its mapping key, and the
# source is the file the config came from.
NOT_KEYS = {
    (schema.Config, "source"),
    (schema.Plan, "name"),
    (schema.Upstream, "name"),
    (schema.Model, "name"),
}
# Sections that are optional as a whole (present or not means something): documented themselves.
OPTIONAL_SECTIONS = {"listen.tls", "mock_worker"}

# A valid config with one entry of every named and listed section, and the optional sections
# present, so that every documented key has a place to be set.
SKELETON = f"""
upstreams: {{u: {{url: "http://127.0.0.1:1"}}}}
models: {{m: {{upstreams: [u]}}}}
plans: {{free: {{}}}}
keys: {{static: [{{id: k, owner: o, sha256: "{"0" * 64}"}}]}}
routes: [{{prefix: /p/, upstream: u}}]
mock_worker: {{}}
alerts: {{webhooks: [{{url: "http://127.0.0.1:1/hook", secret: s}}]}}
"""
ENTRY = {"<name>": {"upstreams": "u", "models": "m", "plans": "free"}}
LIST_SECTIONS = {"keys.static", "routes", "alerts.webhooks"}


def _is_dataclass_type(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (directly or as ``X | None``), if any."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        found = [a for a in typing.get_args(hint) if _is_dataclass_type(a)]
        return found[0] if found else None
    return hint if _is_dataclass_type(hint) else None


def schema_keys(cls: type = schema.Config, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if (cls, f.name) in NOT_KEYS:
            continue
        path = f"{prefix}{f.name}"
        hint = hints[f.name]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        nested = _dataclass_of(hint)
        if nested is not None:
            if path in OPTIONAL_SECTIONS:
                keys.add(path)
            keys |= schema_keys(nested, f"{path}.")
        elif origin is dict and _is_dataclass_type(args[1]):
            keys |= schema_keys(args[1], f"{path}.<name>.")
        elif origin is tuple and args and _is_dataclass_type(args[0]):
            keys.add(path)
            keys |= schema_keys(args[0], f"{path}[].")
        else:
            keys.add(path)
    return keys


def documented() -> dict[str, str]:
    """Documented key → its default cell, from the tables of configuration.md."""
    out: dict[str, str] = {}
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        match = re.fullmatch(r"`([a-z_][a-z0-9_.<>\[\]]*)`", cells[0]) if len(cells) == 4 else None
        if match:
            assert match.group(1) not in out, f"{match.group(1)} documented twice"
            out[match.group(1)] = cells[2]
    return out


def test_every_schema_key_is_documented() -> None:
    missing = sorted(schema_keys() - set(documented()))
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_every_documented_key_exists() -> None:
    unknown = sorted(set(documented()) - schema_keys())
    assert not unknown, f"docs/configuration.md documents keys the loader lacks: {unknown}"


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    """Put ``value`` at the dotted ``key`` of a parsed YAML tree (``<name>``/``[]``: the
    skeleton's entry)."""
    parts = key.replace("[]", ".[]").split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if part == "<name>":
            part = ENTRY["<name>"][parts[i - 1]]
        node = node[0] if part == "[]" else node.setdefault(part, {})
    node[parts[-1]] = value


def _get(config: schema.Config, key: str) -> Any:
    parts = key.replace("[]", ".[]").split(".")
    value: Any = config
    for i, part in enumerate(parts):
        if part == "<name>":
            value = value[ENTRY["<name>"][parts[i - 1]]]
        elif part == "[]":
            value = value[0]
        else:
            value = getattr(value, part)
    return value


def _literal(cell: str) -> tuple[bool, Any]:
    """A default cell that is one YAML value in backticks, parsed; else (False, None)."""
    match = re.fullmatch(r"`([^`]*)`", cell)
    if not match:
        return False, None
    return True, yaml.safe_load(match.group(1))


@pytest.mark.parametrize("key", sorted(documented()))
def test_documented_default_is_the_loaders(key: str) -> None:
    """Setting a key to its documented default changes nothing, and the loader accepts the
    key under that YAML name."""
    literal, value = _literal(documented()[key])
    if not literal:
        cell = documented()[key]
        assert cell.startswith(("required", "absent", "the ")), f"{key}: default {cell!r}"
        return
    base = yaml.safe_load(SKELETON)
    if key in LIST_SECTIONS:  # compare with the list left out, not with the skeleton's entry
        parent, _, name = key.rpartition(".")
        (base[parent] if parent else base).pop(name)
    plain = parse_text(yaml.safe_dump(base), "skeleton.yaml", env={})
    _set(base, key, value)
    changed = parse_text(yaml.safe_dump(base), "skeleton.yaml", env={})
    assert _get(changed, key) == _get(plain, key), f"{key}: documented default {value!r}"


def test_required_keys_are_required() -> None:
    for key, cell in documented().items():
        if not cell.startswith("required") or key.startswith("listen.tls."):
            continue
        tree = yaml.safe_load(SKELETON)
        parts = key.replace("[]", ".[]").split(".")
        parent = tree
        for i, part in enumerate(parts[:-1]):
            if part == "<name>":
                part = ENTRY["<name>"][parts[i - 1]]
            parent = parent[0] if part == "[]" else parent[part]
        parent.pop(parts[-1], None)
        with pytest.raises(ConfigError, match=re.escape(parts[-1])):
            parse_text(yaml.safe_dump(tree), "skeleton.yaml", env={})


# --- api.md ------------------------------------------------------------------------------------
async def test_every_route_is_in_the_api_doc() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    config = parse_text(SKELETON, "skeleton.yaml", env={})
    runtime = build_runtime(config)
    routes = set()
    for app in (create_app(runtime), create_admin_app(runtime)):
        for route in app.router.routes():
            canonical = route.resource.canonical if route.resource else ""
            if route.method in ("HEAD", "*") or canonical.startswith("/p/"):
                continue  # HEAD mirrors GET; /p/ is the skeleton's pass-through route
            routes.add((route.method, re.sub(r"\{(\w+)\}", r":\1", canonical)))
    missing = sorted(
        f"{method} {path}" for method, path in routes if f"`{method} {path}`" not in text
    )
    assert not missing, f"docs/api.md lacks {missing}"


# --- operations.md -----------------------------------------------------------------------------
def test_every_metric_is_in_the_operations_doc() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"docs/operations.md lacks the metrics {missing}"


def test_every_access_log_field_is_in_the_operations_doc() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    request = types.SimpleNamespace(method="POST", path="/v1/chat/completions")
    line = Observer._line(
        request, Exchange("req_1", 0.0, "own_1"), "/v1/chat/completions", 200, 0.1
    )  # type: ignore[arg-type]
    fields = {*line, "time"}  # AccessLog.write adds the time
    missing = sorted(f for f in fields if f"`{f}`" not in text)
    assert not missing, f"docs/operations.md lacks the access-log fields {missing}"


def test_restart_sections_are_in_the_operations_doc() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    reload = text[text.index("## Reload") :]
    reload = reload[: reload.index("\n## ", 1)]
    for section in RESTART_SECTIONS:
        assert f"`{section}`" in reload, section


# --- README and docs stand on their own --------------------------------------------------------
REPO = DOCS.parent
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def _pages() -> list[pathlib.Path]:
    return PAGES


def _outside(page: pathlib.Path) -> list[str]:
    """What a page says or links that lies outside the repository."""
    text = page.read_text(encoding="utf-8")
    found = [m.group(0) for m in re.finditer(r"\bSPEC\b[^\n]{0,20}|\.\./shared\S*", text)]
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.split("#")[0]
        if re.match(r"[a-z]+:", target):
            found.append(target)  # the docs hold what a user needs: no links out
        elif path and not (page.parent / path).resolve().is_relative_to(REPO):
            found.append(target)
        elif path and not (page.parent / path).exists():
            found.append(f"{target} (missing)")
    return found


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_pages_link_only_inside_the_repository_and_cite_no_spec(page: pathlib.Path) -> None:
    assert _outside(page) == [], page.name


def test_anchors_of_links_between_pages_exist() -> None:
    def anchors(page: pathlib.Path) -> set[str]:
        heads = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
        return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in heads}

    for page in _pages():
        for path, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text("utf-8")):
            target = (page.parent / path).resolve() if path else page
            if target.suffix == ".md":
                assert anchor in anchors(target), f"{page.name}: {path}#{anchor}"
