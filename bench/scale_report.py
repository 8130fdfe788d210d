"""The scale bench's verdicts against its targets, its report (the section added
to bench/RESULTS.md) and its History line."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from common import RESULTS
from scale_base import LISTPACK_MAX, LOAD_CONCURRENCY, calls_text, mb, p, plural, verdict
from scale_census import CLASS_ORDER
from scale_gateway import GatewayRss
from scale_runs import RunResult, Side
from scale_sizing import Sizing
from scale_tenant import Tenant

from gateway.auth.service import CACHE_MAX, NEGATIVE_TTL, POSITIVE_TTL
from gateway.limits.limiter import PLAN_TTL

UNITS = (
    (
        "key",
        "key record: `gw:kh:<sha256>` (its JSON), `gw:kid:<id>`, its member of the owner's set",
    ),
    ("owner", "owner: its key set `gw:{o}:keys` (each key's member is counted with the key)"),
    ("plan", "owner's plan name `gw:{o}:plan`, when one is set"),
    ("owner_active", "owner in use: its month counters `tok:o` and last-use hash `lastused`"),
    ("key_active", "key in use: its counters `tok:<k>`, its last-use field, its days index"),
    ("usage_day", "usage row: one key, one model, one UTC day (`use:<k>:<day>`, kept 100 days)"),
    ("usage_model", "each further model (or API) of the same key and day"),
    ("lease_first", "request in flight: the first of its key (the lease set `held:<k>`)"),
    ("lease_member_lp", "each further request in flight on the key (up to 128)"),
    ("lease_member_sl", "each further request in flight on the key (past 128: a skiplist)"),
    ("rpm_first", "rpm log with one entry (`rpm:k:<k>`; the plan's `rpm:o` is the same)"),
    ("rpm_member_lp", "each further admission in the log's minute (up to 128)"),
    ("rpm_member_sl", "each further admission in the log's minute (past 128)"),
    ("tpm_first", "tpm minute with one request (`tpmr:k:<k>` + `tpmrv:k:<k>`; the plan's alike)"),
    ("tpm_member_lp", "each further request in the minute (up to 128)"),
    ("tpm_member_sl", "each further request in the minute (past 128)"),
    ("done", "settlement of a request admitted while the store was down (`done:<id>`, 1 hour)"),
)


@dataclass
class Outcome:
    when: str
    commit: str
    quick: bool
    sizes: Sizing
    runs: list[RunResult]
    pair_own: tuple[Side, Side]
    pair_probe: tuple[Side, Side]
    tenant: Tenant
    gateway: GatewayRss | None
    seconds: float = 0.0
    verdicts: list[tuple[str, str, bool]] = field(default_factory=list)


def judge(o: Outcome) -> None:
    by_keys = {r.spec.keys: r for r in o.runs}
    mid = by_keys[1000]
    small, big = mid.checkpoints[0], mid.checkpoints[-1]
    growth = big.census.used / small.census.used - 1
    o.verdicts.append(
        (
            f"Redis memory, 1,000 keys: after {big.requests:,} requests within 10 % of after "
            f"{small.requests:,}",
            f"{mb(small.census.used)} → {mb(big.census.used)} MB ({growth:+.1%})",
            abs(growth) <= 0.10,
        )
    )
    most = max(by_keys)
    # Judged on the same admission in both (one new governed key): the runs' own keys differ in
    # their mix of limits (1 key: all governed) and in how often the owner's plan is read.
    for label, (one, many) in (("one new governed key in each", o.pair_probe),):
        ratio = p(many.times, 99) / p(one.times, 99)
        o.verdicts.append(
            (
                f"admission p99 at {most:,} keys within 10 % of 1 key ({label}, c1, alternated)",
                f"{p(one.times, 99):.3f} ms vs {p(many.times, 99):.3f} ms: x{ratio:.2f}",
                ratio <= 1.10,
            )
        )
        if one.server_p99 and many.server_p99:
            ratio = many.server_p99 / one.server_p99
            o.verdicts.append(
                (
                    f"Redis-side EVALSHA p99 at {most:,} keys within 10 % of 1 key ({label})",
                    f"{one.server_p99:.0f} µs vs {many.server_p99:.0f} µs: x{ratio:.2f}",
                    ratio <= 1.10,
                )
            )
    for run in o.runs:
        for c in run.checkpoints:
            ratio = c.formula / c.census.held
            o.verdicts.append(
                (
                    f"sizing formula within 20 % of used_memory: {plural(run.spec.keys, 'key')}, "
                    f"{c.requests:,} requests",
                    f"{mb(c.formula)} vs {mb(c.census.held)} MB (x{ratio:.2f})",
                    abs(ratio - 1) <= 0.20,
                )
            )
    g = o.gateway
    if g is not None:
        o.verdicts.append(
            (
                f"gateway RSS ≤ 200 MB per worker after {g.keys:,} keys",
                f"{g.after_mb:.0f} MB after, {g.peak_mb:.0f} MB peak (idle {g.idle_mb:.0f} MB)",
                g.peak_mb <= 200,
            )
        )
        if g.census is not None:
            total = sum(g.predicted.values())
            ratio = total / g.census.held
            o.verdicts.append(
                (
                    f"sizing formula within 20 % of used_memory: the gateway's Redis ({g.keys:,} "
                    "keys, real time)",
                    f"{mb(total)} vs {mb(g.census.held)} MB (x{ratio:.2f})",
                    abs(ratio - 1) <= 0.20,
                )
            )


def report(o: Outcome) -> list[str]:
    s = o.sizes
    mode = "quick (smoke) mode" if o.quick else "full mode"
    lines = [
        f"## Scale: Redis memory and admission cost by keys and requests, {o.when} `{o.commit}`",
        "",
        f"`bench/scale.py`, {mode}, {o.seconds:.0f} s; redis-server "
        f"{_redis_version()}, no persistence, default encodings (listpack up to "
        f"{LISTPACK_MAX} entries). The store is driven by a `Limiter` as a gateway process "
        "drives it (one admission EVALSHA per request, settlements batched by its writer), "
        f"{LOAD_CONCURRENCY} requests in flight; time is a fake clock given to the scripts.",
        "",
        f"### Bytes of Redis memory per unit of state (measured on {s.n:,} of each)",
        "",
        "`used_memory` growth when the store's own scripts make them (key and value, the "
        "main and expires dictionaries' entries, allocator rounding). A key record here is "
        f"{s.record_json} bytes of JSON (it grows with a long name, description, allowlists, "
        "model lists).",
        "",
        "| unit | bytes |",
        "|---|--:|",
        *[f"| {text} | {s.units[name]:,.0f} |" for name, text in UNITS],
        "",
        f"Every lease settled: Redis back within {s.left_after_settling:+,} bytes of before "
        f"the {2 * s.n + 49 * max(1, s.n // 10) + 999:,} leases were taken.",
        "",
        "### Runs",
        "",
        "Keys: one owner each, profiles in turn: governed (own rpm, concurrency and token "
        "limits; owner on a plan with rpm), tokens only, rpm only, tpm (never reached: the "
        "logs hold what the last minute brought). *Windows*: fake time the requests spanned. "
        "*Formula*: the units above times what SCAN found "
        "(bench/scale_sizing.py `Sizing.predict`), against used_memory less the clients' buffers. "
        "Commands per request count the scripts' inner commands; admission latency is at "
        "concurrency 1, after the census (the next requests of the round).",
        "",
        "| keys | requests | windows | used_memory MB | of which clients MB | formula MB "
        "| Redis keys | req/s | commands/req | EVALSHA/req | GET/req | Redis CPU µs/req "
        "| admit p50 / p99 ms |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in o.runs:
        for c in run.checkpoints:
            lines.append(
                f"| {run.spec.keys:,} | {c.requests:,} | {c.span:,.0f} s | {mb(c.census.used)} "
                f"| {mb(c.census.clients)} "
                f"| {mb(c.formula)} | {c.census.total_keys:,} | {c.rate:,.0f} "
                f"| {sum(c.calls.values()):.1f} | {c.calls.get('evalsha', 0):.2f} "
                f"| {c.calls.get('get', 0):.2f} | {c.redis_us:.0f} "
                f"| {p(c.probe, 50):.3f} / {p(c.probe, 99):.3f} |"
            )
    lines += ["", "Commands per request by name (the last checkpoint of each run):", ""]
    for run in o.runs:
        c = run.checkpoints[-1]
        lines.append(f"- {plural(run.spec.keys, 'key')}: {calls_text(c.calls, 10)}")
    lines += [
        "",
        "What Redis holds at the last checkpoint of each run, by key class (members: ZSET and "
        "SET members counted, HASH fields from a sample; bytes: `MEMORY USAGE` of a sample):",
        "",
        "| class | "
        + " | ".join(f"{plural(r.spec.keys, 'key')}: keys / members / bytes" for r in o.runs)
        + " |",
        "|---|" + "--:|" * len(o.runs),
    ]
    for name in CLASS_ORDER:
        cells = []
        for run in o.runs:
            found = run.checkpoints[-1].census.classes.get(name)
            cells.append(
                f"{found.keys:,} / {found.members:,} / {found.mean_bytes:,.0f}" if found else "-"
            )
        if any(cell != "-" for cell in cells):
            lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "Formula by part at the last checkpoint (MB):", ""]
    parts = list(o.runs[0].checkpoints[-1].predicted)
    lines += [
        "| part | " + " | ".join(f"{plural(r.spec.keys, 'key')}" for r in o.runs) + " |",
        "|---|" + "--:|" * len(o.runs),
    ]
    for part in parts:
        cells = [mb(r.checkpoints[-1].predicted[part]) for r in o.runs]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    own, probe = o.pair_own, o.pair_probe
    most = max(r.spec.keys for r in o.runs)
    lines += [
        "",
        f"### Admission latency: 1 key against {most:,} keys",
        "",
        "At concurrency 1, in alternated blocks on the two runs' Redis servers (both loaded, "
        "both alive), so the machine's drift falls on both alike. Time is `Limiter.admit`: "
        "with each run's own keys in turn it includes the owner's plan read (a GET) whenever "
        f"the limiter has not read it for {PLAN_TTL:g} s (of fake time; "
        f"{o.runs[-1].checkpoints[-1].calls.get('get', 0):.2f} GET per request at "
        f"{plural(most, 'key')}, {o.runs[0].checkpoints[-1].calls.get('get', 0):.2f} at 1); "
        "one new key in each is the same admission on both, only the number of other keys "
        "differs. Beside, Redis's own time per EVALSHA meanwhile (`INFO latencystats` after "
        "`CONFIG RESETSTAT`: the admissions and their settlements, one each), which the "
        "client's scheduling on a shared machine does not reach:",
        "",
        "| probe | 1 key p50 / p99 ms | " + f"{most:,} keys p50 / p99 ms | p99 ratio "
        "| Redis EVALSHA p50 / p99 / mean µs, 1 key | " + f"{most:,} keys |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for label, (a, b) in (
        (f"each run's own keys, in turn ({len(own[0].times):,} each)", own),
        (f"one new governed key in each ({len(probe[0].times):,} each)", probe),
    ):
        lines.append(
            f"| {label} | {p(a.times, 50):.3f} / {p(a.times, 99):.3f} | {p(b.times, 50):.3f} / "
            f"{p(b.times, 99):.3f} | {p(b.times, 99) / p(a.times, 99):.2f} "
            f"| {a.server_p50:.0f} / {a.server_p99:.0f} / {a.server_mean:.0f} "
            f"| {b.server_p50:.0f} / {b.server_p99:.0f} / {b.server_mean:.0f} |"
        )
    lines += [
        "",
        "The targets judge the second row (the same admission on both). The first differs "
        "in more than the number of keys: the 1-key run's key is governed, the others' keys "
        "cycle through four profiles (tpm among them), and their owners' plans are read again.",
    ]
    t = o.tenant
    lines += [
        "",
        "### One owner on one Redis node",
        "",
        f"One owner, {t.keys} governed keys (plan with rpm), admitted and settled by one "
        f"process ({LOAD_CONCURRENCY} in flight) for {t.seconds:.1f} s on Redis `TIME`: "
        f"**{t.rate:,.0f} requests/s**, redis-server {t.redis_us:.0f} µs of CPU per request "
        f"({t.busy:.0%} of one core busy); one core fully busy would take "
        f"**{t.ceiling:,.0f} requests/s**. Every key of an owner is in its slot, so on a "
        "Cluster this is one owner's ceiling whatever the number of shards. Commands per "
        f"request: {calls_text(t.calls, 10)}.",
    ]
    g = o.gateway
    if g is not None:
        lines += [
            "",
            f"### A gateway that has served {g.keys:,} keys",
            "",
            f"`gateway run` (1 worker) on its own Redis holding {g.keys:,} issued keys (one "
            "owner each, rpm 60, a daily limit), the bundled mock worker upstream; one chat "
            f"request per key, 32 at a time, in {g.seconds:.0f} s ({g.keys / g.seconds:,.0f} "
            f"req/s); answers {g.statuses}. RSS: idle {g.idle_mb:.0f} MB, after "
            f"{g.after_mb:.0f} MB, peak {g.peak_mb:.0f} MB. GETs per request during the pass: "
            f"{g.gets_per_request:.2f} (the key record on its first use, and the owner's plan).",
            "",
            f"The key cache (gateway/auth/service.py) keeps at most {CACHE_MAX:,} records (found "
            f"keys, {POSITIVE_TTL:g} s) and apart {CACHE_MAX:,} hashes not found "
            f"({NEGATIVE_TTL:g} s); it is not LRU: an entry past its time stays until "
            "overwritten, and the first new key past the bound drops the whole table.",
        ]
        if g.recent_gets >= 0:
            lines.append(
                f"Measured: the last 1,000 keys asked again: {g.recent_gets} GETs (cached); "
                f"after one more key was looked up: {g.after_clear_gets} GETs for the same "
                "1,000 (the table was dropped)."
            )
        if g.census is not None:
            total = sum(g.predicted.values())
            lines.append(
                f"Its Redis after the pass: used_memory {mb(g.census.used)} MB (clients "
                f"{mb(g.census.clients)} MB), formula "
                f"{mb(total)} MB, {g.census.total_keys:,} Redis keys."
            )
    lines += ["", "### Against the targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {name} | {got} | {verdict(ok)} |" for name, got, ok in o.verdicts]
    return lines


def summary_line(o: Outcome) -> str:
    parts = [
        f"{name.split(':')[0]}: {got} {verdict(ok)}"
        for name, got, ok in o.verdicts
        if not name.startswith("sizing")
    ]
    sizing = [ok for name, _, ok in o.verdicts if name.startswith("sizing")]
    parts.append(f"sizing formula {sum(sizing)}/{len(sizing)} within 20 %")
    return f"- {o.when} `{o.commit}`: scale ({'quick' if o.quick else 'full'}): " + "; ".join(parts)


def _redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        return out.stdout.split("v=")[1].split()[0]
    except (OSError, IndexError):
        return "?"


def add_to_results(lines: list[str], summary: str) -> None:
    """The section goes before RESULTS.md's History and the summary at its end; nothing else
    of the file changes."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = "\n".join(lines).rstrip("\n") + "\n"
    head, found, tail = text.partition("\n## History\n")
    if found:
        text = head.rstrip("\n") + "\n\n" + section + "\n## History\n" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n## History\n\n"
    RESULTS.write_text(text.rstrip("\n") + "\n" + summary + "\n")
