"""A store at ``rediss://`` (TLS, one node: redis-py, not the lane) admits on the hot path, and
an admission whose reply is lost there is given back at once (found by review: every hot-path
admission over TLS failed, so with ``on_error: closed`` every request was a 503; and a lost
admission through redis-py held its key's slot for the lease's 20 s)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.config.load import parse_text
from gateway.errors import StoreUnavailable, TooManyRequests
from gateway.limits.limiter import Limiter
from gateway.records import Admission, KeyRecord
from gateway.store.redis import RedisStore
from tests.faultproxy import FaultProxy
from tests.redis_server import RedisServer, free_port, start_redis


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server with a TLS port (a certificate for 127.0.0.1 made here), its plain port
    kept for the test's own reads; (server, TLS port, the certificate)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the TLS test's certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = start_redis(
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
    )
    yield server, port, cert
    server.stop()


def _limiter(store: RedisStore, timeout_ms: int) -> Limiter:
    text = f"store: {{timeout_ms: {timeout_ms}}}\n"
    text += "plans: {free: {rpm: null, monthly_tokens: null}}\n"
    return Limiter(store, parse_text(text, "t", {}), SystemClock())


async def test_the_hot_path_admits_over_tls(tls_redis: tuple[RedisServer, int, Path]) -> None:
    server, port, cert = tls_redis
    assert server.call("FLUSHALL") == "OK"
    store = RedisStore(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}", 2000)
    try:
        verdicts = await asyncio.gather(
            *(store.admit_now(Admission(f"r{i}", "k1", "acme", concurrency=2)) for i in range(3))
        )
        # each goes as a call of its own over redis-py (in any order): two of three fit
        assert sorted(v.admitted for v in verdicts) == [False, True, True]
        assert server.call("ZCARD", "gw:{acme}:held:k1") == "2"
    finally:
        await store.close()


async def test_a_lost_admission_over_tls_is_given_back(
    tls_redis: tuple[RedisServer, int, Path],
) -> None:
    """Redis runs the admission, its reply never comes back (the proxy drops it) and the call
    times out: the key's only slot is free again at once, not after the lease's 20 s."""
    server, port, cert = tls_redis
    assert server.call("FLUSHALL") == "OK"
    proxy = FaultProxy(port)
    await proxy.start()
    store = RedisStore(f"rediss://127.0.0.1:{proxy.port}/0?ssl_ca_certs={cert}", 300)
    limiter = _limiter(store, 300)
    await limiter.start()
    key = KeyRecord(id="k1", owner="acme", key_hash="h", max_concurrency=1)
    try:
        await limiter.admit("r0", KeyRecord(id="k0", owner="acme", key_hash="h0"), 0, False, "m")
        proxy.set("mute")  # requests reach Redis, replies are dropped
        with pytest.raises(StoreUnavailable):
            await limiter.admit("r1", key, 100, False, "m")
        assert server.call("ZCARD", "gw:{acme}:held:k1") == "1"  # Redis admitted it
        proxy.set("reset")
        proxy.set("pass")
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            try:
                ticket = await limiter.admit("r2", key, 100, False, "m")
                break
            except (TooManyRequests, StoreUnavailable):  # held, or the connection coming back
                assert asyncio.get_running_loop().time() < deadline, "never given back"
                await asyncio.sleep(0.02)
        assert ticket.verdict is not None and ticket.verdict.admitted
    finally:
        await limiter.stop()
        await store.close()
        await proxy.stop()
