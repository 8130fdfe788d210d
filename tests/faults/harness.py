"""What the fault tests share: gateways as real processes (``python -m gateway run``) on one
Redis, each with the bundled mock worker as its upstream; static keys with limits; a chat client
that keeps what each answer told it (status, error code, the tokens of its usage, the rate-limit
headers); bounded load loops; and the checks every scenario ends with: the key is admitted at
once, its concurrency is free, and its token counter and recorded usage equal what was served.

Every wait polls with a deadline. Durations (keep a fault on for 0.4 s) are plain sleeps.
"""

from __future__ import annotations

import asyncio
import functools
import pathlib
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson

from gateway.auth.keys import sha256_hex
from tests.redis_server import free_port

ADMIN_TOKEN = "admin-token-for-fault-tests-0123456789"
MODEL = "mock-model"
MAX_TOKENS = 16
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=15)
T = TypeVar("T")


# -- keys and configuration ---------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    """A static key of the config (limits as in ``keys.static``, docs/configuration.md)."""

    id: str
    owner: str = "faults"
    rpm: int | None = 100_000
    concurrency: int | None = 2
    daily: int = 10_000_000

    @property
    def secret(self) -> str:
        return f"fault-key-{self.id}-0123456789abcdef"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    def yaml(self) -> str:
        def num(value: int | None) -> str:
            return "null" if value is None else str(value)

        return (
            f"{{id: {self.id}, owner: {self.owner}, sha256: '{sha256_hex(self.secret)}', "
            f"rpm_limit: {num(self.rpm)}, max_concurrency: {num(self.concurrency)}, "
            f"daily_limit: {self.daily}}}"
        )


def config_text(
    *,
    store_url: str,
    keys: Sequence[Key],
    upstream_url: str,
    on_error: str = "closed",
    timeout_ms: int = 250,
    port: int = 0,
    admin_port: int = 0,
    mock_port: int | None = None,
    idle: float = 5.0,
) -> str:
    """One gateway: one model on one upstream (with ``mock_port``, the bundled mock worker run
    beside the gateway), plans without limits (only the keys' own limits apply), the keys."""
    static = ", ".join(k.yaml() for k in keys)
    mock = (
        f"mock_worker: {{host: 127.0.0.1, port: {mock_port}, token_delay: 0.0}}\n"
        if mock_port is not None
        else ""
    )
    return f"""\
listen: {{host: 127.0.0.1, port: {port}, workers: 1, drain_timeout: 1}}
admin: {{host: 127.0.0.1, port: {admin_port}, token: {ADMIN_TOKEN}}}
store: {{url: "{store_url}", on_error: {on_error}, timeout_ms: {timeout_ms}}}
upstreams:
  up: {{url: "{upstream_url}", timeouts: {{connect: 2, first_byte: 5, idle: {idle}}}}}
models: {{{MODEL}: {{upstreams: [up]}}}}
{mock}plans: {{free: {{max_keys: null, monthly_tokens: null, rpm: null}}}}
keys: {{static: [{static}]}}
log: {{level: warning, access: false}}
"""


# -- gateway processes --------------------------------------------------------------------------
@dataclass
class Endpoint:
    """A gateway's two listeners (a process of its own, or a ``Server`` in this one)."""

    name: str
    port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


@dataclass
class Gateway(Endpoint):
    """A ``gateway run`` process."""

    process: asyncio.subprocess.Process
    log: pathlib.Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def start_gateway(
    tmp: pathlib.Path, name: str, store_url: str, on_error: str, timeout_ms: int, keys: list[Key]
) -> Gateway:
    """A ``gateway run`` process; returns once its /readyz answers 200 (deadline 20 s)."""
    port, admin_port, mock_port = free_port(), free_port(), free_port()
    path = tmp / f"{name}.yaml"
    path.write_text(
        config_text(
            store_url=store_url,
            keys=keys,
            upstream_url=f"http://127.0.0.1:{mock_port}",
            on_error=on_error,
            timeout_ms=timeout_ms,
            port=port,
            admin_port=admin_port,
            mock_port=mock_port,
        )
    )
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(path),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    gateway = Gateway(name, port, admin_port, process, log)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            try:
                async with http.get(f"{gateway.admin}/readyz") as r:
                    if r.status == 200:
                        return gateway
            except (aiohttp.ClientError, TimeoutError):
                pass
            if process.returncode is not None or loop.time() > deadline:
                await stop_gateway(gateway)
                raise AssertionError(f"gateway {name} did not start: {gateway.log_text()[-2000:]}")
            await asyncio.sleep(0.05)


async def stop_gateway(gateway: Gateway) -> None:
    """SIGTERM (drain, flush), SIGKILL if it has not exited within 10 s."""
    if gateway.process.returncode is None:
        gateway.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await gateway.process.wait()
        except TimeoutError:
            gateway.process.kill()
            await gateway.process.wait()


# -- the client ---------------------------------------------------------------------------------
@dataclass
class Answer:
    """What one chat request got, as its client saw it."""

    where: str
    status: int  # 0: the connection failed (no HTTP status)
    code: str | None  # the error code of a non-200 answer (or the client-side failure)
    headers: dict[str, str]  # lower-case names
    stream: bool
    tokens: int = 0  # prompt + completion tokens of the usage in the answer
    usage_seen: bool = False
    done: bool = False  # a stream's data: [DONE]
    error_event: bool = False  # a stream's error event
    sent: float = 0.0
    ended: float = 0.0
    body: bytes = b""

    @property
    def complete(self) -> bool:
        """A 200 the client can take as whole: usage in it, and a stream's [DONE]."""
        return self.status == 200 and self.usage_seen and (self.done or not self.stream)

    @property
    def store_verdict(self) -> bool:
        """Admitted on the store's verdict (it carries the key's rate-limit headers); one
        admitted without the store (``on_error: open``) has none."""
        return "x-ratelimit-remaining-tokens" in self.headers

    def __str__(self) -> str:
        return (
            f"{self.where}: {self.status} {self.code or ''} stream={self.stream} "
            f"tokens={self.tokens} body={self.body[:300]!r}"
        )


def chat_body(stream: bool, words: int, max_tokens: int = MAX_TOKENS) -> bytes:
    """The request body, as exact bytes (so the same arguments make the same reservation)."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"say:{words}"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def read_stream(answer: Answer, raw: bytes) -> None:
    for event in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                answer.done = True
                continue
            try:
                item = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(item, dict) and "error" in item:
                answer.error_event = True
            usage = item.get("usage") if isinstance(item, dict) else None
            if isinstance(usage, dict):
                answer.usage_seen = True
                answer.tokens = int(usage["prompt_tokens"]) + int(usage["completion_tokens"])


def read_whole(answer: Answer, raw: bytes) -> None:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if not isinstance(item, dict):
        return
    if answer.status != 200:
        error = item.get("error")
        answer.code = str(error.get("code")) if isinstance(error, dict) else None
        return
    usage = item.get("usage")
    if isinstance(usage, dict):
        answer.usage_seen = True
        answer.tokens = int(usage["prompt_tokens"]) + int(usage["completion_tokens"])


async def chat(
    http: aiohttp.ClientSession,
    gateway: Endpoint,
    key: Key,
    *,
    stream: bool = False,
    words: int = 3,
    token_delay: float | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One chat request through ``gateway``; never raises for a failed connection (status 0)."""
    loop = asyncio.get_running_loop()
    sent_headers = {**key.auth, "Content-Type": "application/json", **(headers or {})}
    if token_delay is not None:
        sent_headers["x-mock-token-delay"] = repr(token_delay)
    answer = Answer(gateway.name, 0, None, {}, stream, sent=loop.time())
    try:
        async with http.post(
            f"{gateway.url}/v1/chat/completions",
            data=chat_body(stream, words),
            headers=sent_headers,
            timeout=CLIENT_TIMEOUT,
        ) as r:
            answer.status = r.status
            answer.headers = {k.lower(): v for k, v in r.headers.items()}
            answer.body = await r.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        answer.code = f"client: {type(exc).__name__}: {exc}"
    answer.ended = loop.time()
    if answer.status == 200 and answer.headers.get("content-type", "").startswith(
        "text/event-stream"
    ):
        read_stream(answer, answer.body)
    elif answer.status:
        read_whole(answer, answer.body)
    return answer


async def chat_when_free(
    http: aiohttp.ClientSession,
    gateway: Endpoint,
    key: Key,
    seconds: float = 1.0,
    **options: Any,
) -> list[Answer]:
    """``chat`` again while it is refused ``concurrency_limit_exceeded``, for ``seconds`` at
    most: the lease of a request that just ended is released by its settlement, which the
    gateway writes right after the answer, not before it. Every attempt, the last one last."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    tried: list[Answer] = []
    while True:
        answer = await chat(http, gateway, key, **options)
        tried.append(answer)
        if answer.code != "concurrency_limit_exceeded" or loop.time() > deadline:
            return tried
        await asyncio.sleep(0.02)


def served(answers: Sequence[Answer]) -> tuple[int, int]:
    """(tokens, requests) of the answers a client got 200 for."""
    ok = [a for a in answers if a.status == 200]
    return sum(a.tokens for a in ok), len(ok)


def outcomes(answers: Sequence[Answer]) -> dict[tuple[int, str | None], int]:
    counts: dict[tuple[int, str | None], int] = {}
    for a in answers:
        counts[(a.status, a.code)] = counts.get((a.status, a.code), 0) + 1
    return counts


# -- load ---------------------------------------------------------------------------------------
@dataclass
class Load:
    """``loops`` client loops, spread over the gateways, each sending one request after the
    other (streams and whole answers alternating) until stopped, at most ``max_requests`` each
    and ``max_seconds`` in all. A refused or failed request is followed by a short pause."""

    http: aiohttp.ClientSession
    gateways: Sequence[Endpoint]
    key: Key
    loops: int = 4
    max_requests: int = 400
    max_seconds: float = 20.0
    token_delay: float = 0.005
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> Load:
        self._tasks = [asyncio.create_task(self._loop(i)) for i in range(self.loops)]
        return self

    async def _loop(self, index: int) -> None:
        gateway = self.gateways[index % len(self.gateways)]
        deadline = asyncio.get_running_loop().time() + self.max_seconds
        for n in range(self.max_requests):
            if self._stop.is_set() or asyncio.get_running_loop().time() > deadline:
                return
            answer = await chat(
                self.http,
                gateway,
                self.key,
                stream=(n + index) % 2 == 0,
                words=1 + (n * 7 + index) % 6,
                token_delay=self.token_delay,
            )
            self.answers.append(answer)
            if answer.status != 200:
                await asyncio.sleep(0.01)  # pacing after a refusal, not a wait

    async def until_admitted(self, count: int, seconds: float = 10.0) -> None:
        """Poll until ``count`` answers were 200 (the load is under way)."""
        await eventually(
            lambda: _ready(sum(1 for a in self.answers if a.status == 200) >= count),
            seconds,
            f"the load did not get {count} answers 200: {outcomes(self.answers)}",
        )

    async def stop(self) -> list[Answer]:
        """Stop the loops; each finishes the request it is in (bounded)."""
        self._stop.set()
        async with asyncio.timeout(20):
            await asyncio.gather(*self._tasks)
        return self.answers


async def _ready(value: T) -> T:
    return value


# -- polling ------------------------------------------------------------------------------------
async def eventually(
    check: Callable[[], Awaitable[T]], seconds: float, message: str | Callable[[], str]
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``message`` at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(message() if callable(message) else message)
        await asyncio.sleep(0.05)


# -- the admin listener -------------------------------------------------------------------------
async def admin_get(http: aiohttp.ClientSession, gateway: Endpoint, path: str) -> tuple[int, Any]:
    async with http.get(
        f"{gateway.admin}{path}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as r:
        raw = await r.read()
        try:
            return r.status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return r.status, raw


async def usage_totals(http: aiohttp.ClientSession, gateway: Endpoint, key: Key) -> dict[str, int]:
    """The key's recorded usage today (``GET /admin/keys/<id>/usage?days=1``)."""
    status, body = await admin_get(http, gateway, f"/admin/keys/{key.id}/usage?days=1")
    assert status == 200, f"usage of {key.id}: {status} {body!r}"
    return {k: int(v) for k, v in body["totals"].items()}


_METRIC = re.compile(rb"^(gateway_usage_buffered|gateway_usage_dropped_total)(?:\{[^}]*\})? (\S+)$")


async def buffered(http: aiohttp.ClientSession, gateway: Endpoint) -> tuple[float, float]:
    """(usage records not yet in the store, records dropped) from the gateway's /metrics."""
    async with http.get(f"{gateway.admin}/metrics", timeout=CLIENT_TIMEOUT) as r:
        text = await r.read()
    found: dict[bytes, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            found[m.group(1)] = found.get(m.group(1), 0.0) + float(m.group(2))
    assert len(found) == 2, f"{gateway.name}'s /metrics lacks the usage buffer's metrics"
    return found[b"gateway_usage_buffered"], found[b"gateway_usage_dropped_total"]


# -- the checks every scenario ends with --------------------------------------------------------
@dataclass
class Ledger:
    """A key's answers in one test, and the reservation of the measuring request."""

    key: Key
    reserve: int = 0
    answers: list[Answer] = field(default_factory=list)
    day: str = field(default_factory=lambda: time.strftime("%Y-%m-%d", time.gmtime()))

    def add(self, *answers: Answer) -> None:
        self.answers.extend(answers)


async def measure(http: aiohttp.ClientSession, gateway: Endpoint, key: Key) -> Answer:
    """The measuring request: whole, ``say:2``, always the same bytes (the same reservation)."""
    return await chat(http, gateway, key, stream=False, words=2)


async def calibrate(http: aiohttp.ClientSession, gateways: Sequence[Endpoint], key: Key) -> Ledger:
    """The key's first requests (it must be unused): the measuring request's reservation is
    the daily limit less the remaining tokens it was told; then one request per gateway, so
    every process has the key's plan cached and its store connection made."""
    ledger = Ledger(key)
    first = await measure(http, gateways[0], key)
    assert first.status == 200 and first.store_verdict, f"warm-up: {first}"
    ledger.reserve = key.daily - int(first.headers["x-ratelimit-remaining-tokens"])
    ledger.add(first)
    for gateway in gateways:
        tried = await chat_when_free(http, gateway, key, stream=True)
        ledger.add(*tried)
        assert tried[-1].complete and tried[-1].store_verdict, f"warm-up: {tried[-1]}"
    return ledger


async def ready(http: aiohttp.ClientSession, gateway: Endpoint) -> bool:
    """Whether the gateway's /readyz answers 200 (its store answers a PING)."""
    try:
        async with http.get(f"{gateway.admin}/readyz", timeout=CLIENT_TIMEOUT) as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def admitted_at_once(
    http: aiohttp.ClientSession, gateways: Sequence[Endpoint], ledger: Ledger, seconds: float = 2.0
) -> None:
    """After a fault, once every gateway's store answers (/readyz polled, with the probe below
    at most ``seconds``): the first request is admitted (200, not 429; only ``503
    store_unavailable`` is tried again, while the store comes back), then two parallel streams,
    one per gateway, are both admitted: the key's concurrency is free. A refusal fails the test;
    its message says whether and when the key was admitted again (diagnosis only)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    for gateway in gateways:
        await eventually(
            functools.partial(ready, http, gateway),
            seconds,
            f"{gateway.name}'s store did not answer within {seconds} s of the fault's end",
        )
    tried: list[Answer] = []
    while True:
        probe = await chat(http, gateways[0], ledger.key, stream=False, words=1)
        tried.append(probe)
        if probe.status != 503 or loop.time() > deadline:
            break
        await asyncio.sleep(0.02)
    ledger.add(*tried)
    if probe.status != 200:
        raise AssertionError(
            f"the first request after the fault was refused: {probe} (tries: "
            f"{outcomes(tried)}); {await _relief(http, gateways, ledger)}"
        )
    pair = await asyncio.gather(
        *(
            chat(http, gateways[i % len(gateways)], ledger.key, stream=True, token_delay=0.03)
            for i in range(2)
        )
    )
    ledger.add(*pair)
    if [a.status for a in pair] != [200, 200]:
        raise AssertionError(
            "two parallel requests after the fault: "
            + "; ".join(map(str, pair))
            + f"; {await _relief(http, gateways, ledger)}"
        )


async def _relief(
    http: aiohttp.ClientSession, gateways: Sequence[Endpoint], ledger: Ledger, seconds: float = 2.0
) -> str:
    """For a failure's message: how long until two parallel requests of the key are admitted
    (up to ``seconds``), and the usage still in the gateways' buffers when it was refused."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending = [(await buffered(http, g))[0] for g in gateways]
    while loop.time() - started < seconds:
        pair = await asyncio.gather(
            *(chat(http, g, ledger.key, stream=True, token_delay=0.03) for g in gateways[:2])
        )
        ledger.add(*pair)
        if all(a.status == 200 for a in pair):
            return (
                f"usage records still buffered then: {pending}; two parallel requests were "
                f"admitted again {loop.time() - started:.2f} s later"
            )
        await asyncio.sleep(0.05)
    return f"usage records still buffered then: {pending}; still refused {seconds:g} s later"


async def counters_equal_usage(
    http: aiohttp.ClientSession,
    gateways: Sequence[Endpoint],
    ledger: Ledger,
    seconds: float = 6.0,
) -> None:
    """Once every gateway's usage buffer is written (polled, bounded): the key's recorded usage
    is exactly the tokens and requests of the answers its clients got 200 for, and its token
    counter (the remaining tokens a fresh request is told, plus that request's reservation) is
    exactly those tokens too."""
    tokens, requests = served(ledger.answers)
    last: dict[str, Any] = {}

    async def written() -> bool:
        pending = [await buffered(http, g) for g in gateways]
        totals = await usage_totals(http, gateways[0], ledger.key)
        last.update(pending=pending, totals=totals)
        return (
            all(p == 0 for p, _ in pending)
            and totals["totalTokens"] == tokens
            and totals["requests"] - totals["errors"] == requests
        )

    await eventually(
        written,
        seconds,
        lambda: (
            f"recorded usage of {ledger.key.id} {last.get('totals')} (buffers: "
            f"{last.get('pending')}) never equalled what was served: {tokens} tokens in "
            f"{requests} answers 200"
        ),
    )
    assert all(d == 0 for _, d in last["pending"]), f"usage records dropped: {last['pending']}"
    probe = await measure(http, gateways[0], ledger.key)
    assert probe.status == 200 and probe.store_verdict, f"the measuring request: {probe}"
    if time.strftime("%Y-%m-%d", time.gmtime()) != ledger.day:
        return  # the day's counter started again at UTC midnight: nothing to compare
    counted = ledger.key.daily - int(probe.headers["x-ratelimit-remaining-tokens"]) - ledger.reserve
    ledger.add(probe)
    assert counted == tokens, (
        f"the day's token counter of {ledger.key.id} is {counted}, but the answers served "
        f"{tokens} tokens ({counted - tokens:+d})"
    )


def assert_no_server_errors(answers: Sequence[Answer]) -> None:
    """No 500 (nor any 5xx but 503 store_unavailable), no broken connection, and every 200
    whole (usage, and a stream's [DONE])."""
    bad = [
        a
        for a in answers
        if a.status == 0
        or (a.status >= 500 and (a.status, a.code) != (503, "store_unavailable"))
        or (a.status == 200 and not a.complete)
    ]
    assert not bad, f"{len(bad)} bad answers, e.g. {bad[0]}; all: {outcomes(answers)}"
