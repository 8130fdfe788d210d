"""The capacity service's side of affinity's placement on a shared store (``routing.placing``),
on a real Redis: which upstreams take a lease follows the configuration at each reload; a
placement is the store's choice under the bound, remembered where it went; a freed slot of a
bounded upstream leaves the count at once; and when the store fails, the balancer's own choice
stands in (logged and counted)."""

from __future__ import annotations

import asyncio
import time

import orjson

from gateway.clock import SystemClock
from gateway.config.load import parse_text
from gateway.config.schema import Config
from gateway.metrics import Metrics
from gateway.records import KeyRecord
from gateway.routing.affinity import affinity
from gateway.routing.balancer import Balancer
from gateway.routing.capacity import Capacity
from gateway.routing.chain import Chain
from gateway.routing.router import Router
from gateway.store.capacity_redis import PREFIX, RedisLeaseStore
from tests.clients import KEYS_YAML
from tests.redis_server import RedisServer, free_port
from tests.routing.support import until
from tests.store.test_admission_batches import evalsha_calls

LONG = 60.0
BODY = orjson.dumps(
    {"model": "m", "session_id": "s", "messages": [{"role": "user", "content": "x"}]}
)


def configured(policy: str, store: str) -> Config:
    text = f"""
listen: {{host: 127.0.0.1, port: 0}}
upstreams:
  a: {{url: 'http://127.0.0.1:9'}}
  b: {{url: 'http://127.0.0.1:9'}}
models:
  m: {{upstreams: [a, b], routing: {{policy: {policy}}}}}
store: {{url: '{store}'}}
{KEYS_YAML}"""
    return parse_text(text, "test.yaml")


def service(url: str, timeout_ms: int = 5000) -> Capacity:
    clock = SystemClock()
    leases = RedisLeaseStore(url, timeout_ms, LONG)
    return Capacity(
        Balancer(clock), clock, Metrics(), configured("affinity", url).scheduling, leases
    )


def chain(capacity: Capacity, config: Config) -> Chain:
    router = Router(config, 0)
    route = router.resolve("m")
    assert route is not None

    async def record() -> KeyRecord:
        raise AssertionError("no fallback to ask about")

    return Chain(capacity.balancer, router, capacity.metrics, route, BODY, None, record)


def leases(redis: RedisServer, name: str) -> int:
    return int(redis.call("ZCARD", PREFIX + name))


async def test_which_upstreams_take_a_lease_follows_the_reload(redis_process: RedisServer) -> None:
    """An upstream of an affinity pool takes a lease for every call (its lease set is the
    fleet's count of it); reloaded with the model on least_loaded, none: nothing of the old
    configuration stays."""
    assert redis_process.call("FLUSHALL") == "OK"
    capacity = service(redis_process.url)
    try:
        config = configured("affinity", redis_process.url)
        capacity.configure(config)
        a = config.upstreams["a"]
        assert Router(config, 0).resolve("m").capped  # type: ignore[union-attr]
        assert await capacity.take(a) is a
        assert leases(redis_process, "a") == 1
        config = configured("least_loaded", redis_process.url)
        capacity.configure(config)
        assert not Router(config, 0).resolve("m").capped  # type: ignore[union-attr]
        before = evalsha_calls(redis_process)
        assert await capacity.take(config.upstreams["a"]) is config.upstreams["a"]
        assert leases(redis_process, "a") == 1 and evalsha_calls(redis_process) == before
    finally:
        await capacity.close()


async def test_a_placement_is_the_store_s_and_is_remembered_where_it_went(
    redis_process: RedisServer,
) -> None:
    """Another process holds the session's worker at its bound (its leases in the store, never
    told here): the placement goes to the other worker, and the prompt is remembered there."""
    assert redis_process.call("FLUSHALL") == "OK"
    capacity = service(redis_process.url)
    try:
        config = configured("affinity", redis_process.url)
        capacity.configure(config)
        probe = chain(capacity, config)
        assert probe.first() is not None and probe.pending is not None
        home = probe.pending[0][0].name
        other = "b" if home == "a" else "a"
        seconds = int(redis_process.call("TIME").split()[0])
        until = str(seconds * 1000 + 60_000)
        redis_process.call("ZADD", PREFIX + home, until, "p2:1", until, "p2:2")
        first = chain(capacity, config)
        taken = await capacity.first(first, "o", _no_plan)
        assert taken is not None and taken.name == other  # 2 < ceil(1.25 x 3 / 2) = 2: no
        assert first.tried == [other] and leases(redis_process, other) == 1
        found = affinity(BODY, 256)
        assert found is not None
        prompt = found[1][-1]
        assert capacity.balancer.history.where(found[1]) == (prompt, other)
    finally:
        await capacity.close()


async def _no_plan() -> object:
    raise AssertionError("nothing waits")


async def test_a_bounded_upstream_s_freed_slot_leaves_the_count_at_once(
    redis_process: RedisServer,
) -> None:
    """The release is written to Redis at the end of the turn ``Balancer.release`` ran in (as
    the answer's end goes to the client), not batched with the next turn's calls."""
    assert redis_process.call("FLUSHALL") == "OK"
    capacity = service(redis_process.url)
    try:
        config = configured("affinity", redis_process.url)
        capacity.configure(config)
        a = config.upstreams["a"]
        assert await capacity.take(a) is a
        assert leases(redis_process, "a") == 1
        capacity.balancer.acquire(a)
        capacity.balancer.release(a)
        await asyncio.sleep(0)  # one turn of the loop (a release batched waited three)
        # No await from here: a release not written yet would never go out.
        deadline = time.monotonic() + 5
        while leases(redis_process, "a"):
            assert time.monotonic() < deadline, "the release waited for the loop"
    finally:
        await capacity.close()


async def test_when_the_store_fails_the_balancer_s_choice_stands_in() -> None:
    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens
    capacity = service(url, timeout_ms=300)
    try:
        config = configured("affinity", url)
        capacity.configure(config)
        attempt = chain(capacity, config)
        taken = await capacity.first(attempt, "o", _no_plan)
        assert taken is not None and attempt.tried == [taken.name]
        registry = capacity.metrics.registry
        failed = registry.get_sample_value(
            "gateway_store_errors_total", {"op": "affinity_placement"}
        )
        assert failed == 1
    finally:
        await capacity.close()


async def test_a_reload_that_bounds_an_upstream_gives_its_idle_leases_back(
    redis_process: RedisServer,
) -> None:
    """A capped upstream of a least_loaded model keeps a freed lease idle (room to spare); the
    model reloaded on affinity, that idle lease goes back at once (it would count as a request
    in the bound), not at the pool's next trim."""
    assert redis_process.call("FLUSHALL") == "OK"
    capacity = service(redis_process.url)
    try:
        config = capped("least_loaded", redis_process.url)
        capacity.configure(config)
        # The store's notices heard: the pool may keep leases.
        await until(lambda: capacity.pool.seq is not None, 5, "the subscription")
        a = config.upstreams["a"]
        assert await capacity.take(a) is a
        capacity.balancer.acquire(a)
        capacity.balancer.release(a)
        assert "a" in capacity.pool.roomy and leases(redis_process, "a") == 1  # kept idle
        capacity.configure(capped("affinity", redis_process.url))
        assert "a" not in capacity.pool.roomy
        # (A trim would take up to a renewal, 1 s, or more.)
        await until(lambda: leases(redis_process, "a") == 0, 0.5, "the idle lease given back")
    finally:
        await capacity.close()


def capped(policy: str, store: str) -> Config:
    text = f"""
listen: {{host: 127.0.0.1, port: 0}}
upstreams:
  a: {{url: 'http://127.0.0.1:9', max_concurrency: 64}}
  b: {{url: 'http://127.0.0.1:9', max_concurrency: 64}}
models:
  m: {{upstreams: [a, b], routing: {{policy: {policy}}}}}
store: {{url: '{store}'}}
{KEYS_YAML}"""
    return parse_text(text, "test.yaml")
