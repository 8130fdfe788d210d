"""Talking to upstream workers: the chat POSTs over ``proxy.wire``'s lean keep-alive pool, the
pass-through routes and health probes over one aiohttp session; per-upstream timeouts, header
hygiene, and the one boundary where client errors become ``GatewayError``s.

Timeouts: ``connect`` for the TCP connect; ``first_byte`` for the answer's head *and* its first
body chunk (the time to first token of a stream); ``idle`` between later chunks of a stream. There
is no total cap: a stream may run as long as it keeps producing.

A non-streamed answer is one wait, bounded by the wire's read timer (``first_byte`` of silence,
re-armed only when it fires after data came). Streams are bounded by the relay
(``proxy.handler``): one timer for the head and first chunk, then one watchdog (``Silence``) for
the silences between chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy, istr

from gateway.config.schema import Upstream
from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.wire import (
    ConnectError,
    ConnectTimeout,
    Origin,
    Pool,
    Response,
    TooLarge,
    WireError,
)

# RFC 9110 §7.6.1 hop-by-hop fields, plus what the gateway owns or recomputes itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {
    "host",
    "content-length",
    "content-type",
    "authorization",
    "x-api-key",
    "cookie",
    "accept-encoding",
    "x-request-id",
    "expect",
    # the serving stack's routing, the operator's word (as ``bodies.OPERATOR_FIELDS``): the
    # prefill server llm-d's decode sidecar fetches KV blocks from, a vLLM data-parallel rank
    "x-prefiller-host-port",
    "x-data-parallel-rank",
}
_NOT_RETURNED = HOP_BY_HOP | {"content-length", "content-encoding", "date", "server"}
# The most of a whole answer read into memory (images: base64 in JSON, 128 of them); a larger one
# is refused, not held: a client can make a worker's answer huge (n, max_tokens, logprobs).
ANSWER_MAX = 256 * 1024 * 1024


class AnswerTooLarge(GatewayError):
    """A whole answer past ``ANSWER_MAX``: 502, neither retried nor the worker's failure (the
    request asked for it), and charged what it reserved (``Exchange.unseen``)."""

    status = 502
    default_code = "answer_too_large"


_TRACE_CONTEXT = frozenset({"traceparent", "tracestate"})
_CONNECTION = istr("Connection")  # (its case-folded form made once, not per look-up)


def forward_headers(
    client: CIMultiDictProxy[str],
    upstream: Upstream,
    request_id: str,
    trace: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers sent upstream: the client's end-to-end ones, never its credentials. With
    ``trace`` (tracing on: the attempt's ``traceparent``, and ``tracestate`` when the client's
    trace is continued) the client's own trace context headers are replaced by it; without,
    they pass as they came."""
    drop = _NOT_FORWARDED if trace is None else _NOT_FORWARDED | _TRACE_CONTEXT
    if _CONNECTION in client:  # every line's names (a client may send several)
        lines = client.getall(_CONNECTION)
        drop = drop | {n.strip().lower() for line in lines for n in line.split(",")}
    headers = {}
    for name, value in client.items():  # (a loop: a comprehension is a call of its own)
        if name.lower() not in drop:
            headers[name] = value
    if trace is not None:
        headers.update(trace)
    headers["Content-Type"] = "application/json"
    headers["X-Request-ID"] = request_id
    if upstream.api_key:
        headers["Authorization"] = f"Bearer {upstream.api_key}"
    return headers


def returned_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream answer's headers worth passing to the client: repeated ones (Set-Cookie)
    as their several lines, minus hop-by-hop ones and those any Connection line names."""
    drop = _NOT_RETURNED | {
        n.strip().lower() for line in upstream.getall("Connection", ()) for n in line.split(",")
    }
    return CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in drop)


class UpstreamClient:
    """Chat requests over the lean pool (``proxy.wire``); other traffic over one aiohttp
    session, opened in the running loop by ``start`` (keep-alive connections, no cap on their
    number: the balancer caps per upstream)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.pool = Pool()
        self._targets: dict[str, tuple[Origin, str]] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
        )

    async def close(self) -> None:
        self.pool.close()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        return self._session

    def chat_target(self, upstream: Upstream) -> tuple[Origin, str]:
        """Where chat requests go: ``url`` may be the server's root or its ``/v1`` base, as
        OpenAI clients write it."""
        target = self._targets.get(upstream.url)
        if target is None:
            base = upstream.url.rstrip("/")
            suffix = "/chat/completions" if base.endswith("/v1") else "/v1/chat/completions"
            path = (urlsplit(base).path or "") + suffix
            target = self._targets[upstream.url] = (self.pool.origin(upstream.url), path)
        return target

    def post(
        self,
        upstream: Upstream,
        body: bytes,
        headers: dict[str, str],
        stream: bool = False,
        wait: float | None = None,
    ) -> Awaitable[Response]:
        """POST a chat request; returns at the answer's head (a stream's caller bounds the
        wait itself, a whole answer is bounded by ``wait`` of silence: by default the
        upstream's ``first_byte``)."""
        origin, path = self._targets.get(upstream.url) or self.chat_target(upstream)
        return self.post_to(upstream, origin, path, body, headers, stream, wait)

    async def post_to(
        self,
        upstream: Upstream,
        origin: Origin,
        path: str,
        body: bytes,
        headers: dict[str, str],
        stream: bool = False,
        wait: float | None = None,
    ) -> Response:
        """POST ``body`` to ``path`` on ``upstream`` (any API), its failures as the gateway's
        errors: a connection refused or not accepted in time, silence, a broken answer."""
        timeouts = upstream.timeouts
        silence = wait or timeouts.first_byte
        try:
            return await self.pool.post(
                origin,
                path,
                headers,
                body,
                timeouts.connect,
                None if stream else silence,
            )
        except ConnectTimeout as exc:
            raise UpstreamUnavailable(
                f"Upstream '{upstream.name}' did not accept a connection within "
                f"{timeouts.connect:g} s; try again shortly."
            ) from exc
        except ConnectError as exc:
            raise UpstreamUnavailable(
                f"Upstream '{upstream.name}' refused the connection; try again shortly."
            ) from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"Upstream '{upstream.name}' sent nothing within {silence:g} s."
            ) from exc
        except WireError as exc:
            raise UpstreamUnavailable(
                f"Upstream '{upstream.name}' failed before answering; try again shortly."
            ) from exc


async def read_chunk(response: Response, upstream: Upstream) -> bytes:
    """The next piece of a streamed answer (``b""`` at its end); the caller bounds the wait."""
    try:
        return await response.readany()
    except WireError as exc:
        raise UpstreamUnavailable(
            f"Upstream '{upstream.name}' broke off the answer; try again."
        ) from exc


async def read_body(response: Response, upstream: Upstream) -> bytes:
    """The whole (non-streamed) answer body, at most ``ANSWER_MAX`` bytes; the wire's read
    timer bounds each silence."""
    try:
        return await response.read(ANSWER_MAX)
    except TooLarge:
        raise AnswerTooLarge(
            f"Upstream '{upstream.name}' sent an answer too large to pass on (over "
            f"{ANSWER_MAX} bytes); ask for less (max_tokens, n, logprobs)."
        ) from None
    except TimeoutError as exc:
        raise UpstreamTimeout(
            f"Upstream '{upstream.name}' stalled while sending its answer."
        ) from exc
    except WireError as exc:
        raise UpstreamUnavailable(
            f"Upstream '{upstream.name}' broke off the answer; try again."
        ) from exc


async def probe(client: UpstreamClient, upstream: Upstream, path: str) -> bool:
    """One health probe: did ``GET url+path`` answer 2xx within the connect timeout (+1 s)?"""
    headers = {"Authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}
    try:
        async with asyncio.timeout(upstream.timeouts.connect + 1.0):
            async with client.session.get(upstream.url + path, headers=headers) as response:
                await response.read()
                return 200 <= response.status < 300
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


async def scrape(
    client: UpstreamClient, upstream: Upstream, path: str, seconds: float
) -> str | None:
    """The text of the worker's metrics page, or None if it did not answer 200 within
    ``seconds``. ``path`` is under the server's root (where vLLM, TGI and llama.cpp serve
    ``/metrics``), whatever path the URL has. At most 4 MiB is read (vLLM's is ~100 KiB)."""
    headers = {"Authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}
    root = "/".join(upstream.url.split("/", 3)[:3])  # scheme://host:port
    try:
        async with asyncio.timeout(seconds):
            async with client.session.get(root + path, headers=headers) as response:
                if response.status != 200:
                    return None
                raw = await response.content.read(4 * 1024 * 1024)
                return raw.decode("utf-8", "replace")
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None
