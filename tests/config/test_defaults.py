"""Every default is written once, in the dataclasses of ``config.schema``: a file that sets
nothing loads exactly them, and every default the tables of docs/configuration.md state is the
dataclass's own, so the loader, the schema and the docs cannot drift apart."""

from __future__ import annotations

import dataclasses
import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
import yaml

from gateway.config import fields as lp
from gateway.config.load import ConfigError, parse_text
from gateway.config.schema import (
    Alerts,
    Config,
    Keys,
    MockWorker,
    Model,
    Plan,
    Route,
    StaticKey,
    Upstream,
    Webhook,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
SHA = "ab" * 32

# Every section present but empty, every entry with its required settings only.
EMPTY_SECTIONS = f"""\
listen: {{}}
admin: {{}}
store: {{}}
network: {{}}
keys:
  static: [{{id: k1, owner: o, sha256: "{SHA}"}}]
plans: {{p: {{}}}}
default_plan: p
auth: {{}}
upstreams: {{u: {{url: "http://127.0.0.1:8000", timeouts: {{}}}}}}
models: {{m: {{upstreams: [u], pricing: {{}}, routing: {{}}, retry: {{}}}}}}
routes: [{{prefix: /x/, upstream: u}}]
log: {{}}
mock_worker: {{}}
alerts: {{webhooks: [{{url: "http://h.test/", secret: s}}]}}
tracing: {{}}
routing: {{}}
responses: {{}}
scheduling: {{}}
"""

# Rows whose default is said in words rather than as a value.
IN_WORDS = {
    "listen.tls.cert": "required with `tls`",
    "listen.tls.key": "required with `tls`",
    "models.<name>.upstream_model": "the model's name",
    "mock_worker": "absent",
}


def test_an_empty_file_loads_the_dataclass_defaults() -> None:
    """With no plans section the one plan is ``free``, itself ``Config``'s default plan."""
    config = parse_text("", "f.yaml", {})
    assert config == Config(plans={"free": Plan("free")}, source="f.yaml")


def test_empty_sections_and_bare_entries_load_the_dataclass_defaults() -> None:
    config = parse_text(EMPTY_SECTIONS, "f.yaml", {})
    assert config == Config(
        keys=Keys(static=(StaticKey("k1", "o", SHA),)),
        plans={"p": Plan("p")},
        default_plan="p",
        upstreams={"u": Upstream("u", "http://127.0.0.1:8000")},
        models={"m": Model("m", ("u",), "m")},
        routes=(Route("/x/", "u"),),
        mock_worker=MockWorker(),
        alerts=Alerts(webhooks=(Webhook("http://h.test/", "s"),)),
        source="f.yaml",
    )


def test_every_bad_setting_of_a_section_is_reported_at_its_line() -> None:
    text = "listen:\n  host: 127.0.0.1\n  port: -1\n  workers: x\n"
    with pytest.raises(ConfigError) as info:
        parse_text(text, "f.yaml", {})
    assert info.value.errors == [
        "f.yaml:3: listen.port: must be from 0 to 65535, got -1",
        "f.yaml:4: listen.workers: expected a whole number ≥ 1, got 'x'",
    ]


def test_a_reader_names_only_fields_of_its_dataclass() -> None:
    obj = lp.Obj(lp.Ctx("f.yaml", {}), None, "listen")
    with pytest.raises(TypeError, match="no field 'prot'"):
        obj.settings(MockWorker, prot=lp.p_int())
    assert lp.default(MockWorker, "port") == 8001
    assert lp.default(Config, "plans") == {}
    with pytest.raises(TypeError, match="no default"):
        lp.default(Plan, "name")


def documented() -> dict[str, str]:
    """``dotted.key`` → the default cell of every row of the docs' settings tables."""
    rows: dict[str, str] = {}
    in_settings = False
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_settings = False
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if cells[:3] == ["key", "type", "default"]:
            in_settings = True
        elif in_settings and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[2]
    return rows


def _dataclass_of(hint: Any) -> type[Any]:
    """The settings dataclass behind a field's type: ``X``, ``X | None``, ``dict[str, X]``,
    ``tuple[X, ...]``."""
    if dataclasses.is_dataclass(hint):
        return hint  # type: ignore[return-value]
    if get_origin(hint) in (types.UnionType, Union, dict, tuple):
        for arg in get_args(hint):
            if dataclasses.is_dataclass(arg):
                return arg  # type: ignore[return-value]
    raise AssertionError(f"no settings dataclass in {hint}")


def owner(key: str) -> tuple[type[Any], str]:
    """The dataclass and field a documented key sets (``plans.<name>.rpm``: ``Plan``, rpm)."""
    cls: type[Any] = Config
    parts = [p.removesuffix("[]") for p in key.split(".") if p != "<name>"]
    for part in parts[:-1]:
        cls = _dataclass_of(get_type_hints(cls)[part])
    names = {f.name for f in dataclasses.fields(cls)}
    assert parts[-1] in names, f"{key}: {cls.__name__} has no field {parts[-1]!r}"
    return cls, parts[-1]


def _same(doc: object, default: object) -> bool:
    if isinstance(default, frozenset):
        return isinstance(doc, list) and {str(x) for x in doc} == {str(x) for x in default}
    if isinstance(default, tuple):
        return isinstance(doc, list) and [str(x) for x in doc] == [str(x) for x in default]
    if default is None or isinstance(default, bool):
        return doc is default
    if isinstance(default, int | float):
        return type(doc) in (int, float) and doc == default
    return doc == default


ROWS = documented()


def test_the_docs_tables_were_read() -> None:
    assert len(ROWS) > 100
    assert ROWS["listen.port"] == "`8080`"


@pytest.mark.parametrize("key", sorted(ROWS))
def test_each_documented_default_is_the_dataclass_default(key: str) -> None:
    cell = ROWS[key]
    cls, name = owner(key)
    if key in IN_WORDS:
        assert cell == IN_WORDS[key]
    elif cell == "required":
        with pytest.raises(TypeError, match="no default"):
            lp.default(cls, name)
    else:
        literal = re.fullmatch(r"`([^`]*)`", cell)
        assert literal, f"{key}: the default {cell!r} is neither a `value` nor 'required'"
        doc, default = yaml.safe_load(literal.group(1)), lp.default(cls, name)
        assert _same(doc, default), f"{key}: the docs say {doc!r}, the schema {default!r}"


def settable(cls: type[Any], prefix: str) -> set[str]:
    """The dotted keys of every field reachable from ``cls``, as the docs write them."""
    keys: set[str] = set()
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.add(key)
        hint = hints[f.name]
        try:
            inner = _dataclass_of(hint)
        except AssertionError:
            continue
        origin = get_origin(hint)
        step = ".<name>." if origin is dict else "[]." if origin is tuple else "."
        keys |= settable(inner, key + step)
    return keys


# Fields no file sets as such: an entry's name is its key in the mapping; ``source`` is the file.
NOT_SETTINGS = {
    "source",
    "plans.<name>.name",
    "upstreams.<name>.name",
    "models.<name>.name",
}


def test_every_setting_of_the_schema_is_documented() -> None:
    missing = settable(Config, "") - NOT_SETTINGS - ROWS.keys()
    missing = {k for k in missing if not any(row.startswith(k + ".") for row in ROWS)}  # sections
    assert not missing, f"settings with no row in docs/configuration.md: {sorted(missing)}"
