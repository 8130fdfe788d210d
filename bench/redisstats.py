"""What the gateway asks of Redis per request.

Two views:

- ``Snapshot`` / ``cost``: ``INFO commandstats`` (calls per command, those run inside Lua
  scripts included) and ``INFO stats`` (``total_commands_processed``, scripts' inner calls
  included too; ``total_reads_processed``: socket reads, about one per round trip or pipeline
  piece) before and after a saturation run, divided by the requests the gateway answered
  meanwhile (its ``gateway_requests_total``: wrk does not count the requests in flight when it
  stops, which were admitted and settled all the same).
- ``monitor``: a short sample under load with a ``MONITOR`` connection (``redis-cli monitor``
  writing to a file), which tells which script each EVALSHA ran (by SHA-1 of the gateway's
  ``store/*.lua`` sources), which key each GET read, and how settlements are batched (a run of
  consecutive settle EVALSHAs from one connection is one pipeline, or one piece of it).
"""

from __future__ import annotations

import codecs
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

SCRIPT_NAMES = ("admit", "settle", "renew", "hit", "insert_key")


def script_shas() -> dict[str, str]:
    """SHA-1 -> script name, as the gateway's Redis store loads them."""
    from gateway.store.redis_codec import script

    return {hashlib.sha1(script(n).encode()).hexdigest(): n for n in SCRIPT_NAMES}


@dataclass
class Snapshot:
    calls: dict[str, int]
    commands: int  # total_commands_processed (scripts' inner calls included)
    reads: int  # total_reads_processed
    cpu: float = 0.0  # used_cpu_user + used_cpu_sys of redis-server, seconds


def snapshot(port: int) -> Snapshot:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        stats = client.info("commandstats")
        general = client.info("stats")
        cpu = client.info("cpu")
    finally:
        client.close()
    calls = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }
    return Snapshot(
        calls,
        int(general["total_commands_processed"]),
        int(general["total_reads_processed"]),
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    )


@dataclass
class RedisCost:
    """Per request, over a saturation run."""

    requests: int
    calls: dict[str, float]  # by command, scripts' inner calls included
    commands: float  # every command, scripts' inner calls included
    reads: float  # Redis socket reads (≈ round trips; a large pipeline takes several)
    cpu_us: float = 0.0  # redis-server's CPU time (user + sys), microseconds
    settle_lag: float = 0.0  # seconds from the end of the load to the last EVALSHA


def cost(before: Snapshot, after: Snapshot, requests: int, info_calls: int = 0) -> RedisCost:
    """Per request; ``info_calls``: INFO calls made between the two snapshots (each a read)."""
    n = max(1, requests)
    # INFO is the bench's (three calls per snapshot: three counted between the readings).
    calls = {
        name: (count - before.calls.get(name, 0)) / n
        for name, count in after.calls.items()
        if name != "info"
    }
    return RedisCost(
        requests=requests,
        calls={k: v for k, v in sorted(calls.items(), key=lambda i: -i[1]) if v > 0},
        commands=sum(calls.values()),
        reads=(after.reads - before.reads - 3 - info_calls) / n,
        cpu_us=(after.cpu - before.cpu) / n * 1e6,
    )


_LINE = re.compile(r'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?(?: "([^"]*)")?')
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"')


def carried(name: str, line: str) -> int:
    """The admissions (one turn of a worker's loop: several) or settlements an admit or settle
    EVALSHA's MONITOR line carries: admit.lua's ARGV past the sixth are their request ids,
    settle.lua's ARGV 4 holds them (redis_codec.SETTLEMENT each; the scripts' headers)."""
    from gateway.store.redis_codec import SETTLEMENT

    words = _TOKEN.findall(line)
    args = words[3 + int(words[2]) :]
    if name == "admit":
        return len(args) - 6
    return len(codecs.escape_decode(args[3].encode())[0]) // SETTLEMENT.size


@dataclass
class MonitorSample:
    label: str
    requests: int = 0
    admit: int = 0  # EVALSHA of admit.lua
    admissions: int = 0  # admissions those decided (their request ids): one a request
    settle: int = 0  # EVALSHA of settle.lua
    settlements: int = 0  # settlements those carried (settle.lua's ARGV 4)
    settle_runs: int = 0  # consecutive settle EVALSHAs of one connection: ≈ pipelines
    key_gets: int = 0  # GET gw:kh:<hash> (a key record) or gw:kid:<id>
    other_gets: int = 0  # other GETs (e.g. the owner's plan, cached 30 s per worker)
    client_commands: dict[str, int] = field(default_factory=dict)  # sent by the gateway
    script_commands: int = 0  # run inside scripts
    error: str = ""

    def per_request(self, count: int) -> float:
        return count / self.requests if self.requests else 0.0


def leases(port: int) -> int:
    """Concurrency leases held now (``gw:{owner}:held:<key>`` ZSETs): once the load has
    stopped and every settlement is written, each one left is a request admitted and never
    settled, whose slot stays taken until its lease expires."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        return sum(int(client.zcard(k)) for k in client.scan_iter(match="gw:*:held:*"))
    finally:
        client.close()


def wait_settled(port: int, budget: float = 5.0) -> tuple[float, int]:
    """Wait until no EVALSHA has run for 0.3 s (the settlements of the last answers are
    written after them, in batches): (seconds until the last one, INFO calls made)."""
    started = time.monotonic()
    last = snapshot(port).calls.get("evalsha", 0)
    quiet_since, polls = started, 1
    while time.monotonic() - started < budget:
        time.sleep(0.1)
        now = snapshot(port).calls.get("evalsha", 0)
        polls += 1
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= 0.3:
            break
    return quiet_since - started, 3 * polls  # a snapshot is three INFO calls


def parse_monitor(path: Path, label: str, requests: int) -> MonitorSample:
    shas = script_shas()
    out = MonitorSample(label, requests)
    run_client: str | None = None
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        out.error = f"no MONITOR output: {err}"
        return out
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        client, command, first = match.group(1), match.group(2).lower(), match.group(3) or ""
        if client == "lua":
            out.script_commands += 1
            continue
        if command in ("monitor", "info"):
            continue
        if command == "evalsha":
            name = shas.get(first, "unknown script")
            command = f"evalsha ({name})"
            if name == "admit":
                out.admit += 1
                out.admissions += carried(name, line)
            elif name == "settle":
                out.settle += 1
                out.settlements += carried(name, line)
                if run_client != client:
                    out.settle_runs += 1
                run_client = client
                out.client_commands[command] = out.client_commands.get(command, 0) + 1
                continue
        elif command == "get":
            if first.startswith(("gw:kh:", "gw:kid:")):
                out.key_gets += 1
            else:
                out.other_gets += 1
        run_client = None
        out.client_commands[command] = out.client_commands.get(command, 0) + 1
    return out
