"""Redis's own instructions per admission and per settlement, counted under callgrind.

    .venv/bin/python bench/redis_instructions.py CAPTURE [COMMIT|DIR ...]

``CAPTURE``: a ``MONITOR`` capture of a governed arm under load, as ``bench/run`` writes them
(``bench/.work/run/governed-2w-monitor-*.txt``). Its ``admit`` and ``settle`` EVALSHAs (told
apart by their shape: 9 KEYS and 14 ARGV an admission after 4, 9 KEYS and 20 ARGV a settlement)
are replayed in their order against a fresh ``redis-server`` running under ``valgrind
--tool=callgrind``, once with the scripts of each source (a commit's ``gateway/store/*.lua``, or
a directory's; ``.`` by default): first the admissions alone, then everything as captured. One
line per source: instructions per admission (the first pass), per settlement (the second less
the first) and their sum, what one governed request costs Redis in its scripts, the commands
they call included. Wall-clock CPU of redis-server moves with the machine's other load; this
count does not (two runs agree within 0.5 %).

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

import redis

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work" / "redis-instructions"
TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"')
Call = tuple[str, list[bytes], list[bytes]]  # script, KEYS, ARGV


def calls_of(capture: Path) -> list[Call]:
    """The capture's admit and settle calls, in order."""
    calls: list[Call] = []
    for line in capture.read_text(errors="replace").splitlines():
        if '"EVALSHA"' not in line:
            continue
        words = [codecs.escape_decode(w.encode())[0] for w in TOKEN.findall(line)]
        count = int(words[2])
        keys, args = words[3 : 3 + count], words[3 + count :]
        if (len(args) - 4) % 14 == 0 and len(keys) * 14 == 9 * (len(args) - 4):
            calls.append(("admit", keys, args))
        elif len(args) % 20 == 0 and len(keys) * 20 == 9 * len(args):
            calls.append(("settle", keys, args))
    return calls


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
    admissions = sum((len(a) - 4) // 14 for s, _, a in calls if s == "admit")
    settlements = sum(len(a) // 20 for s, _, a in calls if s == "settle")
    return totals[0] / admissions, (totals[1] - totals[0]) / settlements


def _pass(
    client: redis.Redis, pid: int, out: Path, name: str, calls: list[Call], only: str | None
) -> int:
    """Instructions of one replay from an empty Redis (``only``: that script's calls alone)."""
    client.flushall()
    shas = {s: client.script_load(source_of(name, s)) for s in ("admit", "settle")}
    control = ["callgrind_control"]
    subprocess.run([*control, "-i", "on", str(pid)], capture_output=True, check=True)
    for script, keys, args in calls:
        if only is None or script == only:
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
