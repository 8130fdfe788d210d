"""The admin API on the admin listener (SPEC 8): ``/admin/keys...`` for any owner, owner plans,
usage summaries and reload, behind ``Authorization: Bearer <admin.token>``."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.runtime import Runtime


def middlewares(runtime: Runtime) -> list[Middleware]:
    """The admin listener's middleware stack (error rendering, token check)."""
    return []


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """Register the token-protected admin routes."""
