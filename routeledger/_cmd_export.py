"""The ``routeledger export`` command: an event log as JSON lines or CSV, for other tools.

``routeledger export --db FILE --format jsonl|csv [--type TAG ...] [--from T] [--to T]
[-o OUT]`` streams the log (one fetch batch at a time, so memory stays flat whatever its
length) and writes one line per event.

- ``jsonl``: each event as stored, with its position first:
  ``{"position":1,"type":"request.received","request_id":...,"ts":...}``.
- ``csv``: the columns of :data:`CSV_COLUMNS`. A column holds the event's field of that name
  (empty when the event has none); ``recorded_at`` is ``ts`` as ISO 8601 UTC; ``data`` holds
  every other field as one JSON object.

Written to standard output, text is escaped for the terminal (a provider's message cannot
drive it; JSON stays valid JSON with the same values). Written to a file with ``-o``, the
values are exactly the stored ones.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routeledger.events import Event

__all__ = ["CSV_COLUMNS", "export_events", "parse_time", "register", "run"]

CSV_COLUMNS: tuple[str, ...] = (
    "position",
    "recorded_at",
    "ts",
    "type",
    "request_id",
    "provider",
    "model",
    "attempt",
    "latency_ms",
    "cost",
    "input_tokens",
    "output_tokens",
    "error",
    "data",
)
"""The CSV header, in order; ``data`` is a JSON object of the event's remaining fields."""

_FIELD_COLUMNS = CSV_COLUMNS[4:-1]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` sub-command."""
    p = subparsers.add_parser(
        "export",
        help="write an event log's events as JSON lines or CSV",
        description=(
            "Stream the events of a log as JSON lines (each event as stored, with its "
            "position) or CSV (columns: " + ", ".join(CSV_COLUMNS) + "; data holds the "
            "other fields as JSON)."
        ),
    )
    p.add_argument(
        "--db", required=True, metavar="FILE", help="the SQLite event log or a postgresql:// URL"
    )
    p.add_argument("--format", required=True, choices=("jsonl", "csv"), help="output format")
    p.add_argument(
        "--type",
        dest="types",
        action="extend",
        nargs="+",
        metavar="TAG",
        help="only events of these wire tags (request.completed) or families (attempt)",
    )
    p.add_argument("--from", dest="start", metavar="T", help="only events at or after T")
    p.add_argument("--to", dest="end", metavar="T", help="only events before T")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    p.epilog = "T is Unix seconds (1764770000) or ISO 8601 (2026-12-03T14:00:00, UTC if no zone)."
    p.set_defaults(func=run)


def parse_time(text: str) -> float:
    """Return Unix seconds from ``text``: a number, or ISO 8601 (UTC when it names no zone).

    Raises:
        RequestError: ``text`` is neither.
    """
    from routeledger.events import RequestError

    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RequestError(
            f"not a time: {text!r} (use Unix seconds or ISO 8601, e.g. 2026-12-03T14:00:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _type_filter(types: list[str] | None) -> Callable[[str], bool]:
    from routeledger.events import EVENT_TYPES, RequestError

    if not types:
        return lambda tag: True
    wanted: set[str] = set()
    for name in types:
        matched = {tag for tag in EVENT_TYPES if tag == name or tag.startswith(name + ".")}
        if not matched:
            known = ", ".join(sorted(EVENT_TYPES))
            raise RequestError(f"unknown event type {name!r}; known: {known}")
        wanted |= matched
    return wanted.__contains__


def export_events(
    db: str,
    out: IO[str],
    *,
    format: str,
    types: list[str] | None = None,
    start: float | None = None,
    end: float | None = None,
    for_terminal: bool = False,
) -> int:
    """Write the selected events of the log at ``db`` to ``out``; return how many.

    Raises:
        StoreError: the log is missing or unreadable.
        RequestError: an unknown event type.
    """
    from routeledger._replay import open_readonly

    keep = _type_filter(types)
    store = open_readonly(db)
    try:
        selected = (
            (position, event)
            for position, event in store.read(strict=False)
            if keep(_tag(event))
            and (start is None or event.ts >= start)
            and (end is None or event.ts < end)
        )
        if format == "jsonl":
            return _write_jsonl(selected, out, for_terminal=for_terminal)
        return _write_csv(selected, out, for_terminal=for_terminal)
    finally:
        store.close()


def _tag(event: Event) -> str:
    return str(event.__struct_config__.tag)


def _write_jsonl(events: Iterator[tuple[int, Event]], out: IO[str], *, for_terminal: bool) -> int:
    from routeledger.events import encode_event, escape_json_controls

    count = 0
    for position, event in events:
        # The stored encoding is an object starting with its tag: put the position first.
        line = f'{{"position":{position},{encode_event(event)[1:].decode()}'
        out.write((escape_json_controls(line) if for_terminal else line) + "\n")
        count += 1
    return count


def _write_csv(events: Iterator[tuple[int, Event]], out: IO[str], *, for_terminal: bool) -> int:
    import msgspec

    from routeledger.events import escape_controls, escape_json_controls

    def cell(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, str):
            return escape_controls(value) if for_terminal else value
        if isinstance(value, bool):
            return "true" if value else "false"
        return value

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for position, event in events:
        fields: dict[str, Any] = msgspec.to_builtins(event)
        tag = fields.pop("type", _tag(event))
        ts = fields.pop("ts", event.ts)
        recorded = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
        columns = [fields.pop(name, None) for name in _FIELD_COLUMNS]
        data = msgspec.json.encode(fields).decode() if fields else ""
        row = [position, recorded.replace("+00:00", "Z"), repr(ts), tag, *columns]
        # data stays valid JSON with the same values: escaped the JSON way.
        writer.writerow([*map(cell, row), escape_json_controls(data) if for_terminal else data])
        count += 1
    return count


def run(args: argparse.Namespace) -> int:
    """Export; return the exit status."""
    from routeledger._replay import open_readonly

    start = parse_time(args.start) if args.start is not None else None
    end = parse_time(args.end) if args.end is not None else None
    options: dict[str, Any] = {"format": args.format, "types": args.types, "start": start}
    options["end"] = end
    _type_filter(args.types)  # refuse a bad type or log before the output file is created
    open_readonly(args.db).close()
    if args.output is None:
        try:
            export_events(args.db, sys.stdout, for_terminal=True, **options)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader left (``| head``): stop quietly, and keep the interpreter's final
            # flush from failing again on the closed pipe.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        return 0
    with open(args.output, "w", encoding="utf-8", newline="") as out:
        count = export_events(args.db, out, **options)
    print(f"wrote {count} events to {args.output}", file=sys.stderr)
    return 0
