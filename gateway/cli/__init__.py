"""The ``gateway`` command: argparse → objects → run, one module per command group (``run``,
``check``, ``init``, ``keys``, ``owners``, ``alerts``, ``mock_worker``; ``admin`` is the admin-API
client the ``keys``, ``owners`` and ``alerts`` commands share). No logic of its own;
``python -m gateway`` is the same.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import alerts, check, init, keys, mock_worker, owners, run


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gateway", description="An edge gateway for LLM inference.")
    top.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    for command in (run, check, init, keys, owners, alerts, mock_worker):
        command.add_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))
