"""``routeledger simulate``: run a scenario on virtual time and print the replayed figures."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` command."""
    p = subparsers.add_parser(
        "simulate",
        help="run a scenario against simulated providers on virtual time",
        description=(
            "Run the real routing, failover, health and log-writer logic against simulated "
            "providers on virtual time. The same seed writes the same log byte for byte."
        ),
    )
    p.add_argument("--scenario", required=True, help="scenario TOML file")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--db", help="write the event log to this SQLite file (must not exist)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the scenario and print what it did and the figures replayed from its log."""
    import os

    import msgspec

    from routeledger._cmd_replay import budget_status, figure_lines
    from routeledger._replay import replay
    from routeledger.events import StoreError
    from routeledger.sim import load_scenario, simulate
    from routeledger.store import is_postgres_url, open_store, shown_target

    scenario = load_scenario(args.scenario)
    if args.db and os.path.exists(args.db):
        raise StoreError(f"{args.db} exists; simulate writes a new log", path=args.db)
    if args.db and is_postgres_url(args.db):
        with open_store(args.db) as store:
            if store.last_position():
                shown = shown_target(args.db)
                raise StoreError(f"{shown} holds a log; simulate writes a new log", path=shown)
    result = simulate(scenario, seed=args.seed, db=args.db)
    projections = replay(args.db) if args.db else result.projections
    assert projections is not None
    if args.json:
        document = {
            "completed": result.completed,
            "failed": result.failed,
            "errors": result.errors,
            "simulated_s": round(result.duration_s, 6),
            "events": result.events,
            "metrics": projections.metrics.snapshot(),
            "usage": projections.usage.report("all"),
            "ab": projections.ab.all_results(),
        }
        if projections.budgets.budgets:
            document["budgets"] = budget_status(projections)
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(document), indent=2).decode())
        sys.stdout.write("\n")
        return 0
    lines = [
        f"simulated {result.completed + result.failed} request(s) over "
        f"{result.duration_s:.1f} s: {result.completed} completed, {result.failed} failed",
    ]
    if result.errors:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in result.errors.items()))
    lines.append(f"{result.events} event(s)" + (f" in {shown_target(args.db)}" if args.db else ""))
    sections: tuple[str, ...] = ("metrics", "usage", "ab")
    if projections.budgets.budgets:
        sections += ("budgets",)
    lines.extend(figure_lines(projections, sections, "all"))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
