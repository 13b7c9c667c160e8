"""The ``routeledger`` command line.

Each sub-command lives in its own ``routeledger._cmd_*`` module exposing
``register(subparsers)``, which adds its parser and sets ``func`` to a function taking the
parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from routeledger.events import RouteledgerError, escape_controls

__all__ = ["main"]

COMMAND_MODULES: tuple[str, ...] = (
    # one line per command module; keep sorted
    "routeledger._cmd_ab",
    "routeledger._cmd_audit",
    "routeledger._cmd_complete",
    "routeledger._cmd_demo",
    "routeledger._cmd_export",
    "routeledger._cmd_fake",
    "routeledger._cmd_metrics",
    "routeledger._cmd_replay",
    "routeledger._cmd_report",
    "routeledger._cmd_scenario",
    "routeledger._cmd_sim",
    "routeledger._cmd_whatif",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="routeledger",
        description="Route LLM requests across providers; every decision is an event.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RouteledgerError as exc:
        # Errors carry provider and log texts: never let them drive the terminal.
        print(
            f"routeledger: error: {escape_controls(str(exc), keep_newlines=True)}", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
