"""``routeledger audit``: the decision trail of one request, from the event log."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routeledger.events import Event

__all__ = ["audit_lines", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``audit`` command."""
    p = subparsers.add_parser(
        "audit",
        help="show the decision trail of one request",
        description=(
            "Print every event of one request: the candidates, why each was dropped, the "
            "strategy's scores, each attempt and the outcome."
        ),
    )
    p.add_argument("--db", required=True, help="event log file, or a postgresql:// URL")
    p.add_argument("request_id", metavar="REQUEST_ID")
    p.add_argument("--json", action="store_true", help="print the events as JSON lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the trail of ``args.request_id``."""
    import msgspec

    from routeledger._replay import open_readonly
    from routeledger.events import RequestError, escape_controls, escape_json_controls
    from routeledger.store import shown_target

    with open_readonly(args.db) as store:
        trail = list(store.read_request(args.request_id))
    if not trail:
        raise RequestError(
            f"no events for request {escape_controls(args.request_id)!r} in {shown_target(args.db)}"
        )
    if args.json:
        for stored in trail:
            encoded = msgspec.json.encode({"position": stored.position, "event": stored.event})
            sys.stdout.write(escape_json_controls(encoded.decode()) + "\n")
        return 0
    sys.stdout.write(f"request {escape_controls(args.request_id)}\n")
    for stored in trail:
        for line in audit_lines(stored.position, stored.event):
            sys.stdout.write(line + "\n")
    return 0


def audit_lines(position: int, event: Event) -> list[str]:
    """Describe one event of a request's trail for people, control characters escaped.

    Every text in a log may have come from a provider (error messages, model names), so each
    line is escaped before a terminal sees it.
    """
    from routeledger.events import escape_controls

    return [escape_controls(line) for line in _describe(position, event)]


def _describe(position: int, event: Event) -> list[str]:
    from routeledger.events import (
        AttemptFailed,
        AttemptStarted,
        AttemptSucceeded,
        RequestCompleted,
        RequestFailed,
        RequestReceived,
        RouteDecided,
        event_tag,
    )

    head = f"#{position:<8} {event_tag(event):22}"
    if isinstance(event, RequestReceived):
        caps = ", ".join(event.capabilities) or "none"
        return [f"{head} model {event.model!r}, needs {caps}, ~{event.estimated_input_tokens} tok"]
    if isinstance(event, RouteDecided):
        lines = [
            f"{head} attempt {event.attempt}, strategy {event.strategy}: "
            + (f"chose {event.chosen!r}" if event.chosen else "no provider chosen")
            + f" (confidence {event.confidence:.2f})",
            f"{'':32}reason: {event.reason}",
            f"{'':32}candidates: {', '.join(event.candidates)}",
        ]
        for name, why in sorted(event.excluded.items()):
            lines.append(f"{'':32}  dropped {name}: {why}")
        if event.scores:
            scores = ", ".join(f"{n} {s:.3f}" for n, s in event.scores.items())
            lines.append(f"{'':32}scores: {scores}")
        if event.alternatives:
            lines.append(f"{'':32}alternatives: {', '.join(event.alternatives)}")
        return lines
    if isinstance(event, AttemptStarted):
        key = f", key {event.key}" if event.key else ""
        return [f"{head} attempt {event.attempt} -> {event.provider} ({event.model}{key})"]
    if isinstance(event, AttemptSucceeded):
        cost = "unknown" if event.cost is None else f"{event.cost:.6f}"
        return [
            f"{head} attempt {event.attempt} on {event.provider}: ok in {event.latency_ms:.1f} ms, "
            f"{event.input_tokens}+{event.output_tokens} tokens, cost {cost}"
        ]
    if isinstance(event, AttemptFailed):
        extra = f", retry after {event.retry_after_s:g} s" if event.retry_after_s else ""
        status = f" {event.status}" if event.status else ""
        return [
            f"{head} attempt {event.attempt} on {event.provider}: {event.error}{status} "
            f"after {event.latency_ms:.1f} ms{extra}"
            + (" (maybe billed)" if event.maybe_billed else ""),
            f"{'':32}{event.message}",
        ]
    if isinstance(event, RequestCompleted):
        return [
            f"{head} completed by {event.provider} after {event.attempts} attempt(s) in "
            f"{event.latency_ms:.1f} ms" + (" (from cache)" if event.cached else "")
        ]
    if isinstance(event, RequestFailed):
        return [
            f"{head} failed with {event.error} after {event.attempts} attempt(s): {event.message}"
        ]
    fields = {
        f: getattr(event, f) for f in event.__struct_fields__ if f not in ("ts", "request_id")
    }
    return [f"{head} " + ", ".join(f"{k}={v}" for k, v in fields.items())]
