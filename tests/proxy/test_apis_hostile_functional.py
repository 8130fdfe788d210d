"""Hostile input on every route of the non-chat APIs: no key, a wrong key, bad JSON, wrong
types, garbled, truncated, oversized and stalled multipart forms, a missing model or file. Each
gets a clear 4xx before any worker is called — never a 5xx, never a hang."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mock_worker import MockState
from gateway.proxy.apis import ROUTES
from gateway.proxy.apis.json_api import JsonApi
from gateway.server import Server
from tests.clients import TEST_KEY
from tests.fakes import FakeUpstream
from tests.proxy.apis_support import RPM2_KEY, apis_yaml, bearer, form, post, wav

JSON_PATHS = [path for path, api in ROUTES if isinstance(api, JsonApi)]
FORM_PATHS = [path for path, api in ROUTES if not isinstance(api, JsonApi)]
ALL_PATHS = [path for path, _ in ROUTES]
LIMIT = 64 * 1024


@pytest.fixture
async def served(
    gateway_factory: Any, mock: tuple[int, MockState], fake: FakeUpstream
) -> tuple[Server, MockState]:
    extra = f"network: {{max_body_bytes: {LIMIT}, header_timeout: 0.5}}\n"
    server: Server = await gateway_factory(apis_yaml(mock[0], fake.url, extra))
    return server, mock[1]


def file_field(path: str) -> str:
    return "image" if path.endswith("/edits") else "file"


@pytest.mark.parametrize("path", ALL_PATHS)
async def test_no_key_or_a_wrong_key_is_401(served: tuple[Server, MockState], path: str) -> None:
    server, state = served
    for headers in ({}, bearer("sk-wrong-key"), {"Authorization": "Basic eA=="}):
        status, _, body = await post(server, path, json={"model": "mock-model"}, headers=headers)
        assert status == 401, (path, headers, body)
        assert body["error"]["type"] == "authentication_error"
    assert state.api_requests == []


BAD_JSON = [
    (b'{"model": "mock-model", ', "not valid JSON"),
    (b"", "empty"),
    (b"[1, 2]", "JSON object"),
    (b'"model"', "JSON object"),
    (b'{"model": 5}', "'model' must be a non-empty string"),
    (b'{"model": ""}', "'model' must be a non-empty string"),
    (b'{"prompt": "x", "input": "x"}', "'model' is required"),
    (b'{"model": "mock-model", "n": "two", "input": 5, "query": 1, "prompt": 7}', "'"),
]


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize(("raw", "said"), BAD_JSON)
async def test_bad_json_is_400(
    served: tuple[Server, MockState], path: str, raw: bytes, said: str
) -> None:
    server, state = served
    headers = {**bearer(), "Content-Type": "application/json"}
    status, _, body = await post(server, path, data=raw, headers=headers)
    assert status == 400, (path, raw, body)
    assert said in body["error"]["message"] and body["error"]["type"] == "invalid_request_error"
    assert state.api_requests == []


@pytest.mark.parametrize("path", JSON_PATHS)
async def test_json_nested_past_what_can_be_forwarded_is_400(
    served: tuple[Server, MockState], path: str
) -> None:
    server, state = served
    deep = b"[" * 1000 + b"]" * 1000
    raw = (
        b'{"model": "mock-model", "input": "x", "prompt": "x", "query": "q", "documents": ["d"], '
        b'"text_1": "a", "text_2": "b", "extra": ' + deep + b"}"
    )
    headers = {**bearer(), "Content-Type": "application/json"}
    status, _, body = await post(server, path, data=raw, headers=headers)
    assert status == 400 and "nested too deeply" in body["error"]["message"], body
    assert state.api_requests == []


@pytest.mark.parametrize("path", JSON_PATHS)
async def test_a_json_body_over_the_limit_is_413(
    served: tuple[Server, MockState], path: str
) -> None:
    server, _ = served
    status, _, body = await post(
        server, path, json={"model": "mock-model", "input": "x" * LIMIT, "prompt": "x" * LIMIT}
    )
    assert status == 413 and body["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("path", FORM_PATHS)
async def test_forms_that_are_not_forms(served: tuple[Server, MockState], path: str) -> None:
    server, state = served
    cases: list[tuple[dict[str, str], bytes, str]] = [
        ({"Content-Type": "application/json"}, b'{"model": "mock-model"}', "multipart/form-data"),
        ({"Content-Type": "multipart/form-data"}, b"--x\r\n", "boundary"),
        ({"Content-Type": "multipart/form-data; boundary=" + "b" * 80}, b"", "boundary"),
        (
            {"Content-Type": "multipart/form-data; boundary=zz"},
            b"garbage \x00\xff" * 50,
            "malformed",
        ),
        ({"Content-Type": "multipart/form-data; boundary=zz"}, b"", "malformed"),
    ]
    for headers, raw, said in cases:
        status, _, body = await post(server, path, data=raw, headers={**bearer(), **headers})
        assert status == 400, (path, headers, body)
        assert said in body["error"]["message"], body
    assert state.api_requests == []


def multipart(parts: list[bytes], boundary: str = "zz", end: bool = True) -> bytes:
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return out + (b"--" + boundary.encode() + b"--\r\n" if end else b"")


MODEL = b'Content-Disposition: form-data; name="model"\r\n\r\nmock-model'
PROMPT = b'Content-Disposition: form-data; name="prompt"\r\n\r\na hat'


def file_part(name: str, data: bytes = b"RIFF....WAVE") -> bytes:
    return (
        f'Content-Disposition: form-data; name="{name}"; filename="a.wav"\r\n'.encode()
        + b"Content-Type: audio/wav\r\n\r\n"
        + data
    )


@pytest.mark.parametrize("path", FORM_PATHS)
async def test_broken_forms_are_400_before_any_worker(
    served: tuple[Server, MockState], path: str
) -> None:
    server, state = served
    f = file_field(path)
    cases: list[tuple[bytes, str]] = [
        (multipart([file_part(f), PROMPT]), "'model' is required"),
        (multipart([MODEL, PROMPT]), f"'{f}' is required"),
        (multipart([]), "'model' is required"),
        (multipart([MODEL, file_part(f)], end=False)[:-2], "malformed"),  # truncated
        (multipart([b"Content-Type: text/plain\r\n\r\nno name", MODEL, file_part(f)]), "name"),
        (multipart([b'Content-Disposition: form-data; name="model"\r\n\r\n', file_part(f)]),
         "'model' must be"),
        (multipart([MODEL, b'Content-Disposition: form-data; name="x"\r\nContent-Type: '
                    b"multipart/mixed; boundary=yy\r\n\r\n--yy\r\n\r\nz\r\n--yy--", file_part(f)]),
         "multipart itself"),
        (multipart([b"\r\n".join([b"X-Junk: a"] * 40) + b"\r\n\r\nv", MODEL]), "malformed"),
        (multipart([b'Content-Disposition: form-data; name="prompt"\r\n\r\n' + b"p" * 60_000,
                    MODEL]), f"'{f}' is required"),
    ]  # fmt: skip
    for raw, said in cases:
        headers = {**bearer(), "Content-Type": "multipart/form-data; boundary=zz"}
        status, _, body = await post(server, path, data=raw, headers=headers)
        assert status == 400, (path, raw[:80], body)
        assert said in body["error"]["message"], (raw[:80], body)
    assert state.api_requests == []


async def test_model_not_first_is_spooled_and_served(served: tuple[Server, MockState]) -> None:
    """A file before the model (the Node SDK's order when file is written first) still works:
    the worker gets every part, model mapped, file intact."""
    server, state = served
    audio = wav(1.0)
    raw = multipart([file_part("file", audio), b'Content-Disposition: form-data; name="language"'
                     b"\r\n\r\nen", MODEL, b'Content-Disposition: form-data; name="temperature"'
                     b"\r\n\r\n0.2"])  # fmt: skip
    headers = {**bearer(), "Content-Type": "multipart/form-data; boundary=zz"}
    status, _, body = await post(server, "/v1/audio/transcriptions", data=raw, headers=headers)
    assert status == 200, body
    assert body["text"] == "Transcribed a.wav: 1.00 seconds of audio."
    _, _, seen = state.api_requests[-1]
    assert seen["fields"] == {"model": "mock-upstream", "language": "en", "temperature": "0.2"}
    assert seen["files"] == {"file": len(audio)}


@pytest.mark.parametrize("path", FORM_PATHS)
async def test_a_form_over_the_limit_is_413(served: tuple[Server, MockState], path: str) -> None:
    server, _ = served
    f = file_field(path)
    # Declared over the limit: refused from the head.
    big = multipart([MODEL, PROMPT, file_part(f, b"\0" * (LIMIT + 1))])
    headers = {**bearer(), "Content-Type": "multipart/form-data; boundary=zz"}
    status, _, body = await post(server, path, data=big, headers=headers)
    assert status == 413 and body["error"]["code"] == "request_too_large"

    async def chunked() -> Any:  # no Content-Length: counted as it streams
        yield big[: len(big) // 2]
        yield big[len(big) // 2 :]

    status, _, body = await post(server, path, data=chunked(), headers=headers)
    assert status == 413, body


@pytest.mark.parametrize("path", FORM_PATHS)
async def test_a_stalled_form_is_408(served: tuple[Server, MockState], path: str) -> None:
    """A client that stops sending (header_timeout 0.5 s) gets 408 and its connection closed;
    a stall before the file is answered without any worker call."""
    server, state = served
    body = multipart([MODEL, PROMPT, file_part(file_field(path))])[:60]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=zz\r\n"
        f"Content-Length: {len(body) + 100}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    async with asyncio.timeout(10):
        answer = await reader.readuntil(b"\r\n\r\n")
        length = int(answer.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        answer += await reader.readexactly(length)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"Connection: close" in answer and b"stalled" in answer
    assert state.api_requests == []


boundary = st.text("abcdefghij0123456789-_", min_size=1, max_size=12)
junk = st.lists(
    st.sampled_from([b"--zz\r\n", b"--zz--\r\n", b"\r\n", MODEL, PROMPT, file_part("file"),
                     b"Content-Disposition: form-data\r\n", b'; name="model"', b"\x00\xff",
                     b"Content-Type: multipart/mixed; boundary=zz\r\n", b"x" * 100])
    | st.binary(max_size=40),
    max_size=12,
)  # fmt: skip


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=junk, mark=boundary)
async def test_any_bytes_as_a_form_is_never_a_5xx(
    served: tuple[Server, MockState], pieces: list[bytes], mark: str
) -> None:
    server, _ = served
    headers = {**bearer(), "Content-Type": f"multipart/form-data; boundary={mark}"}
    for path in ("/v1/audio/transcriptions", "/v1/images/edits"):
        async with asyncio.timeout(10):
            status, _, body = await post(server, path, data=b"".join(pieces), headers=headers)
        assert status < 500, (status, body)


async def test_a_valid_form_still_works_after_all_that(served: tuple[Server, MockState]) -> None:
    server, _ = served
    data = form([("model", "mock-model"), ("file", ("a.wav", wav(0.2)))])
    status, _, body = await post(server, "/v1/audio/transcriptions", data=data)
    assert status == 200 and body["text"].startswith("Transcribed a.wav")


HUGE = 2**70  # past any 64-bit integer a worker or a store would parse
WRONG_TYPES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/completions", {"prompt": {"a": 1}}, "prompt"),
    ("/v1/completions", {"prompt": []}, "prompt"),
    ("/v1/completions", {"prompt": [[1, "x"]]}, "prompt"),
    ("/v1/completions", {"prompt": "x", "echo": "yes"}, "echo"),
    ("/v1/completions", {"prompt": "x", "stream": 1}, "stream"),
    ("/v1/completions", {"prompt": "x", "n": True}, "n"),
    ("/v1/completions", {"prompt": "x", "n": HUGE}, "n"),
    ("/v1/completions", {"prompt": "x", "best_of": HUGE}, "best_of"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 1.5}, "max_tokens"),
    ("/v1/embeddings", {"input": {"text": "x"}}, "input"),
    ("/v1/embeddings", {"input": []}, "input"),
    ("/v1/embeddings", {"input": [1, [2]]}, "input"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ("/v1/embeddings", {"input": "x", "dimensions": "256"}, "dimensions"),
    ("/v1/embeddings", {"input": "x", "dimensions": 0}, "dimensions"),
    ("/v1/rerank", {"query": ["q"], "documents": ["d"]}, "query"),
    ("/v1/rerank", {"query": "q", "documents": "d"}, "documents"),
    ("/v1/rerank", {"query": "q", "documents": []}, "documents"),
    ("/v1/rerank", {"query": "q", "documents": [1, 2]}, "documents"),
    ("/v1/rerank", {"query": "q", "documents": ["d"], "top_n": "3"}, "top_n"),
    ("/v2/rerank", {"query": "q"}, "documents"),
    ("/v1/score", {"text_1": 5, "text_2": "b"}, "text_1"),
    ("/v1/score", {"text_1": "a", "text_2": []}, "text_2"),
    ("/v1/score", {"text_1": "a"}, "text_1"),
    ("/v1/images/generations", {"prompt": 7}, "prompt"),
    ("/v1/images/generations", {"prompt": ""}, "prompt"),
    ("/v1/images/generations", {"prompt": "p", "n": 0}, "n"),
    ("/v1/images/generations", {"prompt": "p", "n": HUGE}, "n"),
    ("/v1/images/generations", {"prompt": "p", "n": "2"}, "n"),
]


@pytest.mark.parametrize(("path", "body", "param"), WRONG_TYPES)
async def test_wrong_types_and_counts_are_400_naming_the_field(
    served: tuple[Server, MockState], path: str, body: dict[str, Any], param: str
) -> None:
    server, state = served
    status, _, answer = await post(server, path, json={"model": "mock-model", **body})
    assert status == 400, (path, body, answer)
    assert answer["error"]["param"] == param, answer
    assert state.api_requests == []


def test_every_json_route_has_a_wrong_type_case() -> None:
    apis = {api.api for path, api in ROUTES if path in {p for p, _, _ in WRONG_TYPES}}
    assert apis == {api.api for _, api in ROUTES if isinstance(api, JsonApi)}


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize("field", ["max_tokens", "dimensions", "top_n", "n"])
async def test_huge_numbers_are_never_a_5xx(
    served: tuple[Server, MockState], path: str, field: str
) -> None:
    """A count past 64 bits in any field a route reads (or only forwards) is a 4xx, or served
    as the worker takes it — never a 5xx."""
    server, _ = served
    body = {"model": "mock-model", "input": "x", "prompt": "x", "query": "q", "documents": ["d"]}
    body |= {"text_1": "a", "text_2": "b", field: HUGE}
    async with asyncio.timeout(10):
        status, _, answer = await post(server, path, json=body)
    assert status < 500, (path, field, answer)


@pytest.mark.parametrize("path", FORM_PATHS)
async def test_known_form_fields_twice_or_bad_are_400(
    served: tuple[Server, MockState], path: str
) -> None:
    server, state = served
    f = file_field(path)
    stream = b'Content-Disposition: form-data; name="stream"\r\n\r\ntrue'
    n = b'Content-Disposition: form-data; name="n"\r\n\r\n'
    cases: list[tuple[bytes, str]] = [
        (multipart([MODEL, MODEL, file_part(f)]), "appears twice"),
        (multipart([MODEL, stream, stream, file_part(f)]), "appears twice"),
        (multipart([file_part(f), MODEL, MODEL]), "appears twice"),
    ]
    if path.endswith("/edits"):
        cases += [
            (multipart([MODEL, n + b"1000", file_part(f)]), "'n' must be"),
            (multipart([MODEL, n + b"-3", file_part(f)]), "'n' must be"),
            (multipart([MODEL, n + str(HUGE).encode(), file_part(f)]), "'n' must be"),
        ]
    headers = {**bearer(), "Content-Type": "multipart/form-data; boundary=zz"}
    for raw, said in cases:
        status, _, body = await post(server, path, data=raw, headers=headers)
        assert status == 400 and said in body["error"]["message"], (path, raw[:120], body)
    assert state.api_requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "x", "max_tokens": HUGE}),
        ("/v1/completions", {"prompt": ["x"] * 100, "max_tokens": 2**62, "n": 128}),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": HUGE},
        ),
        ("/v1/responses", {"input": "x", "max_output_tokens": HUGE}),
    ],
)
async def test_a_reservation_past_64_bits_on_redis_is_refused_not_a_5xx(
    gateway_factory: Any,
    mock: tuple[int, MockState],
    fake: FakeUpstream,
    redis_url: str,
    path: str,
    body: dict[str, Any],
) -> None:
    """The Redis store adds reservations in Lua (doubles) and INCRBY (64-bit integers): a
    ``max_tokens`` of 2**70 must still be a refusal of the key's daily limit."""
    text = apis_yaml(mock[0], fake.url, f"store: {{url: '{redis_url}'}}\n").replace(
        "rpm_limit: 2", "rpm_limit: 2, daily_limit: 1000"
    )
    server: Server = await gateway_factory(
        text.replace("permissions: ['embeddings']", "permissions: ['chat']")
    )
    status, _, answer = await post(
        server, path, json={"model": "mock-model", **body}, headers=bearer(RPM2_KEY)
    )
    assert status in (400, 429), (status, answer)
