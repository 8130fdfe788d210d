"""Hostile request paths (issue 14, item 2; docs/api.md "Paths").

Pure properties of ``gateway.paths`` over arbitrary paths and bytes: normalization is idempotent
on its wire form, a path normalized under a route's prefix never leaves it on the way upstream
(whatever the backend resolves), nothing but ``PathError`` is ever raised. Then a real gateway
over real sockets: no request target yields a 5xx, and with no key the backend never sees a path
outside the one ``auth: none`` prefix; and each bypass the issue reported, as a regression.
"""

from __future__ import annotations

import asyncio
import posixpath
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from gateway.paths import PathError, canonical, encode, is_normal, is_plain, normalize
from gateway.server import Server
from tests.clients import AUTH
from tests.conftest import gateway_yaml

# -- a raw HTTP/1.1 client: the target goes on the wire byte for byte -------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names; the last line of a repeated header
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def http(
    port: int,
    target: bytes | str,
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    timeout: float = 10.0,
) -> Answer:
    """One request on a fresh connection (``Connection: close``); blocking: call it from a
    thread (``asyncio.to_thread``) while the gateway serves in the loop."""
    raw = target.encode("latin-1") if isinstance(target, str) else target
    lines = [f"{method} ".encode() + raw + b" HTTP/1.1", b"Host: gw", b"Connection: close"]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers or []]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    if fields.get("transfer-encoding") == "chunked":
        body = _dechunked(body)
    return Answer(int(status_line.split(" ")[1]), fields, body)


def _dechunked(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


async def ahttp(port: int, target: bytes | str, **kw: Any) -> Answer:
    return await asyncio.to_thread(http, port, target, **kw)


# -- pure properties ----------------------------------------------------------------------


def latin1(raw: bytes) -> str:
    return raw.decode("latin-1")


# Pieces that mean something to a normalizer, a decoder or a backend, mixed with plain text.
TOKENS = st.sampled_from(
    [
        "..", ".", "", "%2e", "%2E", "%2e%2e", ".%2e", "%2e.", "%252e%252e", "%2f", "%2F",
        "%5c", "%5C", "\\", "%00", "\x00", "%25", "%", "%4", "%zz", "%ff", "%c3%a9", "%C0%AF",
        ";", "..;", ";x=1", "%3b", "%3F", "%23", "?", "#", "~", "%7E", "a b", "é", "files",
        "auth", "admin", "keys", "api",
    ]
)  # fmt: skip
SEGMENTS = st.lists(st.one_of(TOKENS, st.text(max_size=6)), max_size=10)
PATHS = st.one_of(
    SEGMENTS.map(lambda parts: "/" + "/".join(parts)),
    st.binary(max_size=40).map(lambda raw: "/" + latin1(raw)),
)
PREFIXES = ("/api/auth/", "/api/files/", "/v1/")
VISIBLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=6)


def backend_views(wire: str) -> list[str]:
    """Where backends of a few kinds resolve a wire path: decode then resolve dots; split off
    ``;`` parameters per raw segment first (Tomcat); take backslashes for slashes (Windows)."""
    tomcat = "/".join(unquote(s.split(";", 1)[0]) for s in wire.split("/"))
    decoded = unquote(wire)
    return [posixpath.normpath(p) for p in (decoded, tomcat, decoded.replace("\\", "/"))]


def within(path: str, prefix: str) -> bool:
    stem = prefix.rstrip("/")
    return path == stem or path.startswith(stem + "/")


@given(PATHS)
def test_normalization_is_idempotent_and_only_refuses(raw: str) -> None:
    try:
        path = normalize(raw)
    except PathError:
        return
    wire = encode(path)
    assert canonical(wire) == wire
    assert normalize(wire) == path
    assert is_normal(path)
    assert URL.build(path=wire, encoded=True).path == path  # what aiohttp's handlers read


@given(PATHS)
def test_an_already_plain_path_is_left_alone(raw: str) -> None:
    if is_plain(raw):
        assert normalize(raw) == raw


@given(st.sampled_from(PREFIXES), PATHS)
def test_a_path_under_a_prefix_stays_under_it_upstream(prefix: str, tail: str) -> None:
    try:
        path = normalize(prefix + tail)
    except PathError:
        return
    if not path.startswith(prefix):
        return  # another route's (or none): the gateway matches it there
    wire = "/base" + encode(path)
    sent = URL.build(scheme="http", authority="backend:1", path=wire, encoded=True)
    assert sent.raw_path == wire  # the client library sends it unchanged
    assert all(within(view, "/base" + prefix) for view in backend_views(wire)), wire
    assert normalize(wire) == "/base" + path


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/..", "climbs above the root"),
        ("/a/../../b", "climbs above the root"),
        ("/a/%2e%2e/%2E./b", "climbs above the root"),
        ("/a%2fb", "encoded slash"),
        ("/a%2Fb", "encoded slash"),
        ("/a%5cb", "encoded backslash"),
        ("/a\\b", "backslash"),
        ("/a%00b", "NUL"),
        ("/a\x00b", "NUL"),
        ("/a%zz", "malformed"),
        ("/a%ff", "not UTF-8"),
        ("/a%c0%af", "not UTF-8"),  # an overlong "/"
    ],
)
def test_refusals(raw: str, why: str) -> None:
    with pytest.raises(PathError, match=why):
        normalize(raw)


@pytest.mark.parametrize(
    ("raw", "path", "wire"),
    [
        ("/api/auth/../files/secret", "/api/files/secret", "/api/files/secret"),
        ("/api/auth/%2e%2e/files/secret", "/api/files/secret", "/api/files/secret"),
        ("/a//b///c", "/a/b/c", "/a/b/c"),
        ("/a/./b/.", "/a/b/", "/a/b/"),
        ("/a/b/..", "/a/", "/a/"),
        ("//", "/", "/"),
        ("/%7Euser/x%20y", "/~user/x y", "/~user/x%20y"),
        ("/a/..;/b", "/a/..;/b", "/a/..%3B/b"),  # a literal segment, never a path parameter
        ("/a%3Fb%23c", "/a?b#c", "/a%3Fb%23c"),
        ("/%252e%252e/x", "/%2e%2e/x", "/%252e%252e/x"),  # decoded once, not twice
        ("/caf%C3%A9", "/café", "/caf%C3%A9"),
    ],
)
def test_examples(raw: str, path: str, wire: str) -> None:
    assert normalize(raw) == path
    assert encode(path) == wire


# -- a real gateway -----------------------------------------------------------------------


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[str]]]:
    """A backend that records each request's target exactly as it came off the wire."""
    seen: list[str] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        seen.append(request.raw_path)
        return web.json_response({"target": request.raw_path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


ROUTES = (
    "routes:\n"
    "  - {prefix: /api/auth/, upstream: portal, auth: none, ip_rpm: 3}\n"
    "  - {prefix: /api/files/, upstream: portal, auth: key}\n"
    "  - {prefix: /api/public/, upstream: portal, auth: optional}\n"
)


@pytest.fixture
async def portal(gateway_factory: Any, recorder: tuple[str, list[str]]) -> Server:
    server: Server = await gateway_factory(gateway_yaml({"portal": recorder[0]}, {}, extra=ROUTES))
    return server


def refused(answer: Answer) -> bool:
    error = answer.json()["error"]
    return (
        answer.status == 400 and error["code"] == "invalid_request" and "path" in (error["message"])
    )


async def test_a_dot_segment_cannot_reach_a_keyed_route_without_a_key(
    portal: Server, recorder: tuple[str, list[str]]
) -> None:
    """Was: the backend got GET /api/files/secret, no key asked."""
    for target in ("/api/auth/../files/secret", "/api/auth/%2e%2e/files/secret"):
        answer = await ahttp(portal.port, target)
        assert answer.status == 401, (target, answer)
        assert answer.json()["error"]["code"] == "invalid_api_key"
    assert recorder[1] == []


async def test_a_dot_segment_cannot_leave_the_routes(
    portal: Server, recorder: tuple[str, list[str]]
) -> None:
    """Was: the backend got GET /admin/keys through /api/auth/."""
    answer = await ahttp(portal.port, "/api/auth/../../admin/keys")
    assert answer.status == 404
    assert answer.json()["error"]["code"] == "not_found"
    assert recorder[1] == []


async def test_a_dot_segment_cannot_dodge_a_routes_ip_rpm(
    portal: Server, recorder: tuple[str, list[str]]
) -> None:
    """Was: through /api/files/ (a key, no ip_rpm) the login was never rate limited."""
    statuses = []
    for _ in range(5):
        answer = await ahttp(
            portal.port, "/api/files/%2e%2e/auth/login", headers=list(AUTH.items())
        )
        statuses.append(answer.status)
    assert statuses == [200, 200, 200, 429, 429]
    assert recorder[1] == ["/api/auth/login"] * 3


@pytest.mark.parametrize(
    "target",
    [
        "/api/auth/..%2f..%2fadmin/keys",
        "/api/auth/x%2Fy",
        "/api/auth/x%5cy",
        "/api/auth/x\\y",
        "/api/auth/x%00y",
        "/api/auth/../../../x",
        "/api/auth/%ff",
        "/v1/chat/%2e%2e/%2e%2e/..",
    ],
)
async def test_refused_paths_get_a_json_400(
    portal: Server, recorder: tuple[str, list[str]], target: str
) -> None:
    answer = await ahttp(portal.port, target, headers=[("anthropic-version", "2023-06-01")])
    assert answer.status == 400
    body = answer.json()  # the request's dialect, as every refusal
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "path" in body["error"]["message"] and target not in body["error"]["message"]
    assert answer.headers["x-request-id"].startswith("req_")
    assert answer.headers["x-content-type-options"] == "nosniff"
    answer = await ahttp(portal.port, target)
    assert refused(answer)
    assert recorder[1] == []


async def test_the_backend_gets_exactly_the_matched_path(
    portal: Server, recorder: tuple[str, list[str]]
) -> None:
    """Normalized once; segments re-encoded in one form; the query byte for byte (an
    ``auth: optional`` route, no ``ip_rpm``)."""
    cases = {
        "/api/public/a/./b//c/%7Euser/x%20y;z?q=%2F..&r=/../x": (
            "/api/public/a/b/c/~user/x%20y%3Bz?q=%2F..&r=/../x"
        ),
        "/api/public/x/../%2e/y/": "/api/public/y/",
        "/api/public/%252e%252e/admin": "/api/public/%252e%252e/admin",
        "/api/public/caf%c3%a9/%3F%23": "/api/public/caf%C3%A9/%3F%23",
        '/api/public/a"<>{}|^`': "/api/public/a%22%3C%3E%7B%7D%7C%5E%60",
        "http://elsewhere/api/auth/../public/abs": "/api/public/abs",
    }
    for target, expected in cases.items():
        answer = await ahttp(portal.port, target)
        assert answer.status == 200, (target, answer)
        assert answer.json() == {"target": expected}
    assert recorder[1] == list(cases.values())


async def test_no_request_path_yields_a_5xx(
    portal: Server, recorder: tuple[str, list[str]]
) -> None:
    """Arbitrary targets written on the socket: every answer is below 500, and without a key
    the backend only ever sees paths under the one ``auth: none`` prefix."""

    @settings(max_examples=400, suppress_health_check=list(HealthCheck), database=None)
    @given(
        st.sampled_from(["/api/auth/", "/api/files/", "/api/public/", "/v1/", "/"]),
        st.lists(st.one_of(TOKENS, VISIBLE, st.binary(max_size=8).map(latin1))),
        st.sampled_from(["", "?a=1", "?q=%2F../..", "#f"]),
    )
    def probe(prefix: str, segments: list[str], query: str) -> None:
        target = (prefix + "/".join(segments) + query).encode("latin-1")
        answer = http(portal.port, target.replace(b" ", b"%20"))
        assert answer.status < 500, (target, answer)
        if answer.status == 400 and answer.body.startswith(b"{"):
            assert answer.json()["error"]["code"] in ("invalid_request", "bad_request")

    await asyncio.to_thread(probe)
    for seen in recorder[1]:
        path = normalize(seen.split("?", 1)[0])
        assert path.startswith(("/api/auth/", "/api/public/")), seen
        assert encode(path) == seen.split("?", 1)[0]  # the wire form, nothing else
