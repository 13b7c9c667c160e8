"""The pinned simulation log: a refactor that changes it changes behaviour."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from routeledger.sim import load_scenario, simulate

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "scenario.toml"

PINNED_EVENTS = 25_678
PINNED_SHA256 = "ae26ebdd92db7d806ac3113800640fe8dd03e6a1c7a2790700e1852caef59367"
"""sha256 of every stored event (position, tag, JSON bytes) of the example at seed 1.

Change it only in a commit that changes behaviour on purpose, and say so in its message.
"""


def log_digest(path: Path) -> tuple[int, str]:
    """Return the number of events of a log file and the sha256 of their stored bytes."""
    digest = hashlib.sha256()
    count = 0
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT position, type, data FROM events ORDER BY position")
        for position, tag, data in rows:
            raw = data.encode() if isinstance(data, str) else bytes(data)
            digest.update(f"{position}\0{tag}\0".encode() + raw + b"\n")
            count += 1
    conn.close()
    return count, digest.hexdigest()


def test_the_example_scenario_at_seed_1_writes_the_pinned_log(tmp_path: Path) -> None:
    """examples/scenario.toml simulated with seed 1 stores exactly the pinned events."""
    db = tmp_path / "pin.sqlite"
    simulate(load_scenario(EXAMPLE), seed=1, db=db)
    assert log_digest(db) == (PINNED_EVENTS, PINNED_SHA256)
