"""The public key-management and usage API (SPEC 6, 7): ``/api/keys...`` and
``/api/usage/summary`` for the caller's owner."""

from __future__ import annotations

from aiohttp import web

from gateway.runtime import Runtime


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """Register the public key and usage routes (filled in by the keys API work)."""
