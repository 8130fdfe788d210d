"""TLS termination, and the security headers (docs/api.md) on every answer: HSTS only
over TLS or when a trusted proxy says the client came over https."""

from __future__ import annotations

import pathlib
import ssl
import subprocess
from typing import Any

import aiohttp
import pytest

from gateway.server import Server, warn_without_c_parser
from tests.clients import AUTH, SECURITY
from tests.conftest import gateway_yaml

HSTS = "max-age=63072000; includeSubDomains"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


async def get(
    url: str, headers: dict[str, str] | None = None, cafile: str | None = None
) -> tuple[int, dict[str, str]]:
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={**AUTH, **(headers or {})}, ssl=context if context else True) as r,
    ):
        await r.read()
        return r.status, dict(r.headers)


async def test_tls_termination_sends_hsts(
    gateway_factory: Any, mock: Any, certificate: tuple[str, str]
) -> None:
    cert, key = certificate
    text = gateway_yaml({"mock": f"http://127.0.0.1:{mock[0]}"}).replace(
        "listen: {host: 127.0.0.1, port: 0}",
        f"listen: {{host: 127.0.0.1, port: 0, tls: {{cert: '{cert}', key: '{key}'}}}}",
    )
    server: Server = await gateway_factory(text)
    status, headers = await get(f"https://127.0.0.1:{server.port}/v1/models", cafile=cert)
    assert status == 200
    assert headers["Strict-Transport-Security"] == HSTS
    for name, value in SECURITY.items():
        assert headers[name] == value
    missing, headers = await get(f"https://127.0.0.1:{server.port}/nope", cafile=cert)
    assert missing == 404 and headers["Strict-Transport-Security"] == HSTS  # errors too
    with pytest.raises(aiohttp.ClientError):
        await get(f"http://127.0.0.1:{server.port}/v1/models")  # plain HTTP is not served


async def test_hsts_only_for_https_from_a_trusted_proxy(gateway_factory: Any, mock: Any) -> None:
    base = gateway_yaml({"mock": f"http://127.0.0.1:{mock[0]}"})
    trusting: Server = await gateway_factory(base + "network: {trusted_proxies: [127.0.0.1]}\n")
    wary: Server = await gateway_factory(base)
    https = {"X-Forwarded-Proto": "https"}
    _, headers = await get(f"http://127.0.0.1:{trusting.port}/v1/models", https)
    assert headers["Strict-Transport-Security"] == HSTS
    _, headers = await get(f"http://127.0.0.1:{trusting.port}/v1/models")
    assert "Strict-Transport-Security" not in headers
    _, headers = await get(f"http://127.0.0.1:{wary.port}/v1/models", https)
    assert "Strict-Transport-Security" not in headers  # anyone can send the header
    assert headers["X-Frame-Options"] == "DENY"


async def test_security_headers_can_be_turned_off(gateway_factory: Any, mock: Any) -> None:
    server: Server = await gateway_factory(
        gateway_yaml({"mock": f"http://127.0.0.1:{mock[0]}"})
        + "network: {security_headers: false}\n"
    )
    status, headers = await get(f"http://127.0.0.1:{server.port}/v1/models")
    assert status == 200 and "X-Frame-Options" not in headers
    assert headers["X-Request-ID"]


def test_a_missing_c_parser_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from aiohttp import http_parser

    warn_without_c_parser()
    assert "C HTTP parser" not in caplog.text  # this machine has the fast one
    monkeypatch.setattr(http_parser, "HttpRequestParser", http_parser.HttpRequestParserPy)
    warn_without_c_parser()
    assert "C HTTP parser is not in use" in caplog.text


def test_tls_files_must_exist(tmp_path: pathlib.Path) -> None:
    from gateway.config.load import ConfigError, parse_text

    with pytest.raises(ConfigError) as info:
        parse_text(
            f"listen: {{tls: {{cert: '{tmp_path}/none.pem', key: '{tmp_path}/k.pem'}}}}\n",
            "f.yaml",
            {},
        )
    assert any("listen.tls.cert" in e and "not found" in e for e in info.value.errors)
