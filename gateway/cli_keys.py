"""``gateway keys ...``: the key lifecycle through a running gateway's admin API."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` command and its subcommands."""
