"""``gateway mock-worker``: the bundled fake OpenAI-compatible inference worker, on its own."""

from __future__ import annotations

import argparse

from gateway import logs


def cmd_mock_worker(args: argparse.Namespace) -> int:
    from gateway import mock_worker

    logs.setup("info")
    options = mock_worker.MockOptions(
        token_delay=args.token_delay, first_token_delay=args.first_token_delay
    )
    mock_worker.run(args.host, args.port, options)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mock = sub.add_parser("mock-worker", help="a fake OpenAI-compatible inference worker")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8001)
    mock.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    mock.add_argument("--first-token-delay", type=float, default=0.0)
    mock.set_defaults(func=cmd_mock_worker)
