"""What tracing costs the request path: the calls one chat request makes on its tracer (request
span; admission; one upstream attempt with its trace headers and first-token event;
settlement), timed per request with tracing off (the no-op), on but not sampled, and on and
sampled, in alternating rounds so the machine's drift falls on all three alike.

    .venv/bin/python bench/tracing_overhead.py [ROUNDS]

Tracing on needs the ``tracing`` extra; its spans go to a closed port (the export fails off the
request path, on the SDK's thread, and is not what is measured).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable

from aiohttp.test_utils import make_mocked_request

from gateway.config.schema import Tracing
from gateway.proxy.exchange import Exchange
from gateway.tracing import NO_TRACER, Tracer
from gateway.tracing.otel import SdkTracer

REQUEST = make_mocked_request("POST", "/v1/chat/completions")
EX = Exchange("label", 0.0, "id")


def per_request_ns(tracer: Tracer, requests: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(requests):
        span = tracer.request(EX, REQUEST)
        with span:
            with span.child("admission"):
                pass
            with span.attempt("upstream") as attempt:
                _ = attempt.trace_headers
                attempt.event("first_token")
            with span.child("settlement"):
                pass
    return (time.perf_counter_ns() - started) / requests


async def main(rounds: int) -> None:
    arms: dict[str, tuple[Tracer, int]] = {"off": (NO_TRACER, 200_000)}
    for name, ratio in (("on, not sampled", 0.0), ("on, sampled", 1.0)):
        settings = Tracing("http://127.0.0.1:1", sample_ratio=ratio, max_queue=1_000_000)
        tracer = SdkTracer(settings, interval=3600, timeout=0.2)
        await tracer.start()
        arms[name] = (tracer, 2_000)
    found: dict[str, list[float]] = {name: [] for name in arms}
    order: Callable[[int], list[str]] = lambda i: list(arms)[i % 3 :] + list(arms)[: i % 3]  # noqa: E731
    for i in range(rounds):
        for name in order(i):
            tracer, requests = arms[name]
            found[name].append(per_request_ns(tracer, requests))
    for tracer, _ in arms.values():
        await tracer.stop()
    for name, runs in found.items():
        print(f"{name:16} {statistics.median(runs) / 1000:9.2f} µs a request (median of {rounds})")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9))
