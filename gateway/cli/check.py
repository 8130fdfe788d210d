"""``gateway check [FILE]``: validate a config without serving; exit 0, or every error as
``FILE:LINE: dotted.path: message`` and exit 2."""

from __future__ import annotations

import argparse
import sys

from gateway.config.load import ConfigError, load_file, locate


def cmd_check(args: argparse.Namespace) -> int:
    source = locate(args.config or args.file)
    try:
        load_file(source.path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    print(f"{source.path}: ok" + (" (the embedded default)" if source.embedded else ""))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser("check", help="validate a config file; exit 0, or 2 listing every error")
    check.add_argument("file", nargs="?", metavar="FILE", help="the same as --config FILE")
    check.add_argument("--config", help="YAML file (default: what `gateway run` would serve)")
    check.set_defaults(func=cmd_check)
