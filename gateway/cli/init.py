"""``gateway init [PATH]``: write the embedded default config, every setting commented, to a file
to edit (``config/gateway.yaml``, where ``gateway run`` looks, unless told otherwise)."""

from __future__ import annotations

import argparse
import os
import sys

from gateway.config.load import DEFAULT_PATH, embedded_text


def cmd_init(args: argparse.Namespace) -> int:
    path: str = args.path
    if os.path.exists(path) and not args.force:
        print(f"gateway init: {path} exists; keeping it (--force overwrites it)", file=sys.stderr)
        return 1
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.write(embedded_text())
    except OSError as exc:
        print(f"gateway init: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 1
    serve = "gateway run" if path == DEFAULT_PATH else f"gateway run --config {path}"
    print(
        f"Wrote {path}: the embedded default, every setting commented. Edit it, check it with "
        f"`gateway check {path}`, serve it with `{serve}`."
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = sub.add_parser("init", help="write the default config, commented, to a file to edit")
    init.add_argument("path", nargs="?", default=DEFAULT_PATH, metavar="PATH")
    init.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    init.set_defaults(func=cmd_init)
