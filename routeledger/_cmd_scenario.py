"""``routeledger scenario``: a recorded window of a log written as a simulation scenario."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routeledger._trace import Window

__all__ = ["register", "window_of"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``scenario`` command."""
    p = subparsers.add_parser(
        "scenario",
        help="turn a recorded window of a log into a simulation scenario",
        description=(
            "Write the providers' recorded behaviour (latencies, errors with their statuses, "
            "Retry-After, outages) and the recorded requests of a window of the log as a "
            "scenario that `routeledger simulate` and `routeledger whatif` run. Times are "
            "ISO 8601 (UTC without a zone) or seconds after the log's first event."
        ),
    )
    p.add_argument("--db", required=True, help="the event log (SQLite file or postgresql:// URL)")
    p.add_argument("--from", dest="start", help="window start (default: the log's start)")
    p.add_argument("--to", dest="end", help="window end, excluded (default: the log's end)")
    p.add_argument("-o", "--output", required=True, help="scenario TOML file to write")
    p.add_argument("--config", help="configuration to use instead of the recorded one")
    p.add_argument("--bucket-s", type=float, default=10.0, help="phase length (default 10)")
    p.set_defaults(func=run)


def window_of(db: str, start: str | None, end: str | None) -> Window | None:
    """Return the window named by ``--from`` and ``--to`` (``None``: the whole log)."""
    from routeledger._replay import open_readonly
    from routeledger._trace import Window, parse_time

    if start is None and end is None:
        return None
    store = open_readonly(db)
    try:
        first = next(iter(store.read(limit=1, strict=False)), None)
    finally:
        store.close()
    origin = first[1].ts if first is not None else 0.0
    return Window(
        start=parse_time(start, log_start=origin) if start is not None else origin,
        end=parse_time(end, log_start=origin) if end is not None else None,
    )


def run(args: argparse.Namespace) -> int:
    """Extract the scenario and write it."""
    import sys
    from pathlib import Path

    from routeledger._incident import extract_scenario, scenario_toml

    data = extract_scenario(
        args.db,
        window=window_of(args.db, args.start, args.end),
        bucket_s=args.bucket_s,
        config=args.config,
    )
    from routeledger.store import shown_target

    # The file names its source: a URL's password must not land in it.
    text = scenario_toml(data, db=shown_target(args.db), bucket_s=args.bucket_s)
    Path(args.output).write_text(text, encoding="utf-8")
    sim = data["simulation"]
    traced = sum(1 for p in data["providers"] if "sim" in p)
    sys.stdout.write(
        f"wrote {args.output}: {len(sim['arrivals'])} request(s), "
        f"{traced} traced provider(s) of {len(data['providers'])}\n"
    )
    return 0
