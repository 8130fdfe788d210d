"""What the tests of the non-chat APIs share: a gateway in front of the bundled mock worker (and
an independent fake upstream) with keys of every permission set, a small generated WAV file,
and raw HTTP helpers that return what a client sees."""

from __future__ import annotations

import io
import math
import struct
import wave
from typing import Any

import aiohttp

from gateway.auth.keys import sha256_hex
from gateway.server import Server
from tests.clients import TEST_KEY, TEST_KEY_SHA
from tests.conftest import gateway_yaml

ALL = ["chat", "embeddings", "audio", "images", "vision"]
CHAT_KEY = "test-chat-only-key-0123456789abcdef"
IMAGES_KEY = "test-images-only-key-0123456789abcd"
AUDIO_KEY = "test-audio-only-key-0123456789abcde"
RPM2_KEY = "test-rpm-two-key-0123456789abcdefgh"
EVERY_API = ["chat", "responses", "completions", "embeddings", "rerank", "audio", "images"]


def keys_yaml() -> str:
    def key(kid: str, secret: str, permissions: list[str], extra: str = "") -> str:
        return (
            f"    - {{id: {kid}, owner: tests, sha256: '{sha256_hex(secret)}', "
            f"permissions: {permissions}{extra}}}\n"
        )

    return (
        "keys:\n  static:\n"
        + f"    - {{id: test, owner: tests, sha256: '{TEST_KEY_SHA}', permissions: {ALL}}}\n"
        + key("chatonly", CHAT_KEY, ["chat"])
        + key("imagesonly", IMAGES_KEY, ["images"])
        + key("audioonly", AUDIO_KEY, ["audio"])
        + key("rpm2", RPM2_KEY, ["embeddings"], ", rpm_limit: 2")
    )


def apis_yaml(mock_port: int, fake_url: str, extra: str = "") -> str:
    """``mock-model`` serves every API under the worker name ``mock-upstream`` (alias
    ``gpt-4o-mini``); ``chat-only`` serves chat; ``fake-model`` is the fake upstream's."""
    return gateway_yaml(
        {"mock": f"http://127.0.0.1:{mock_port}", "fake": fake_url},
        {
            "mock-model": {
                "upstreams": ["mock"],
                "upstream_model": "mock-upstream",
                "aliases": ["gpt-4o-mini"],
                "apis": EVERY_API,
            },
            "chat-only": {"upstreams": ["mock"], "apis": ["chat"]},
            "fake-model": {"upstreams": ["fake"], "upstream_model": "org/fake", "apis": EVERY_API},
        },
        extra=keys_yaml() + extra,
    )


def wav(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    """A mono 16-bit PCM WAV file of a 440 Hz tone."""
    frames = int(seconds * rate)
    samples = (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(frames))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return out.getvalue()


def bearer(key: str = TEST_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def post(
    server: Server,
    path: str,
    *,
    json: Any = None,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """POST over a fresh connection: status, headers, and the body as JSON when it is JSON."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{server.port}{path}",
            json=json,
            data=data,
            headers=bearer() if headers is None else headers,
        ) as r,
    ):
        raw = await r.read()
        body: Any = raw
        if r.content_type == "application/json":
            body = await r.json()
        return r.status, dict(r.headers), body


def form(fields: list[tuple[str, Any]]) -> aiohttp.FormData:
    """A multipart form in the order given: ``(name, text)`` or ``(name, (filename, bytes))``."""
    out = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields:
        if isinstance(value, tuple):
            out.add_field(
                name, value[1], filename=value[0], content_type="application/octet-stream"
            )
        else:
            out.add_field(name, value)
    return out
