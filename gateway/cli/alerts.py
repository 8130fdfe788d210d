"""``gateway alerts ...``: alert events through a running gateway's admin API.

    gateway alerts test [--message TEXT] [--wait 15]  # POST /admin/alerts/test, then its fate
    gateway alerts events [--limit 20] [--json]        # GET /admin/alerts/events

``test`` queues an ``alert.test`` event for every configured webhook and, unless ``--wait 0``,
follows it (``GET /admin/alerts/events/<id>``) until every webhook got it or gave up, or the
wait is over; exit status 0 only when every webhook answered 2xx (or, with ``--wait 0``, when
the event was queued).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from gateway.cli.admin import AdminClient, cell, common_options, emit, runner, table

POLL = 0.5  # seconds between two looks at a test event's deliveries
DONE = ("sent", "dropped")


def deliveries_text(deliveries: list[dict[str, Any]]) -> str:
    if not deliveries:
        return "No webhook is configured."
    headers = ["WEBHOOK", "FORMAT", "STATE", "ATTEMPTS", "LAST RESULT", "LAST ATTEMPT", "NEXT"]
    fields = ("format", "state", "attempts", "lastResult", "lastAttemptAt", "nextAttemptAt")
    rows = [
        [cell(d.get("webhook") or f"(removed {d.get('hook')})"), *(cell(d.get(f)) for f in fields)]
        for d in deliveries
    ]
    return table(headers, rows)


def _outcome(d: dict[str, Any]) -> str:
    return f"{d.get('webhook') or '(removed)'} {d['state']}"


def events_text(answer: dict[str, Any]) -> str:
    if not answer["enabled"]:
        return "Alerts are off: no webhook is configured (alerts.webhooks)."
    head = f"{answer['webhooks']} webhook(s), {answer['queued']} delivery(ies) queued."
    if not answer["events"]:
        return head + "\nNo events yet."
    rows = [
        [e["createdAt"], e["type"], e["id"], ", ".join(_outcome(d) for d in e["deliveries"])]
        for e in answer["events"]
    ]
    return head + "\n" + table(["CREATED", "TYPE", "ID", "DELIVERIES"], rows)


def _follow(api: AdminClient, event_id: str, seconds: float) -> dict[str, Any] | None:
    """The event once every delivery is done, or as it stands when the wait is over."""
    deadline = time.monotonic() + seconds
    event: dict[str, Any] | None = None
    while True:
        event = api.call("GET", f"/admin/alerts/events/{event_id}")
        assert event is not None
        if all(d["state"] in DONE for d in event["deliveries"]) or time.monotonic() > deadline:
            return event
        time.sleep(POLL)


def cmd_test(args: argparse.Namespace, api: AdminClient) -> int:
    body = {} if args.message is None else {"message": args.message}
    queued = api.call("POST", "/admin/alerts/test", body)
    if args.wait <= 0:
        return emit(args, queued, lambda a: f"Queued {a['id']} for {a['webhooks']} webhook(s).")
    event = _follow(api, queued["id"], args.wait)
    assert event is not None
    emit(args, event, lambda e: f"Test event {e['id']}:\n" + deliveries_text(e["deliveries"]))
    return 0 if all(d["state"] == "sent" for d in event["deliveries"]) else 1


def cmd_events(args: argparse.Namespace, api: AdminClient) -> int:
    return emit(args, api.call("GET", f"/admin/alerts/events?limit={args.limit}"), events_text)


def _wait(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be from 0 to 3600 seconds")
    return value


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 200:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 200")
    return int(text)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``alerts`` command and its subcommands."""
    alerts = sub.add_parser("alerts", help="alert events through a running gateway's admin API")
    actions = alerts.add_subparsers(dest="action", required=True)
    common = common_options()
    text = "send a test event through every configured webhook and show what each answered"
    test = actions.add_parser("test", parents=[common], help=text, description=text)
    test.add_argument("--message", help="the event's message (at most 500 characters)")
    test.add_argument(
        "--wait", type=_wait, default=15.0, metavar="SECONDS",
        help="follow the deliveries this long (default 15; 0: only queue it)",
    )  # fmt: skip
    test.set_defaults(func=runner("alerts", cmd_test))
    text = "recent alert events and the state of their deliveries, newest first"
    events = actions.add_parser("events", parents=[common], help=text, description=text)
    events.add_argument("--limit", type=_limit, default=20, help="1 to 200 (default 20)")
    events.set_defaults(func=runner("alerts", cmd_events))
