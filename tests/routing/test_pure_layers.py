"""The routing modules that decide (the ring, the affinity key, the failure kinds) are pure:
the standard library, orjson and other pure modules only; no aiohttp, no I/O. The services
(balancer, chain, signals, discovery, health) never import the HTTP layer."""

from __future__ import annotations

import sys

from tests.test_layers import HTTP_PREFIXES, PURE, PURE_THIRD_PARTY, ROOT, imports

ROUTING_PURE = {"gateway.routing.ring", "gateway.routing.affinity", "gateway.routing.retry"}
ROUTING_SERVICES = {
    "gateway.routing.balancer",
    "gateway.routing.chain",
    "gateway.routing.signals",
    "gateway.routing.discovery",
    "gateway.routing.health",
}


def imported(module: str) -> set[str]:
    return imports(ROOT.parent / (module.replace(".", "/") + ".py"))


def test_the_deciding_modules_are_pure() -> None:
    pure = PURE | ROUTING_PURE
    for module in sorted(ROUTING_PURE):
        for target in imported(module):
            top = target.split(".")[0]
            if top == "gateway":
                base = target if target in pure else target.rsplit(".", 1)[0]
                assert base in pure, f"{module} (pure) imports {target}"
            else:
                assert top in set(sys.stdlib_module_names) | PURE_THIRD_PARTY, (module, target)


def test_the_services_stay_out_of_the_http_layer() -> None:
    for module in sorted(ROUTING_SERVICES):
        for target in imported(module):
            assert not target.startswith(HTTP_PREFIXES), f"{module} imports {target}"
            assert not target.startswith("aiohttp"), f"{module} imports {target}"
