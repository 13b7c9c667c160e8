"""The ``replay`` and ``tail`` commands: read an event log file without writing to it.

``routeledger replay --db FILE [metrics|usage|ab|all] [--json] [--period day]`` folds the
whole log and prints the figures; ``routeledger tail --db FILE [--from N] [--no-follow]
[--json]`` prints events as they are committed. Both open the file read-only, so they are safe
to run next to a live runtime. Heavy imports happen inside the command functions, to keep
``import routeledger.cli`` cheap.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from routeledger.events import BudgetStatus, Event, Projections

__all__ = ["figure_lines", "register"]

POLL_INTERVAL_S = 0.2
"""How often ``tail --follow`` looks for newly committed events."""

_SECTIONS = ("metrics", "usage", "ab", "budgets", "all")
_HIDDEN_IN_LINES = frozenset({"type", "ts", "prompt", "response_text", "summary"})
"""Fields a ``tail`` line leaves out: shown elsewhere on the line, or too long for one line."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``replay`` and ``tail`` sub-commands."""
    replay = subparsers.add_parser(
        "replay",
        help="print metrics, usage and A/B results folded from an event log",
        description="Fold an event log file into metrics, usage and A/B results and print "
        "them: the same figures the runtime that wrote the log reported live.",
    )
    replay.add_argument(
        "--db", required=True, metavar="FILE", help="the SQLite event log or a postgresql:// URL"
    )
    replay.add_argument(
        "section",
        nargs="?",
        choices=_SECTIONS,
        default="all",
        help="what to print (default: all)",
    )
    replay.add_argument("--json", action="store_true", help="print one JSON document")
    replay.add_argument(
        "--period",
        default="day",
        choices=("hour", "day", "week", "month", "all"),
        help="usage period: the UTC bucket holding the latest request (default: day)",
    )
    replay.add_argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        help="skip (and count) events of types this version does not know",
    )
    replay.set_defaults(func=run_replay)

    tail = subparsers.add_parser(
        "tail",
        help="print events of an event log as they are committed",
        description="Print the events of an event log, one line each, and (by default) keep "
        "printing new ones as they are committed. Stop with Ctrl-C.",
    )
    tail.add_argument(
        "--db", required=True, metavar="FILE", help="the SQLite event log or a postgresql:// URL"
    )
    tail.add_argument(
        "--from",
        dest="from_position",
        type=int,
        default=1,
        metavar="N",
        help="first position to print (default: 1; negative: the last -N events)",
    )
    tail.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep waiting for new events (default: --follow)",
    )
    tail.add_argument("--json", action="store_true", help="print one JSON object per line")
    tail.set_defaults(func=run_tail)


# --- replay ----------------------------------------------------------------------------------


def run_replay(args: argparse.Namespace) -> int:
    """Fold the log named by ``args.db`` and print the chosen sections."""
    from routeledger._replay import replay
    from routeledger.store import shown_target

    projections = replay(args.db, strict=args.strict)
    sections: tuple[str, ...] = (
        ("metrics", "usage", "ab") if args.section == "all" else (args.section,)
    )
    if args.section == "all" and projections.budgets.budgets:
        sections += ("budgets",)
    db = shown_target(args.db)  # a URL's password is never printed
    if args.json:
        sys.stdout.write(_replay_json(projections, sections, db, args.period) + "\n")
        return 0
    out: list[str] = [f"{db}: {projections.events} event(s), last position {projections.position}"]
    if projections.skipped_unknown:
        out.append(f"skipped {projections.skipped_unknown} event(s) of unknown type")
    out.extend(figure_lines(projections, sections, args.period))
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def figure_lines(
    projections: Projections,
    sections: tuple[str, ...] = ("metrics", "usage", "ab"),
    period: str = "all",
) -> list[str]:
    """Return the tables of the chosen sections, each preceded by a blank line.

    Names in the tables come from the log (a provider's model name, say), so every line has
    its control characters escaped.
    """
    from routeledger.events import escape_controls

    out: list[str] = []
    for section in sections:
        out.append("")
        if section == "metrics":
            out.extend(_metrics_lines(projections))
        elif section == "usage":
            out.extend(_usage_lines(projections, period))
        elif section == "budgets":
            out.extend(_budget_lines(projections))
        else:
            out.extend(_ab_lines(projections))
    return [escape_controls(line) for line in out]


def _replay_json(projections: Projections, sections: tuple[str, ...], db: str, period: str) -> str:
    import msgspec

    document: dict[str, Any] = {
        "db": str(db),
        "position": projections.position,
        "events": projections.events,
        "skipped_unknown": projections.skipped_unknown,
    }
    if "metrics" in sections:
        document["metrics"] = projections.metrics.snapshot()
    if "usage" in sections:
        document["usage"] = projections.usage.report(period)
    if "ab" in sections:
        document["ab"] = projections.ab.all_results()
    if "budgets" in sections:
        document["budgets"] = budget_status(projections)
    from routeledger.events import escape_json_controls

    return escape_json_controls(
        msgspec.json.format(msgspec.json.encode(document), indent=2).decode()
    )


def _metrics_lines(projections: Projections) -> list[str]:
    metrics = projections.metrics.snapshot()
    if not metrics:
        return ["metrics: no attempts"]
    rows = [
        [
            m.provider,
            str(m.requests),
            str(m.successes),
            str(m.failures),
            f"{m.error_rate * 100:.1f}",
            f"{m.latency_mean_ms:.1f}",
            f"{m.latency_p50_ms:.1f}",
            f"{m.latency_p95_ms:.1f}",
            f"{m.latency_p99_ms:.1f}",
            str(m.input_tokens),
            str(m.output_tokens),
            _money(m.cost),
            str(m.unpriced_requests),
            _iso(m.last_used) if m.last_used is not None else "-",
        ]
        for m in metrics.values()
    ]
    header = ["PROVIDER", "REQS", "OK", "FAIL", "ERR%", "MEAN_MS", "P50_MS", "P95_MS"]
    header += ["P99_MS", "IN_TOK", "OUT_TOK", "COST", "UNPRICED", "LAST_USED"]
    return ["metrics (per provider, attempts):", *_table(header, rows, left={0, 13})]


def budget_status(projections: Projections) -> list[BudgetStatus]:
    """Return every budget's figures as of the log's latest event the spend fold read."""
    return projections.budgets.status()


def _budget_lines(projections: Projections) -> list[str]:
    status = budget_status(projections)
    if not status:
        return ["budgets: none configured"]
    rows = [
        [
            b.name,
            b.period,
            _iso(b.period_start),
            _money(b.limit),
            _money(b.spent),
            _money(b.remaining),
            "yes" if b.exceeded else "no",
            b.on_exceeded,
        ]
        for b in status
    ]
    header = ["BUDGET", "PERIOD", "START", "LIMIT", "SPENT", "REMAINING", "EXCEEDED", "THEN"]
    return ["budgets (as of the log's latest request):", *_table(header, rows, left={0, 1, 2, 7})]


def _usage_lines(projections: Projections, period: str) -> list[str]:
    report = projections.usage.report(period)
    when = "all time" if report.start is None else f"starting {_iso(report.start)}"
    if period != "all" and report.start is None:
        when = "no requests"
    lines = [
        f"usage ({period}, {when}):",
        f"  requests {report.requests}  errors {report.errors}  "
        f"input tokens {report.input_tokens}  output tokens {report.output_tokens}  "
        f"cost {_money(report.cost)}",
    ]
    if report.by_model:
        rows = [
            [model, str(u.input_tokens), str(u.output_tokens), str(u.total_tokens)]
            for model, u in report.by_model.items()
        ]
        lines.extend(_table(["MODEL", "IN_TOK", "OUT_TOK", "TOTAL"], rows, left={0}))
    return lines


def _ab_lines(projections: Projections) -> list[str]:
    results = projections.ab.all_results()
    if not results:
        return ["A/B tests: none"]
    rows = [
        [
            test,
            r.variant,
            r.provider or "?",
            str(r.requests),
            str(r.errors),
            f"{r.error_rate * 100:.1f}",
            f"{r.mean_latency_ms:.1f}",
            _money(r.mean_cost),
        ]
        for test, variants in results.items()
        for r in variants.values()
    ]
    header = ["TEST", "VARIANT", "PROVIDER", "REQS", "ERRORS", "ERR%", "MEAN_MS", "MEAN_COST"]
    return ["A/B tests:", *_table(header, rows, left={0, 1, 2})]


def _table(header: list[str], rows: list[list[str]], *, left: set[int]) -> list[str]:
    """Return aligned lines: columns in ``left`` are left-aligned, the rest (numbers) right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(padded).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _money(value: float) -> str:
    return f"{value:.6f}"


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- tail ------------------------------------------------------------------------------------


def run_tail(args: argparse.Namespace) -> int:
    """Print events from ``args.from_position`` on; with ``--follow``, wait for more.

    Following ends at Ctrl-C. The signal only sets a flag, checked between reads: a
    ``KeyboardInterrupt`` raised inside a store call could leave the store's lock taken, and
    the ``close()`` that follows would then wait for it forever.
    """
    import signal
    import threading

    from routeledger._replay import open_readonly

    store = open_readonly(args.db)
    out = sys.stdout
    stop = threading.Event()
    previous = None
    if args.follow and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        next_position = args.from_position
        if next_position < 1:
            next_position = max(1, store.last_position() + next_position + 1)
        while True:
            last = store.last_position()
            if last >= next_position:
                # Bounded by the position seen now, so rows skipped as unknown are skipped once.
                limit = last - next_position + 1
                for position, event in store.read(next_position, limit=limit, strict=False):
                    out.write(_event_json(position, event) if args.json else _line(position, event))
                next_position = last + 1
                out.flush()
            if not args.follow or stop.is_set():
                break
            wait = getattr(store, "wait_for_commit", None)  # PostgreSQL: woken by NOTIFY
            if wait is not None:
                wait(next_position - 1, 1.0)
            elif stop.wait(POLL_INTERVAL_S):
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop following (here: outside the main thread).
    except BrokenPipeError:
        _silence_stdout(out)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        skipped = store.skipped_unknown
        store.close()
    if skipped:
        print(f"routeledger: skipped {skipped} event(s) of unknown type", file=sys.stderr)
    return 0


def _line(position: int, event: Event) -> str:
    import msgspec

    from routeledger.events import escape_controls, event_tag

    fields: dict[str, Any] = msgspec.to_builtins(event)  # defaults are omitted: only news
    parts = [
        f"{key}={_value(value)}" for key, value in fields.items() if key not in _HIDDEN_IN_LINES
    ]
    line = f"{position:>8}  {_iso(event.ts)}  {event_tag(event):<27} {' '.join(parts)}"
    return escape_controls(line.rstrip()) + "\n"


def _value(value: object) -> str:
    import json

    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    text = str(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return json.dumps(text) if not text or any(c.isspace() or c == '"' for c in text) else text


def _event_json(position: int, event: Event) -> str:
    import msgspec

    from routeledger.events import escape_json_controls

    document = {"position": position, **msgspec.to_builtins(event)}
    return escape_json_controls(msgspec.json.encode(document).decode()) + "\n"


def _silence_stdout(out: TextIO) -> None:
    # The reader went away (``tail | head``): point stdout at /dev/null so the interpreter's
    # final flush does not raise again.
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
