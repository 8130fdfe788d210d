"""The routing bench's fleet as a discrete-event simulation: the real ``Balancer`` of each
gateway process on a simulated clock, so that many workloads can be compared in seconds and
with no noise from the machine (``bench/routing.py`` measures one workload on real sockets).

    flock /tmp/bench.lock .venv/bin/python bench/routing_sim.py [ARM ...]   # ~1 min, 8 seeds

The same fleet and workload as ``bench/routing.py``: 4 workers of ``bench/gpu_worker.py``'s
model (a prefix cache of 3,000 blocks of 16 tokens, LRU; 0.2 ms per uncached prompt token,
20 ms per output token, 4 slots and a FIFO queue), 2 gateway processes reading the workers'
running and waiting requests every 0.1 s (read 5 ms after the worker reported them), 1 ms
between a gateway and a worker each way, 48 conversations of 10 turns replayed with 16 in
flight (the next turn of the conversation waiting longest), 16 output tokens. Each workload is
``routing_workload.workload`` with another seed (16 is the one ``bench/routing.py`` runs).
Arms: least_loaded; affinity with and without the memory of prompts (``routing.history``),
with placements told to the other gateway (``+told``: ``routing.placements``, received 2 ms
later, as over a store's broadcast); requests alternating between the gateways, each
conversation pinned to one (``+pinned``), or each request to a gateway drawn at random
(``+random``). The fleet's loads told between the gateways (``+loads``: ``routing.loads``,
each message received 2 ms after it is sent; ``+noguard``: without the bound on placements not
told yet), one gateway (``+one``), no worker signals (``+nosignals``), network hops of 0.5 to 1.5
times 1 ms and decode times ±10 % (``+jitter``), the client's round trip before its next turn
(``+client``), capped upstreams with a store round trip of S seconds between choosing and
counting a request (``+lease=S``, as a lease under ``max_concurrency`` on a shared store). The
bound is sampled as ``bench/routing.py`` samples it: the workers' running + waiting every 20 ms
against ``ceil(1.25 x mean)`` (the last column: the same over the gateways' in-flight counts).
Arguments: the arms to run (their least_loaded arms come too); ``SIM_SEEDS``: how many workloads;
``SIM_TOLD``: seconds a message takes to the other gateway (0.002). Also at each placement, at
the worker on arrival and at the gateways' count, against the same bound.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import random
import statistics
import sys
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import orjson
from gpu_worker import BLOCK, block_hashes, prompt_text
from routing_bounds import over_bound
from routing_workload import IN_FLIGHT, LOAD_FACTOR, SIGNALS_INTERVAL, workload

from gateway.clock import FakeClock
from gateway.config.schema import ModelRouting, Upstream
from gateway.routing import loads as fleet_loads
from gateway.routing.affinity import affinity
from gateway.routing.balancer import Balancer

PREFILL, DECODE, OUTPUT, SLOTS, CACHE_BLOCKS = 0.0002, 0.02, 16, 4, 3000
NET, READ_DELAY, WORKERS = 0.001, 0.005, 4
# A message told through the store's broadcast reaches the other processes (``SIM_TOLD``
# seconds; a store on the same host answers in ~0.3 ms: with 2 ms a tell ties with the client's
# next request, 2 hops of ``NET``, and loses, which real tells told at once do not).
TOLD = float(os.environ.get("SIM_TOLD", "0.002"))
SAMPLE = 0.02  # the workers' loads sampled this often, as ``bench/routing.py`` does
Messages = list[dict[str, str]]


class Fleet:
    """The workers' caches, slots and queues, and the gateways' balancers, on one clock."""

    def __init__(
        self,
        gateways: int,
        policy: str,
        memory: bool,
        pinned: bool,
        told: bool,
        rng: Any,
        loads: bool = False,
        lease: float = 0.0,
        signals: bool = True,
    ) -> None:
        self.clock = FakeClock(0.0)
        cap = 64 if lease else None  # a lease per request is what a cap costs on a shared store
        self.upstreams = tuple(
            Upstream(name=f"gpu{i}", url=f"http://gpu{i}", max_concurrency=cap) for i in range(4)
        )
        self.balancers = [Balancer(self.clock, random.Random(g)) for g in range(gateways)]
        for balancer in self.balancers:
            balancer.history.capacity = balancer.history.capacity if memory else 0
            balancer.placements.sharing = told
            balancer.loads.sharing = loads
        self.lease = lease  # a store round trip between choosing and sending (a capped upstream)
        self.signals = signals
        self.jitter: random.Random | None = None
        self.client = False
        self.noguard = False
        self.flushing = [False] * gateways  # a message of counts is due
        self.next_flush = [0.0] * gateways
        self.load_messages = 0
        self.samples: list[list[float]] = []
        self.held: list[list[float]] = []  # the gateways' in flight per upstream, summed
        self.rng = rng  # a gateway per request at random, when given
        self.told = 0  # messages the gateways broadcast
        policy, _, factor = policy.partition("@")  # "affinity@2": load_factor 2
        self.routing = ModelRouting(policy=policy, load_factor=float(factor or 1.25))  # type: ignore[arg-type]
        self.pinned = pinned
        self.caches: list[OrderedDict[bytes, None]] = [OrderedDict() for _ in range(WORKERS)]
        self.running = [0] * WORKERS
        self.queues: list[deque[tuple[Any, ...]]] = [deque() for _ in range(WORKERS)]
        self.events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.order = itertools.count()
        self.ttfts: list[float] = []
        self.waits: list[float] = []
        self.hits = self.tokens = 0
        # Placements over ceil(1.25 x mean) (by 1, by 2+): at the worker on arrival (its
        # running + waiting, this one counted), and at the gateways on the count (their in
        # flight per upstream, summed over the processes, this one counted).
        self.arrived_over = [0, 0, 0]  # arrivals, over, over by 2+
        self.counted_over = [0, 0, 0]

    def at(self, when: float, job: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self.events, (when, next(self.order), job, args))

    # -- a request's way: gateway, worker, back ---------------------------------------------
    def send(self, now: float, conversation: int, count: int, messages: Messages) -> int:
        if self.rng is not None:
            gateway = self.rng.randrange(len(self.balancers))
        else:
            gateway = (conversation if self.pinned else count) % len(self.balancers)
        balancer = self.balancers[gateway]
        found = affinity(orjson.dumps({"model": "sim", "messages": messages}), 256)
        key, prefixes = found if found is not None else (None, ())
        upstream = balancer.pick(self.upstreams, (), None, self.routing, key, "sim", prefixes)
        assert upstream is not None
        told = balancer.placements.message()
        if told is not None:
            self.told += 1
            for other in self.balancers:
                self.at(now + TOLD, lambda _now, b=other, m=told: b.placements.receive(m))
        worker = self.upstreams.index(upstream)
        request = (messages, now, gateway, upstream, conversation)
        if self.lease:  # as ``routing.capacity`` does: the lease's round trip, then the count
            self.at(now + self.lease, self.leased, gateway, upstream, request)
        else:
            self.leased(now, gateway, upstream, request)
        return worker

    def leased(self, now: float, gateway: int, upstream: Upstream, request: Any) -> None:
        balancer = self.balancers[gateway]
        balancer.acquire(upstream)
        held = [sum(b.state(u.name).in_flight for b in self.balancers) for u in self.upstreams]
        _tally(self.counted_over, held, self.upstreams.index(upstream))
        if self.noguard:  # as if the others knew of it at once: no bound on untold placements
            balancer.state(upstream.name).unknown = 0
        self.counts_changed(now, gateway, upstream)
        self.at(now + self.net(), self.arrive, self.upstreams.index(upstream), request)

    def net(self) -> float:
        """One network hop: ``NET``, or (``+jitter``) 0.5 to 1.5 times it."""
        return NET if self.jitter is None else NET * (0.5 + self.jitter.random())

    def counts_changed(self, now: float, gateway: int, upstream: Upstream) -> None:
        """As ``routing.loads`` does on a loop: one message per ``INTERVAL`` at most, but at
        once for an upstream affinity bounds."""
        balancer = self.balancers[gateway]
        if not balancer.loads.sharing:
            return
        urgent = getattr(balancer.state(upstream.name), "bounded", False)  # (before: never)
        if urgent and self.next_flush[gateway] > now:
            self.next_flush[gateway] = now
            self.flushing[gateway] = True
            self.at(now, self.flush, gateway)
        elif not self.flushing[gateway]:
            self.flushing[gateway] = True
            self.at(max(now, self.next_flush[gateway]), self.flush, gateway)

    def flush(self, now: float, gateway: int) -> None:
        self.flushing[gateway] = False
        message = self.balancers[gateway].loads.message()
        if message is None:
            return
        self.load_messages += 1
        self.next_flush[gateway] = now + fleet_loads.INTERVAL
        for other in self.balancers:
            self.at(now + TOLD, lambda _now, b=other, m=message: b.loads.receive(m))
        self.at(now + TOLD, lambda _now, b=self.balancers[gateway]: b.loads.delivered())

    def sample(self, now: float) -> None:
        self.samples.append([self.running[w] + len(self.queues[w]) for w in range(WORKERS)])
        self.held.append(
            [sum(b.state(u.name).in_flight for b in self.balancers) for u in self.upstreams]
        )
        self.at(now + SAMPLE, self.sample)

    def arrive(self, now: float, worker: int, request: tuple[Any, ...]) -> None:
        row = [self.running[w] + len(self.queues[w]) + (w == worker) for w in range(WORKERS)]
        _tally(self.arrived_over, row, worker)
        if self.running[worker] < SLOTS:
            self.start(now, worker, request, now)
        else:
            self.queues[worker].append((request, now))

    def start(self, now: float, worker: int, request: tuple[Any, ...], arrived: float) -> None:
        messages, sent = request[0], request[1]
        self.running[worker] += 1
        text = prompt_text({"messages": messages})
        blocks, tokens = block_hashes(text), max(1, len(text) // 4)
        cache, hit = self.caches[worker], 0
        for name in blocks:
            if name not in cache:
                break
            hit += 1
        for name in blocks:
            cache[name] = None
            cache.move_to_end(name)
        while len(cache) > CACHE_BLOCKS:
            cache.popitem(last=False)
        hit_tokens = min(tokens, hit * BLOCK)
        self.hits, self.tokens = self.hits + hit_tokens, self.tokens + tokens
        prefill = (tokens - hit_tokens) * PREFILL
        self.ttfts.append(now + prefill + DECODE + NET - sent)
        self.waits.append(now - arrived)
        decode = DECODE * OUTPUT
        if self.jitter is not None:  # the tokens' times vary by 10 % per request
            decode *= 0.9 + 0.2 * self.jitter.random()
        self.at(now + prefill + decode, self.finish, worker, request)

    def finish(self, now: float, worker: int, request: tuple[Any, ...]) -> None:
        self.running[worker] -= 1
        if self.queues[worker]:
            waiting, arrived = self.queues[worker].popleft()
            self.start(now, worker, waiting, arrived)
        self.at(now + self.net(), self.released, request)

    def released(self, now: float, request: tuple[Any, ...]) -> None:
        _, _, gateway, upstream, conversation = request
        self.balancers[gateway].release(upstream)
        self.counts_changed(now, gateway, upstream)
        if self.client:  # the answer's end reaches the client, its next turn the gateway
            self.at(now + self.net() + self.net(), self.on_done, conversation)
        else:
            self.on_done(now, conversation)

    on_done: Callable[[float, int], None]

    # -- the gateways' reads of the workers' metrics ----------------------------------------
    def read(self, now: float, gateway: int) -> None:
        if not self.signals:
            return
        seen = [(len(self.queues[w]), self.running[w]) for w in range(WORKERS)]
        self.at(now + READ_DELAY, self.observe, gateway, seen)
        self.at(now + SIGNALS_INTERVAL, self.read, gateway)

    def observe(self, now: float, gateway: int, seen: list[tuple[int, int]]) -> None:
        until = now + 3 * SIGNALS_INTERVAL
        for upstream, (waiting, running) in zip(self.upstreams, seen, strict=True):
            cache = min(1.0, running * 0.2)
            self.balancers[gateway].observe(upstream.name, waiting, running, cache, until)


def _tally(counts: list[int], row: list[int], index: int) -> None:
    """One placement on ``index`` with ``row`` the loads, it counted: against ceil(1.25 x
    mean) (the bench's ``LOAD_FACTOR``)."""
    excess = row[index] - math.ceil(LOAD_FACTOR * sum(row) / len(row) - 1e-9)
    counts[0] += 1
    counts[1] += excess > 0
    counts[2] += excess > 1


def replay(
    arm: str, convs: list[list[Messages]], gateways: int = 2, seed: int = 0
) -> dict[str, float]:
    """One arm over one workload: TTFT median, share of requests that waited, hit rate, and
    placement messages broadcast per request."""
    policy, _, options = arm.partition("+")
    rng = random.Random(seed) if "random" in options else None
    flags = options.split("+")
    lease = next((float(f[6:]) for f in flags if f.startswith("lease=")), 0.0)
    fleet = Fleet(
        1 if "one" in flags else gateways,
        policy,
        "nomemory" not in flags,
        "pinned" in flags,
        "told" in flags,
        rng,
        loads="loads" in flags,
        lease=lease,
        signals="nosignals" not in flags,
    )
    ready, turn, count = list(range(len(convs))), [0] * len(convs), itertools.count()

    def next_turn(now: float, done: int | None = None) -> None:
        if done is not None:
            turn[done] += 1
            if turn[done] < len(convs[done]):
                ready.append(done)
        if ready:
            c = ready.pop(0)
            fleet.send(now, c, next(count), convs[c][turn[c]])

    fleet.client = "client" in flags
    fleet.noguard = "noguard" in flags
    if "jitter" in flags:
        fleet.jitter = random.Random(seed)
    fleet.on_done = next_turn
    for g in range(len(fleet.balancers)):
        fleet.at(g * SIGNALS_INTERVAL / 2, fleet.read, g)
    for _ in range(IN_FLIGHT):
        fleet.at(0.5, next_turn)
    fleet.at(0.5, fleet.sample)
    total = sum(len(c) for c in convs)
    while len(fleet.ttfts) < total or any(fleet.running) or any(fleet.queues):
        when, _, job, args = heapq.heappop(fleet.events)
        fleet.clock._mono = when  # the balancers' monotonic clock
        job(when, *args)
    share, excess = over_bound(fleet.samples)
    _, held = over_bound(fleet.held)
    return {
        "held2": held[1] + held[2],
        "arrived_over": fleet.arrived_over[1] / max(1, fleet.arrived_over[0]),
        "arrived_over2": fleet.arrived_over[2] / max(1, fleet.arrived_over[0]),
        "counted_over": fleet.counted_over[1] / max(1, fleet.counted_over[0]),
        "counted_over2": fleet.counted_over[2] / max(1, fleet.counted_over[0]),
        "over": share,
        "over2": excess[1] + excess[2],
        "over3": excess[2],
        "load_told": fleet.load_messages / total,
        "ttft_p50_ms": 1000 * statistics.median(fleet.ttfts),
        "waited": sum(1 for w in fleet.waits if w > 0.001) / len(fleet.waits),
        "hit_rate": fleet.hits / fleet.tokens,
        "told": fleet.told / total,
    }


ARMS = (
    "least_loaded",
    "affinity+nomemory",
    "affinity",
    "affinity+told",
    "least_loaded+pinned",
    "affinity+nomemory+pinned",
    "affinity+pinned",
    "least_loaded+random",
    "affinity+random",
    "affinity+told+random",
)


def base_of(arm: str) -> str:
    """The least_loaded arm an arm is compared with: the same way of choosing gateways, the
    same network and leases (no tells: ``least_loaded`` as it was)."""
    kept = ("pinned", "random", "jitter", "client")
    flags = [f for f in arm.split("+")[1:] if f in kept or f.startswith("lease=")]
    return "+".join(["least_loaded", *flags])


def main() -> None:
    seeds = range(16, 16 + int(os.environ.get("SIM_SEEDS", 8)))
    arms = sys.argv[1:] or ARMS
    arms = [*dict.fromkeys([base_of(a) for a in arms] + list(arms))]
    rows = {arm: [replay(arm, workload(48, 10, seed=s), seed=s) for s in seeds] for arm in arms}
    print("| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | hits | told |")
    print("|---|" + "--:|" * (len(seeds) + 3))
    for arm, results in rows.items():
        p50 = [r["ttft_p50_ms"] for r in results]
        base = rows[base_of(arm)]
        ratios = [r["ttft_p50_ms"] / b["ttft_p50_ms"] for r, b in zip(results, base, strict=True)]
        cells = " | ".join(f"{p:.0f} ({x:.2f}x)" for p, x in zip(p50, ratios, strict=True))
        hits = statistics.mean(r["hit_rate"] for r in results)
        told = statistics.mean(r["told"] for r in results)
        print(
            f"| {arm} | {cells} | {statistics.mean(p50):.0f} ({statistics.mean(ratios):.2f}x)"
            f" | {hits:.1%} | {told:.3f} |"
        )
    print()
    print(
        "| arm | TTFT p50 of least_loaded's | hits | samples over | by 2+ | by 3+ "
        "| worst seed over / 2+ | messages per request (placements / counts) "
        "| gateways' by 2+ | arrivals over, by 2+ | counts over, by 2+ |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for arm, results in rows.items():
        base = rows[base_of(arm)]
        ratio = statistics.mean(
            r["ttft_p50_ms"] / b["ttft_p50_ms"] for r, b in zip(results, base, strict=True)
        )
        mean = {k: statistics.mean(r[k] for r in results) for k in results[0]}
        worst = max(results, key=lambda r: r["over2"])
        print(
            f"| {arm} | {ratio:.2f}x | {mean['hit_rate']:.1%} | {mean['over']:.1%}"
            f" | {mean['over2']:.2%} | {mean['over3']:.2%}"
            f" | {worst['over']:.1%} / {worst['over2']:.2%}"
            f" | {mean['told']:.3f} / {mean['load_told']:.3f} | {mean['held2']:.2%}"
            f" | {mean['arrived_over']:.2%}, {mean['arrived_over2']:.2%}"
            f" | {mean['counted_over']:.2%}, {mean['counted_over2']:.2%} |"
        )


if __name__ == "__main__":
    main()
