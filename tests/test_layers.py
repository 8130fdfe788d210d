"""The layers of docs/architecture.md, enforced by reading every module's imports.

- pure: stdlib, orjson (a codec, no I/O) and other pure modules only;
- services: pure modules and service libraries; only ``store.redis*`` (and the alert queue's
  ``store.events_redis``) import ``redis``;
- HTTP (``web.*``, ``proxy.*``, ``runtime``): the only importers of ``aiohttp.web``;
- composition (``app``, ``server``, ``workers``, ``ports``, ``cli.*``, ``__main__``): nothing
  outside the composition layer imports them.
"""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "gateway"

PURE = {
    "gateway",
    "gateway.errors",
    "gateway.clock",
    "gateway.netaddr",
    "gateway.paths",
    "gateway.bounded",
    "gateway.config",
    "gateway.config.schema",
    "gateway.config.fields",
    "gateway.auth",
    "gateway.auth.keys",
    "gateway.auth.ip",
    "gateway.records",
    "gateway.limits",
    "gateway.limits.windows",
    "gateway.limits.money",
    "gateway.limits.fairqueue",
    "gateway.routing",
    "gateway.routing.router",
    "gateway.dialects",
    "gateway.dialects.sse",
    "gateway.dialects.openai",
    "gateway.dialects.anthropic",
    "gateway.dialects.anthropic_stream",
    "gateway.dialects.anthropic_answer",
    "gateway.dialects.anthropic_events",
    "gateway.dialects.anthropic_messages",
    "gateway.dialects.anthropic_options",
    "gateway.dialects.relay",
    "gateway.dialects.inputs",
    "gateway.dialects.responses",
    "gateway.dialects.responses_answer",
    "gateway.dialects.responses_native",
    "gateway.dialects.responses_stream",
    "gateway.dialects.responses_tools",
    "gateway.alerts",
    "gateway.alerts.thresholds",
    "gateway.alerts.events",
    "gateway.alerts.upstreams",
}
HTTP_PREFIXES = ("gateway.web", "gateway.proxy", "gateway.runtime", "gateway.mock_worker")
COMPOSITION = {
    "gateway.app",
    "gateway.server",
    "gateway.workers",
    "gateway.ports",
    "gateway.cli",
    "gateway.__main__",
}
COMPOSITION_PACKAGES = ("gateway.cli.",)
PURE_THIRD_PARTY = {"orjson"}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> set[str]:
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in ROOT.rglob("*.py")}


def test_every_module_has_a_layer_and_a_docstring() -> None:
    for path in ROOT.rglob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), path


def test_pure_modules_do_no_io() -> None:
    stdlib = set(sys.stdlib_module_names)
    for name, imported in modules().items():
        if name not in PURE:
            continue
        for target in imported:
            top = target.split(".")[0]
            if top == "gateway":
                base = target if target in PURE else target.rsplit(".", 1)[0]
                assert base in PURE, f"{name} (pure) imports {target}"
            else:
                assert top in stdlib | PURE_THIRD_PARTY, f"{name} (pure) imports {target}"


def composition(name: str) -> bool:
    return name in COMPOSITION or name.startswith(COMPOSITION_PACKAGES)


def test_only_http_modules_import_aiohttp_web() -> None:
    for name, imported in modules().items():
        if any(t == "aiohttp.web" or t.startswith("aiohttp.web.") for t in imported):
            assert name.startswith(HTTP_PREFIXES) or composition(name), name


def test_only_the_redis_store_imports_redis() -> None:
    for name, imported in modules().items():
        if any(t == "redis" or t.startswith("redis.") for t in imported):
            assert name.startswith("gateway.store."), name


def test_nothing_imports_the_composition_layer() -> None:
    for name, imported in modules().items():
        if composition(name):
            continue
        for target in imported:
            assert not composition(target), f"{name} imports {target}"
            assert not composition(target.rsplit(".", 1)[0]), f"{name} imports {target}"


def test_services_do_not_import_http() -> None:
    for name, imported in modules().items():
        if name in PURE or name.startswith(HTTP_PREFIXES) or composition(name):
            continue
        for target in imported:
            assert not target.startswith(HTTP_PREFIXES), f"{name} (service) imports {target}"
