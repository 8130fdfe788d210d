"""Model names and aliases → the model's route (upstream model name, pool, pricing). Pure.

Compiled once per configuration into a dict, so resolving a name on the hot path is one lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.schema import (
    DEFAULT_APIS,
    DEFAULT_MAX_TOKENS,
    Config,
    ModelRouting,
    Pricing,
    Retry,
    Upstream,
)

_ROUTING, _RETRY = ModelRouting(), Retry()  # the defaults, shared


@dataclass(frozen=True, slots=True)
class ModelRoute:
    name: str
    upstream_model: str
    upstreams: tuple[Upstream, ...]
    owned_by: str
    pricing: Pricing
    created: int
    aliases: tuple[str, ...] = ()
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    max_output_tokens: int | None = None  # a larger max_tokens is lowered to this
    apis: tuple[str, ...] = DEFAULT_APIS  # what the model serves (``models.<name>.apis``)
    routing: ModelRouting = _ROUTING  # how its upstream is chosen
    fallbacks: tuple[str, ...] = ()  # models tried next, in order, when it fails
    retry: Retry = _RETRY
    # Its first attempt takes a slot (``routing.capacity``): an upstream has a max_concurrency
    # (admission may queue for one), or affinity places on a shared store (``routing.placing``).
    capped: bool = False

    def allowed_by(self, models: frozenset[str] | None) -> bool:
        """May a key whose model allowlist is ``models`` use this model (by any name)?"""
        return models is None or self.name in models or any(a in models for a in self.aliases)


class Router:
    """Resolves a requested model name (or alias) to its ``ModelRoute``."""

    def __init__(self, config: Config, created: int) -> None:
        self._routes: dict[str, ModelRoute] = {}
        self._models: list[ModelRoute] = []
        for model in config.models.values():
            route = ModelRoute(
                name=model.name,
                upstream_model=model.upstream_model,
                upstreams=tuple(config.upstreams[u] for u in model.upstreams),
                owned_by=model.owned_by,
                pricing=model.pricing,
                created=created,
                aliases=model.aliases,
                default_max_tokens=model.default_max_tokens,
                max_output_tokens=model.max_output_tokens,
                apis=model.apis,
                routing=model.routing,
                fallbacks=model.fallbacks,
                retry=model.retry,
                capped=any(config.upstreams[u].max_concurrency for u in model.upstreams)
                or (model.routing.policy == "affinity" and not config.store.is_memory),
            )
            self._models.append(route)
            for name in (model.name, *model.aliases):
                self._routes[name] = route

    def resolve(self, name: str) -> ModelRoute | None:
        return self._routes.get(name)

    def models(self, allowed: frozenset[str] | None = None) -> list[ModelRoute]:
        """The models a key may use (``allowed`` None: every model), in config order."""
        if allowed is None:
            return list(self._models)
        return [m for m in self._models if m.name in allowed]
