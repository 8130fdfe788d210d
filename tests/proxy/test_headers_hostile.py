"""Hostile header sets over raw sockets (so no client library folds or drops a line): duplicate
field lines of every header the gateway reads — X-Forwarded-For, Authorization, X-API-Key,
Content-Length, Transfer-Encoding, Host, X-Request-ID, anthropic-version, X-Forwarded-Proto — and
odd values of each. Every exchange is bounded by a timeout; none is a 5xx; each gets the status
docs/api.md and RFC 9110/9112 give it, and a smuggled second request never reaches the upstream.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.auth.keys import sha256_hex
from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import GatewayFactory, gateway_yaml
from tests.fakes import FakeUpstream

SECOND_KEY = "second-key-0123456789abcdef01234"
FENCED_KEY = "fenced-key-0123456789abcdef01234"  # only from 203.0.113.7
ALLOWED, OTHER = "203.0.113.7", "198.51.100.5"
BODY = b'{"model":"fake-model","messages":[{"role":"user","content":"hi"}]}'
SANE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
AUTH = f"Authorization: Bearer {TEST_KEY}"


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return orjson.loads(self.body)


@pytest.fixture
async def edge(gateway_factory: GatewayFactory, fake: FakeUpstream) -> Server:
    """The loopback peer is a trusted proxy; three keys: the test key, a second one and one
    fenced to ``ALLOWED``."""
    keys = [
        f"{{id: test, owner: tests, sha256: '{TEST_KEY_SHA}'}}",
        f"{{id: second, owner: tests, sha256: '{sha256_hex(SECOND_KEY)}'}}",
        f"{{id: fenced, owner: tests, sha256: '{sha256_hex(FENCED_KEY)}',"
        f" ip_whitelist: ['{ALLOWED}/32']}}",
    ]
    server: Server = await gateway_factory(
        gateway_yaml(
            {"fake": fake.url},
            extra=f"keys: {{static: [{', '.join(keys)}]}}\n"
            "network: {trusted_proxies: [127.0.0.1/32], header_timeout: 2, hsts: true}\n",
        )
    )
    return server


def request(lines: list[str], body: bytes = BODY, length: bool = True, close: bool = True) -> bytes:
    """A chat request with exactly these header lines (and a Content-Length and Connection: close
    unless told)."""
    head = ["POST /v1/chat/completions HTTP/1.1", *lines]
    if not any(line.lower().startswith("host:") for line in lines):
        head.insert(1, "Host: gw")
    if length:
        head.append(f"Content-Length: {len(body)}")
    if close:
        head.append("Connection: close")
    return "\r\n".join(head).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body


async def exchange(port: int, raw: bytes, wait: float = 5.0) -> list[Answer]:
    """Send ``raw`` and read until the server closes; every answer in it. A server still silent
    after ``wait`` seconds fails the test (a hang)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = b""
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return parse(data)


def parse(data: bytes) -> list[Answer]:
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        first, *lines = head.decode("latin-1").split("\r\n")
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
        status = int(first.split(" ")[1])
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), len(rest))
        length = 0 if status < 200 else length
        if status >= 200:  # an interim answer (100 Continue) is not the answer
            answers.append(Answer(status, headers, rest[:length]))
        data = rest[length:]
    return answers


async def one(port: int, raw: bytes) -> Answer:
    answers = await exchange(port, raw)
    assert len(answers) == 1, answers
    answer = answers[0]
    assert answer.status < 500, answer
    ids = answer.all("X-Request-ID")
    assert len(ids) == 1 and SANE_ID.match(ids[0]), ids
    if answer.status >= 400:
        error = answer.json()
        assert set(error) == {"error"} or set(error) == {"type", "error"}, error
    return answer


# --- credentials (both headers are accepted; sent and different: 401) --------------------

CREDENTIALS = [
    ("authorization twice, same key", [AUTH, AUTH], 200),
    ("authorization twice, different keys", [AUTH, f"Authorization: Bearer {SECOND_KEY}"], 401),
    ("authorization twice, a key and garbage", [AUTH, "Authorization: Bearer nope"], 401),
    ("authorization twice, a key and basic", [AUTH, "Authorization: Basic dXNlcjpwYXNz"], 401),
    ("x-api-key twice, same key", [f"X-API-Key: {TEST_KEY}"] * 2, 200),
    ("x-api-key twice, different", [f"X-API-Key: {TEST_KEY}", f"X-API-Key: {SECOND_KEY}"], 401),
    ("both headers, same key", [AUTH, f"X-API-Key: {TEST_KEY}"], 200),
    ("both headers, different keys", [AUTH, f"X-API-Key: {SECOND_KEY}"], 401),
    (
        "x-api-key thrice, one differs",
        [f"X-API-Key: {SECOND_KEY}"] * 2 + [f"X-API-Key: {TEST_KEY}"],
        401,
    ),
    ("authorization without a key", ["Authorization: Bearer"], 401),
]


@pytest.mark.parametrize(
    ("lines", "status"), [c[1:] for c in CREDENTIALS], ids=[c[0] for c in CREDENTIALS]
)
async def test_credentials_sent_twice(
    edge: Server, fake: FakeUpstream, lines: list[str], status: int
) -> None:
    answer = await one(edge.port, request(lines))
    assert answer.status == status, answer
    for key in (TEST_KEY, SECOND_KEY):
        assert key.encode() not in answer.body
    if status == 401:
        assert answer.json()["error"]["code"] == "invalid_api_key"
        assert fake.seen == []


async def test_a_huge_authorization_is_refused_not_crashed(edge: Server) -> None:
    answer = await one(edge.port, request([f"Authorization: Bearer {'k' * 100_000}"]))
    assert answer.status in (400, 401, 431), answer


# --- framing: Content-Length and Transfer-Encoding (RFC 9112 6.3) --------------------------------

# A second request on the same connection (the last one: it closes the connection). Behind a
# proxy that framed the first request otherwise, it would be a request the proxy never saw.
SMUGGLED = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
CHUNKED = f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n0\r\n\r\n"
LENGTH = f"Content-Length: {len(BODY)}"
TE = "Transfer-Encoding: chunked"
# (what, header lines, whether the body is sent chunked, the statuses RFC 9112 allows)
FRAMING = [
    ("two different lengths", [LENGTH, "Content-Length: 5"], False, {400}),
    ("two different lengths, reversed", ["Content-Length: 5", LENGTH], False, {400}),
    ("a list of two lengths", [f"{LENGTH}, 5"], False, {400}),
    ("the same length twice", [LENGTH, LENGTH], False, {200, 400}),
    ("a list of the same length", [f"{LENGTH}, {len(BODY)}"], False, {200, 400}),
    ("a signed length", [f"Content-Length: +{len(BODY)}"], False, {400}),
    ("a negative length", ["Content-Length: -1"], False, {400}),
    ("a hex length", [f"Content-Length: {hex(len(BODY))}"], False, {400}),
    ("a huge length", ["Content-Length: 99999999999999999999999999"], False, {400, 413}),
    ("chunked alone", [TE], True, {200}),
    ("content-length and chunked", [LENGTH, TE], True, {400}),
    ("chunked and content-length", [TE, LENGTH], True, {400}),
    ("chunked twice", [TE, TE], True, {400}),
    ("chunked, chunked", [f"{TE}, chunked"], True, {400}),
    ("gzip then chunked", ["Transfer-Encoding: gzip, chunked"], True, {400, 501}),
    ("chunked then identity", [TE, "Transfer-Encoding: identity"], True, {400}),
]


@pytest.mark.parametrize(
    ("lines", "chunked", "statuses"), [c[1:] for c in FRAMING], ids=[c[0] for c in FRAMING]
)
async def test_framing_headers_never_desync(
    edge: Server, fake: FakeUpstream, lines: list[str], chunked: bool, statuses: set[int]
) -> None:
    """The request, and a second one after it on the same connection: the status RFC 9112 gives
    the framing; ambiguous framing is refused and the connection closed (the second request is
    never answered); the upstream sees at most the first request, whole."""
    raw = request([AUTH, *lines], CHUNKED if chunked else BODY, length=False, close=False)
    answers = await exchange(edge.port, raw + SMUGGLED)
    first = answers[0]
    assert first.status in statuses, first
    if first.status >= 400:
        assert first.json()["error"]["code"] in (
            "bad_request",
            "invalid_request",
            "not_implemented",
        )
        assert len(answers) == 1, [a.status for a in answers]
        assert fake.seen == []
    else:
        assert [a.status for a in answers] == [first.status, 401]  # the second, keyless
        # the body whole (and held to what was reserved: the model's default limit)
        assert [seen.body for seen in fake.seen] == [{**orjson.loads(BODY), "max_tokens": 4096}]


# --- Host (RFC 9112 3.2: more than one Host line is a 400) ---------------------------------------


@pytest.mark.parametrize(
    "hosts", [["gw", "gw"], ["gw", "evil.example"], ["gw", ""]], ids=["same", "different", "empty"]
)
async def test_two_host_lines_are_a_400(edge: Server, fake: FakeUpstream, hosts: list[str]) -> None:
    answer = await one(edge.port, request([AUTH, *(f"Host: {h}" for h in hosts)]))
    assert answer.status == 400, answer
    assert fake.seen == []


@pytest.mark.parametrize("host", ["evil.example:99999", "a" * 2000, "[::1", "gw/../x", "gw@evil"])
async def test_odd_hosts_are_never_a_500(edge: Server, host: str) -> None:
    answer = await one(edge.port, request([AUTH, f"Host: {host}"]))
    assert answer.status in (200, 400), answer


# --- X-Request-ID (the client's if sane, else a new one) ---------------------------------

ODD_IDS = [
    "a" * 129,
    "a" * 6000,
    "abc\x01def",
    "abc\x7fdef",
    "abc\tdef",
    "abc def",
    "<script>alert(1)</script>",
    "id\udcff\udcfe",  # raw bytes 0xff 0xfe on the wire
    "id\udce2\udc80\udcae",  # U+202E (right-to-left override) as raw UTF-8
    "req_" + "0" * 20 + "\\r\\nX-Injected: 1",
    "",
]


@pytest.mark.parametrize("offered", ODD_IDS, ids=range(len(ODD_IDS)))
async def test_an_insane_request_id_is_never_echoed(
    edge: Server, fake: FakeUpstream, offered: str
) -> None:
    answer = await one(edge.port, request([AUTH, f"X-Request-ID: {offered}"]))
    assert answer.status in (200, 400), answer
    (label,) = answer.all("X-Request-ID")
    assert label != offered.strip() and label.startswith("req_"), label
    assert answer.all("X-Injected") == []
    for seen in fake.seen:
        assert seen.headers["X-Request-ID"] == label


async def test_two_request_id_lines_give_one_sane_label(edge: Server, fake: FakeUpstream) -> None:
    for pair in (["one-id", "two-id"], ["one-id", "bad id"], ["bad id", "one-id"], ["x"] * 2):
        answer = await one(edge.port, request([AUTH, *(f"X-Request-ID: {v}" for v in pair)]))
        assert answer.status == 200, answer
        (label,) = answer.all("X-Request-ID")
        assert label in pair or label.startswith("req_"), (pair, label)
        assert fake.seen[-1].headers["X-Request-ID"] == label
        assert len([k for k in fake.seen[-1].headers if k.lower() == "x-request-id"]) == 1


# --- anthropic-version (its presence makes the request Anthropic) ------------------------


async def test_two_anthropic_version_lines_still_speak_anthropic(edge: Server) -> None:
    lines = [AUTH, "anthropic-version: 2023-06-01", "anthropic-version: 1999-01-01"]
    body = b'{"model":"fake-model","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}'
    answer = await one(edge.port, request(lines, body))
    assert answer.status == 200 and answer.json()["type"] == "message", answer
    refused = await one(edge.port, request(lines, b'{"messages":[]}'))
    assert refused.status == 400 and refused.json()["type"] == "error", refused


# --- X-Forwarded-For from a trusted proxy (all lines joined, read from the right) --------

FORWARDED = [
    ("one line, allowed", [ALLOWED], 200),
    ("one line, other", [OTHER], 403),
    ("joined: allowed then other", [f"{ALLOWED}, {OTHER}"], 403),
    ("two lines: allowed then other", [ALLOWED, OTHER], 403),
    ("two lines: other then allowed", [OTHER, ALLOWED], 200),
    ("the trusted proxy's own line last", [f"{OTHER}, {ALLOWED}", "127.0.0.1"], 200),
    ("an empty line last", [ALLOWED, ""], 200),
    ("empty elements", [f"{ALLOWED},,, "], 200),
    ("an overlong list", [", ".join([OTHER] * 2000) + f", {ALLOWED}"], 200),
    ("an address past 255", ["999.1.1.1"], 403),
]


@pytest.mark.parametrize(
    ("values", "status"), [c[1:] for c in FORWARDED], ids=[c[0] for c in FORWARDED]
)
async def test_forwarded_for_lines_are_joined_and_read_from_the_right(
    edge: Server, values: list[str], status: int
) -> None:
    lines = [f"Authorization: Bearer {FENCED_KEY}", *(f"X-Forwarded-For: {v}" for v in values)]
    answer = await one(edge.port, request(lines))
    if len(lines[-1]) > 8000:  # past aiohttp's line limit: refused as a whole
        assert answer.status in (400, 431), answer
        return
    assert answer.status == status, answer
    if status == 403:
        assert answer.json()["error"]["code"] == "ip_not_allowed"


async def test_forwarded_proto_from_a_trusted_proxy_is_read_from_the_right(edge: Server) -> None:
    for protos, hsts in ((["https"], True), (["http", "https"], True), (["https", "http"], False)):
        lines = [AUTH, *(f"X-Forwarded-Proto: {p}" for p in protos)]
        answer = await one(edge.port, request(lines))
        assert answer.status == 200
        assert bool(answer.all("Strict-Transport-Security")) is hsts, protos


# --- any set of duplicated lines -----------------------------------------------------------------

READ = [
    *("X-Forwarded-For", "Authorization", "X-API-Key", "Host", "X-Request-ID"),
    *("anthropic-version", "X-Forwarded-Proto", "Content-Length", "Transfer-Encoding"),
    *("Content-Type", "Expect"),
]
values = st.one_of(
    st.sampled_from(
        [
            *(TEST_KEY, f"Bearer {TEST_KEY}", f"Bearer {SECOND_KEY}", ALLOWED, OTHER, "gw"),
            *("https", "2023-06-01", "application/json", "text/plain", "chunked", "0", "67"),
            *("100-continue", "", " ", ",", "a" * 300, "\u00e9"),
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
)


# (a key sent as a request id would be logged as one: a leak the client made, not the gateway)
header_lines = st.tuples(st.sampled_from(READ), values).filter(
    lambda line: line[0] != "X-Request-ID" or not line[1].endswith(TEST_KEY)
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=st.lists(header_lines, max_size=8))
async def test_any_duplicated_header_lines_are_never_a_500(
    edge: Server, fake: FakeUpstream, lines: list[tuple[str, str]]
) -> None:
    """Any lines of the headers the gateway reads, repeated in any order after a valid key:
    one bounded answer, never a 5xx, a sane X-Request-ID, at most one request upstream."""
    before = len(fake.seen)
    raw = request([AUTH, *(f"{name}: {value}" for name, value in lines)])
    answers = await exchange(edge.port, raw)
    assert len(answers) == 1, [a.status for a in answers]
    answer = answers[0]
    assert answer.status < 500, answer
    (label,) = answer.all("X-Request-ID")
    assert SANE_ID.match(label), label
    assert len(fake.seen) - before <= 1
