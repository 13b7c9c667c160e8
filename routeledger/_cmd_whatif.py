"""``routeledger whatif``: a log's requests replayed under another strategy or configuration."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``whatif`` command."""
    p = subparsers.add_parser(
        "whatif",
        help="replay recorded requests under another strategy or configuration",
        description=(
            "Run the requests of a log (or of a scenario file) through the deterministic "
            "simulation, each provider answering as the log recorded it at that moment, under "
            "another strategy or configuration; print recorded and what-if figures side by "
            "side. The same seed gives the same answer."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", help="the event log (SQLite file or postgresql:// URL)")
    source.add_argument("--scenario", help="a scenario file (from `routeledger scenario`)")
    p.add_argument("--strategy", help="simulate with this routing strategy")
    p.add_argument(
        "--config",
        help="simulate with this configuration (TOML; with --strategy too: its strategy "
        "replaced; needed for a log that recorded none, such as a simulated one)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    p.add_argument("--bucket-s", type=float, default=10.0, help="trace resolution (default 10)")
    p.add_argument("--from", dest="start", help="replay from this time (ISO 8601 or seconds)")
    p.add_argument("--to", dest="end", help="replay up to this time (ISO 8601 or seconds)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the what-if and print it."""
    import msgspec

    from routeledger._cmd_scenario import window_of
    from routeledger._whatif import whatif, whatif_lines, whatif_scenario

    if args.scenario:
        result = whatif_scenario(
            args.scenario, strategy=args.strategy, config=args.config, seed=args.seed
        )
    else:
        result = whatif(
            args.db,
            strategy=args.strategy,
            config=args.config,
            seed=args.seed,
            bucket_s=args.bucket_s,
            window=window_of(args.db, args.start, args.end),
        )
    if args.json:
        text = msgspec.json.format(msgspec.json.encode(result), indent=2).decode()
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write("\n".join(whatif_lines(result)) + "\n")
    return 0
