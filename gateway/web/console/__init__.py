"""The admin console at ``GET /console`` on the admin listener: a small web app of static files
shipped in the package (``static/``: HTML, CSS and ES modules written for it, no build step, no
third-party code, nothing fetched from the network), and the read-only JSON routes it needs
(``web.admin_console_api``).

The page itself holds no secret and needs no token; everything it shows comes from the admin API
with the token the operator types, which the page keeps in a JavaScript variable for the tab and
sends only as ``Authorization: Bearer`` (never in a URL, a cookie or web storage).

Every console answer carries a strict Content-Security-Policy (no inline script or style, no
other origin, no framing), ``nosniff``, no referrer and no caching. Only the files listed at
start are served: a name is looked up in a dict, never joined to a path.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from gateway.errors import NotFound
from gateway.runtime import Runtime
from gateway.web import admin_console_api

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def load_static() -> dict[str, tuple[bytes, str]]:
    """Every file of ``static/`` with a known type: name → (bytes, content type)."""
    found: dict[str, tuple[bytes, str]] = {}
    for item in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in TYPES:
            found[item.name] = (item.read_bytes(), TYPES[suffix])
    return found


def _answer(body: bytes, content_type: str) -> web.Response:
    response = web.Response(body=body, headers=HEADERS)
    response.headers["Content-Type"] = content_type
    return response


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """``GET /console``, its files under ``/console/static/``, and the console's API."""
    files = load_static()

    async def page(request: web.Request) -> web.StreamResponse:
        return _answer(*files["index.html"])

    async def static(request: web.Request) -> web.StreamResponse:
        found = files.get(request.match_info["name"])
        if found is None:
            raise NotFound("The console has no such file.")
        return _answer(*found)

    app.router.add_get("/console", page, allow_head=False)
    app.router.add_get("/console/static/{name}", static, allow_head=False)
    admin_console_api.add_routes(app, runtime)
