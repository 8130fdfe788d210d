"""Redis's own instructions per admission and per settlement, counted under callgrind.

    .venv/bin/python bench/redis_instructions.py CAPTURE [COMMIT|DIR ...]

``CAPTURE``: a ``MONITOR`` capture of a governed arm under load, as ``bench/run`` writes them
(``bench/.work/run/governed-2w-monitor-*.txt``). Its ``admit`` and ``settle`` EVALSHAs (told
apart by their first key: a key's rpm log, ``rpmr:k:`` or ``rpmu:k:``, a key's leases, ``held:``
or ``lease:``) are read as the admissions and settlements they carry, in either layout of the
scripts' arguments (binary, as the scripts' headers have them, or the texts before: 9 KEYS and
14 ARGV an admission, 9 and 20 a settlement), and replayed in their order against a fresh
``redis-server`` running under ``valgrind --tool=callgrind``, once with the scripts of each
source (a commit's ``gateway/store/*.lua``, or a directory's; ``.`` by default), each call in
the layout those scripts read (binary, as this tree's ``redis_codec`` packs it, when they
``struct.unpack``: a source of another binary layout is not replayed right): first the
admissions alone, then everything as captured. One line per source: instructions per admission
(the first pass), per settlement (the second less the first) and their sum, what one governed
request costs Redis in its scripts, the commands they call included. Wall-clock CPU of
redis-server moves with the machine's other load; this count moves less (leases expire in real
time during the slow replay, so runs differ by a few %: compare sources within one run).

Needs valgrind. About 40 s a source.
"""

from __future__ import annotations

import argparse
import codecs
import glob
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from gateway.limits import windows
from gateway.records import Admission, Settlement, latency_bucket
from gateway.store import redis_codec as codec
from gateway.store.base import LEASE_SECONDS

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work" / "redis-instructions"
TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"')
LOG = re.compile(r"rpm[ru]:k:")  # a key's rpm log: rpmr:k:<key id> (rpmu:k: before)
Call = tuple[str, str, list[Any]]  # script, clock override, its admissions or settlements


def calls_of(capture: Path) -> list[Call]:
    """The capture's admit and settle calls, in order, each as the admissions or settlements it
    carried (read from either layout: the binary one, or the texts before it)."""
    calls: list[Call] = []
    for line in capture.read_text(errors="replace").splitlines():
        if '"EVALSHA"' not in line:
            continue
        words = [codecs.escape_decode(w.encode())[0] for w in TOKEN.findall(line)]
        count = int(words[2])
        keys, args = [w.decode() for w in words[3 : 3 + count]], words[3 + count :]
        if keys and LOG.match(keys[0].split(":", 2)[2]):
            calls.append(("admit", args[0].decode(), admissions_of(keys, args)))
        elif keys and keys[0].split(":", 2)[2].startswith(("held:", "lease:")):
            calls.append(("settle", *settlements_of(keys, args)))
    return calls


def _unescape(text: str) -> str:
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def owner_key(key: str, name: str | re.Pattern[str]) -> tuple[str, str]:
    """The owner and key id of a key ``gw:{<owner>}:<name><key id>``."""
    head, _, rest = key.partition("}:")
    rest = name.sub("", rest, count=1) if isinstance(name, re.Pattern) else rest.removeprefix(name)
    return _unescape(head.removeprefix("gw:{")), _unescape(rest)


def _opt(text: bytes) -> int | None:
    return int(text) if text else None


def admissions_of(keys: list[str], args: list[bytes]) -> list[Admission]:
    """An admit call's admissions, from either layout (admit.lua's header)."""
    n, size = len(keys) // 9, codec.ADMISSION.size
    if len(args) < 6 or len(args[5]) != size * (len(args) - 6):  # texts: 9 KEYS, 14 ARGV each
        out = []
        for i in range(n):
            owner, key_id = owner_key(keys[9 * i], LOG)
            f = args[4 + 14 * i : 18 + 14 * i]
            limits = [_opt(f[j]) for j in (1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12)]
            out.append(_admission(f[0].decode(), key_id, owner, limits, int(f[7]), int(f[13])))
        return out
    sets = []
    for v in codec.LIMITS.iter_unpack(args[4]):
        sets.append([int(v[i + 1]) if v[i] else None for i in range(0, len(v), 2)])
    out = []
    for rid, (k, lim, reserve, cost) in zip(
        args[6:], codec.ADMISSION.iter_unpack(args[5]), strict=True
    ):
        owner, key_id = owner_key(keys[9 * k], LOG)
        out.append(_admission(rid.decode(), key_id, owner, sets[lim], int(reserve), int(cost)))
    return out


def _admission(
    rid: str, key_id: str, owner: str, limits: list[int | None], reserve: int, cost: int
) -> Admission:
    rpm, concurrency, daily, monthly, plan_rpm, plan_monthly, tpm, dbudget, mbudget = limits[:9]
    return Admission(
        rid, key_id, owner, rpm, concurrency, daily, monthly, plan_rpm, plan_monthly, reserve,
        tpm, dbudget, mbudget, limits[9], limits[10], cost,
    )  # fmt: skip


def settlements_of(keys: list[str], args: list[bytes]) -> tuple[str, list[Settlement]]:
    """A settle call's clock override and settlements, from either layout (settle.lua's
    header; a Cluster's row names are dropped: the replay is on one Redis)."""
    text = [a.decode(errors="surrogateescape") for a in args]
    if text[1:3] != [codec._SETTLED_TTL, codec._USAGE_DAYS]:  # texts, 9 KEYS and 20 ARGV each
        out = []
        for i in range(len(keys) // 9):
            f = text[20 * i : 20 * (i + 1)]
            owner, _ = owner_key(keys[9 * i], "")
            p, c, delta, cost = int(f[5]), int(f[6]), int(f[3]), int(f[17])
            minutes = (f[18] == "1", f[19] == "1")
            a = _settled(f[0], f[12], owner, p + c - delta, cost - int(f[16]), minutes)
            out.append(_settlement(a, f, (int(f[1]), int(f[2]), p, c, float(f[8]))))
        return (text[11] if args else ""), out
    out = []
    for v in codec.SETTLEMENT.iter_unpack(args[3]):
        k, rid, key_id, line, mode, _, day, month, *amounts, err, lat, _, fin = v[:15]
        delta, p, c = map(int, amounts)
        dc, cost = int(v[15]), int(v[16])
        owner, _ = owner_key(keys[9 * k], "")
        a = _settled(text[4 + rid], text[4 + key_id], owner, p + c - delta, cost - dc, v[17:])
        f = [""] * 20
        f[4], f[7], f[10], f[15], f[17] = text[4 + line], str(err), repr(fin), str(mode), str(cost)
        out.append(_settlement(a, f, (day, month, p, c, lat)))
    return text[0], out


def _settled(
    rid: str, key_id: str, owner: str, reserve: int, reserve_cost: int, minutes: Any
) -> Admission:
    tpm, plan_tpm = (1 if minutes[0] else None), (1 if minutes[1] else None)
    return Admission(
        rid, key_id, owner, reserve=reserve, reserve_cost=reserve_cost, tpm=tpm, plan_tpm=plan_tpm
    )


def _settlement(
    a: Admission, f: list[str], numbers: tuple[int, int, int, int, float]
) -> Settlement:
    """A settlement from its texts ``f`` (the layout before the binary one: model line 4,
    error 7, finished 10, mode 15, cost 17) and ``numbers`` (day, month, prompt, completion,
    latency)."""
    day, month, p, c, latency = numbers
    model, _, api = f[4].partition(codec.API_MARK)
    return Settlement(
        a, day, month, model, p, c, latency, error=f[7] == "1", finished_at=float(f[10]),
        record=f[15] != "0", api=api or "chat", cost=int(f[17]),
    )  # fmt: skip


def binary_call(script: str, now: str, items: list[Any]) -> tuple[list[Any], list[Any]]:
    """A call in the codec's layout."""
    make = codec.admit_call if script == "admit" else codec.settle_calls
    keys, args = make(items, now)
    return list(keys.texts), list(args.texts)


def text_call(script: str, now: str, items: list[Any]) -> tuple[list[Any], list[Any]]:
    """A call in the layout before the binary one (scripts of older commits)."""
    keys: list[str] = []
    if script == "admit":
        args = [now, repr(LEASE_SECONDS), repr(windows.RPM_WINDOW), str(codec.COUNTER_TTL)]
        for a in items:
            keys += codec.admit_call([a], now)[0].texts
            head = (a.rpm, a.concurrency, a.daily, a.monthly, a.plan_rpm, a.plan_monthly)
            tail = (a.tpm, a.daily_budget, a.monthly_budget, a.plan_tpm, a.plan_budget)
            args += [a.request_id, *map(codec.num, head), str(a.reserve)]
            args += [*map(codec.num, tail), str(a.reserve_cost)]
        return keys, args
    args = []
    for s in items:
        a = s.admission
        keys += codec.settle_calls([s], now)[0].texts
        args += [a.request_id, str(s.day), str(s.month)]
        args += [str(s.prompt_tokens + s.completion_tokens - a.reserve)]
        args += [codec.usage_line(s.model, s.api), str(s.prompt_tokens)]
        args += [str(s.completion_tokens), str(int(s.error)), repr(float(s.latency_ms))]
        args += [str(latency_bucket(s.latency_ms)), repr(float(s.finished_at)), now, a.key_id]
        args += [codec._SETTLED_TTL, codec._USAGE_DAYS, "1" if s.record else "0"]
        args += [str(s.cost - a.reserve_cost), str(s.cost)]
        args += ["0" if a.tpm is None else "1", "0" if a.plan_tpm is None else "1"]
    return keys, args


def source_of(name: str, script: str) -> str:
    """A script as the store loads it (the shared parts first), from a commit or directory."""
    parts = ["calendar", "usage_rows", script] if script == "settle" else ["calendar", script]

    def read(part: str) -> str:
        if Path(name).is_dir():
            return (Path(name) / "gateway" / "store" / f"{part}.lua").read_text()
        show = ["git", "-C", str(ROOT), "show", f"{name}:gateway/store/{part}.lua"]
        return subprocess.run(show, capture_output=True, text=True, check=True).stdout

    return "\n".join(read(p) for p in parts)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def counted(name: str, calls: list[Call]) -> tuple[float, float]:
    """(instructions per admission, per settlement) with ``name``'s scripts."""
    WORK.mkdir(parents=True, exist_ok=True)
    out, port = WORK / f"callgrind.{os.getpid()}", free_port()
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    command += [f"--callgrind-out-file={out}", "redis-server", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        totals = [_pass(client, server.pid, out, name, calls, only) for only in ("admit", None)]
    finally:
        server.terminate()
        server.wait()
    admissions = sum(len(items) for script, _, items in calls if script == "admit")
    settlements = sum(len(items) for script, _, items in calls if script == "settle")
    return totals[0] / admissions, (totals[1] - totals[0]) / settlements


def _pass(
    client: redis.Redis, pid: int, out: Path, name: str, calls: list[Call], only: str | None
) -> int:
    """Instructions of one replay from an empty Redis (``only``: that script's calls alone)."""
    client.flushall()
    sources = {s: source_of(name, s) for s in ("admit", "settle")}
    shas = {s: client.script_load(source) for s, source in sources.items()}
    binary = {s: "struct.unpack" in source for s, source in sources.items()}
    control = ["callgrind_control"]
    subprocess.run([*control, "-i", "on", str(pid)], capture_output=True, check=True)
    for script, now, items in calls:
        if only is None or script == only:
            keys, args = (binary_call if binary[script] else text_call)(script, now, items)
            client.evalsha(shas[script], len(keys), *keys, *args)
    subprocess.run([*control, "-i", "off", str(pid)], capture_output=True, check=True)
    subprocess.run([*control, "-d", str(pid)], capture_output=True, check=True)
    total = 0
    for dump in glob.glob(f"{out}.*"):
        lines = Path(dump).read_text(errors="replace").splitlines()
        total += sum(int(line.split()[1]) for line in lines if line.startswith("totals:"))
        os.unlink(dump)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", type=Path)
    parser.add_argument("sources", nargs="*", default=["."])
    options = parser.parse_args()
    calls = calls_of(options.capture)
    if not calls:
        print(f"{options.capture}: no admit or settle EVALSHA", file=sys.stderr)
        return 2
    for name in options.sources:
        admit, settle = counted(name, calls)
        print(
            f"{name}: Ir per admission {admit:,.0f}, per settlement {settle:,.0f}, "
            f"per request {admit + settle:,.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
