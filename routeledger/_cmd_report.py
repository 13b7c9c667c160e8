"""The ``routeledger report`` command: an event log as one self-contained HTML page.

``routeledger report --db FILE -o report.html [--progress | --no-progress]`` streams the log
once (flat memory, see :mod:`routeledger._report`) and writes the page. A progress bar goes to
stderr when the log is large and stderr is a terminal, or always with ``--progress``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from routeledger._report import ReportFold
    from routeledger.store import EventStore

__all__ = ["LARGE_LOG", "Progress", "register", "run", "write_report"]

LARGE_LOG = 50_000
"""Events from which a log counts as large: the progress bar shows on a terminal."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` sub-command."""
    p = subparsers.add_parser(
        "report",
        help="write an HTML report (charts, health timeline, cost, A/B) of an event log",
        description=(
            "Write one self-contained HTML file (inline SVG charts, opens offline): requests "
            "and errors per provider over time, latency percentiles over time, the health and "
            "circuit timeline, cost per provider and per model, and the A/B tests with "
            "intervals."
        ),
    )
    p.add_argument(
        "--db", required=True, metavar="FILE", help="the SQLite event log or a postgresql:// URL"
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"show a progress bar on stderr (default: on a terminal, from {LARGE_LOG} events)",
    )
    p.set_defaults(func=run)


class Progress:
    """Draw ``reading log [#####     ] 50% (n/total events)`` on one line of ``stream``.

    It redraws only when the shown percentage changes, so a long log costs a hundred writes.
    """

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self._shown = -1

    def update(self, done: int) -> None:
        """Show that ``done`` events of the total have been read."""
        percent = min(100, done * 100 // self.total)
        if percent == self._shown:
            return
        self._shown = percent
        filled = percent * self.WIDTH // 100
        bar = "#" * filled + " " * (self.WIDTH - filled)
        self.stream.write(f"\rreading log [{bar}] {percent:3d}% ({done}/{self.total} events)")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        self.stream.write("\n")
        self.stream.flush()


def _fold(store: EventStore, progress: Progress | None) -> ReportFold:
    from routeledger._report import ReportFold

    last = store.last_position()
    ends = [e.ts for _, e in store.read(1, limit=1, strict=False)]
    ends += [e.ts for _, e in store.read(last, limit=1, strict=False)]
    fold = ReportFold(min(ends, default=0.0), max(ends, default=0.0))
    for position, event in store.read(strict=False):
        fold.apply(position, event)
        if progress is not None and position % 1000 == 0:
            progress.update(position)
    if progress is not None:
        progress.update(last)
        progress.close()
    fold.finish()
    return fold


def write_report(
    db: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    progress: bool | None = None,
    stream: TextIO | None = None,
) -> Path:
    """Write the HTML report of the log at ``db`` to ``output`` and return its path.

    Args:
        db: the event log.
        output: the HTML file (replaced atomically: a reader never sees half a page).
        progress: show a progress bar on ``stream``; ``None``: only on a terminal, for a log
            of at least :data:`LARGE_LOG` events.
        stream: where the progress bar goes (default: stderr).

    Raises:
        StoreError: the log is missing or unreadable.
    """
    from routeledger._replay import open_readonly
    from routeledger._report import render_html
    from routeledger.store import shown_target

    err = stream if stream is not None else sys.stderr
    store = open_readonly(db)
    try:
        if progress is None:
            progress = err.isatty() and store.last_position() >= LARGE_LOG
        bar = Progress(store.last_position(), err) if progress else None
        # Named by its file, or its URL's last part (never a password).
        page = render_html(_fold(store, bar), source=Path(shown_target(db)).name)
    finally:
        store.close()
    target = Path(output)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    return target


def run(args: argparse.Namespace) -> int:
    """Write the report; return the exit status."""
    from routeledger.events import escape_controls

    path = write_report(args.db, args.output, progress=args.progress)
    print(f"wrote {escape_controls(str(path))}")
    return 0
