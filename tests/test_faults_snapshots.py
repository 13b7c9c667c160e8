"""Faults around snapshots: crashes, failed writes, spoilt rows never mislead a start."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from routeledger import LogConfig, Runtime, replay
from routeledger.events import PERIODS, RequestReceived, StoreCorrupted
from routeledger.store import SQLiteStore, read_snapshots
from routeledger.store import _snapshots as snapshots

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    import msgspec
    from routeledger import Message, Request, Runtime, RuntimeConfig
    from routeledger.store import SQLiteStore, read_snapshots
    from routeledger.store import _snapshots

    cfg_path, db, mode = sys.argv[1:4]
    cfg = msgspec.json.decode(open(cfg_path, "rb").read(), type=RuntimeConfig)
    req = Request(model="fake-model", messages=[Message(role="user", content="hi")], max_tokens=8)

    def stored():
        with SQLiteStore(db, readonly=True) as store:
            return [s.position for s in read_snapshots(store)]

    rt = Runtime.start(cfg, event_log=db)
    while not stored():
        rt.complete(req)
        rt.flush()
    print(json.dumps(stored()), flush=True)
    if mode == "in-snapshot":
        def die(writer):
            os.kill(os.getpid(), signal.SIGKILL)
        _snapshots._commit = die
        for _ in range(20):  # until a snapshot is due, and the process dies inside it
            rt.complete(req)
            rt.flush()
        sys.exit(3)
    # No later snapshot: one could land on the last event and leave no tail to fold.
    from routeledger.actors import _writer
    _writer.write_snapshot = lambda store, projections: False
    for _ in range(3):
        rt.complete(req)
    rt.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_child(tmp_path: Path, cfg: Any, db: Path, mode: str) -> list[int]:
    """Run a runtime in a child process that is SIGKILLed; return the snapshots it saw first."""
    (tmp_path / "cfg.json").write_bytes(msgspec.json.encode(cfg))
    (tmp_path / "child.py").write_text(CHILD)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "cfg.json"), str(db), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    first: list[int] = json.loads(proc.stdout) if proc.stdout.strip() else []
    return first


def stored(db: Path) -> list[int]:
    """Return the positions of the snapshots in ``db``, newest first."""
    with SQLiteStore(db, readonly=True) as store:
        return [s.position for s in read_snapshots(store)]


def last_position(db: Path) -> int:
    """Return the last position of the log in ``db``."""
    with SQLiteStore(db, readonly=True) as store:
        return store.last_position()


def assert_starts_correctly(cfg: Any, db: Path) -> None:
    """Start on ``db``: the figures equal a replay from position 1, before and after a request."""
    with Runtime.start(cfg, event_log=db) as rt:
        for _ in range(2):
            rt.flush()
            full = replay(db, snapshots=False)
            assert rt.get_metrics() == full.metrics
            for period in PERIODS:
                assert rt.get_usage(period) == full.usage(period)
            assert replay(db).snapshot() == full.snapshot()
            assert replay(db).routing.stats == full.routing.stats
            rt.route_request(rt_request())


def rt_request() -> Any:
    """Return a small request for ``fake-model``."""
    from routeledger import Message, Request

    return Request(model="fake-model", messages=[Message(role="user", content="hi")], max_tokens=8)


@pytest.fixture
def cfg(fakes: Any, config_for: Any) -> Any:
    """Return a two-provider configuration that snapshots its log every 8 events."""
    a, b = fakes(2)
    return config_for({"a": a, "b": b}, log=LogConfig(snapshot_every=8))


def test_a_crash_between_a_snapshot_and_its_tail_leaves_a_log_that_starts_correctly(
    cfg: Any, db: Path, tmp_path: Path
) -> None:
    """SIGKILL after a snapshot and more appends: the start folds snapshot + tail, as a replay."""
    first = run_child(tmp_path, cfg, db, "after-snapshot")
    assert first and stored(db)[0] < last_position(db)
    assert replay(db).snapshot_position == stored(db)[0]
    assert_starts_correctly(cfg, db)


def test_a_crash_inside_a_snapshot_write_leaves_the_previous_snapshot_and_every_event(
    cfg: Any, db: Path, tmp_path: Path
) -> None:
    """SIGKILL inside the snapshot transaction: that snapshot never was, the log is whole."""
    first = run_child(tmp_path, cfg, db, "in-snapshot")
    assert stored(db) == first  # the killed transaction left nothing behind
    assert first[0] < last_position(db)
    assert_starts_correctly(cfg, db)


def test_a_failed_snapshot_write_is_logged_once_and_the_runtime_goes_on(
    cfg: Any, db: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An injected failure at every snapshot commit: one WARNING, requests served, no row."""

    def fail(writer: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(snapshots, "_commit", fail)
    with (
        caplog.at_level(logging.WARNING, logger="routeledger"),
        Runtime.start(cfg, event_log=db) as rt,
    ):
        for _ in range(6):
            rt.complete(rt_request())
            rt.flush()
    warned = [r for r in caplog.records if "snapshot not written" in r.getMessage()]
    assert len(warned) == 1 and last_position(db) > 3 * 8
    assert stored(db) == []
    monkeypatch.undo()
    assert_starts_correctly(cfg, db)


def make_snapshotted_log(cfg: Any, db: Path, *, keep_older: bool = False) -> int:
    """Write a log whose last event is covered by a snapshot (the only one); return its position."""
    with Runtime.start(cfg, event_log=db) as rt:
        for _ in range(3):
            rt.complete(rt_request())
            rt.flush()  # one commit per request: a snapshot falls between, not only at close
    (position, *older) = stored(db)
    assert position == last_position(db) and older
    if not keep_older:
        with sqlite3.connect(db, isolation_level=None) as raw:
            raw.execute("DELETE FROM snapshots WHERE position < ?", (position,))
        raw.close()
    return position


def rewrite(db: Path, position: int, **columns: Any) -> None:
    """Set ``columns`` of the snapshot row at ``position``, then recompute its checksum."""
    with sqlite3.connect(db, isolation_level=None) as raw:
        for name, value in columns.items():
            raw.execute(f"UPDATE snapshots SET {name} = ? WHERE position = ?", (value, position))
        fmt, code, anchor, state = raw.execute(
            "SELECT format, code, anchor, state FROM snapshots WHERE position = ?", (position,)
        ).fetchone()
        checksum = snapshots._checksum(fmt, code, position, anchor, state)
        raw.execute("UPDATE snapshots SET checksum = ? WHERE position = ?", (checksum, position))
    raw.close()


def damage(db: Path, position: int, how: str) -> None:
    """Spoil the snapshot row at ``position`` in one of the ways a start must see through."""
    if how == "bad checksum":
        with sqlite3.connect(db, isolation_level=None) as raw:
            (state,) = raw.execute("SELECT state FROM snapshots WHERE position = ?", (position,))
            spoilt = bytearray(state[0])
            spoilt[len(spoilt) // 2] ^= 0x01
            raw.execute(
                "UPDATE snapshots SET state = ? WHERE position = ?", (bytes(spoilt), position)
            )
        raw.close()
    elif how == "other format":
        rewrite(db, position, format=snapshots.SNAPSHOT_FORMAT + 1)
    elif how == "other code":
        rewrite(db, position, code="0-0123456789abcdef")
    elif how == "does not decode":
        rewrite(db, position, state=b"\xc1 not msgpack")
    elif how == "wrong shape":
        rewrite(db, position, state=msgspec.msgpack.encode({"position": position}))
    elif how == "other log":
        rewrite(db, position, anchor="0" * 64)
    elif how == "ahead of the log":
        with sqlite3.connect(db, isolation_level=None) as raw:
            raw.execute("UPDATE snapshots SET position = ? WHERE position = ?", (10**6, position))
        raw.close()
        rewrite(db, 10**6)
    else:
        raise AssertionError(how)


HOW = [
    "bad checksum",
    "other format",
    "other code",
    "does not decode",
    "wrong shape",
    "other log",
    "ahead of the log",
]


@pytest.mark.parametrize("how", HOW)
def test_a_spoilt_snapshot_is_ignored_with_one_warning_and_rebuilt(
    how: str, cfg: Any, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupted, foreign or other-version snapshot is never used; the next start rebuilds it."""
    position = make_snapshotted_log(cfg, db)
    damage(db, position, how)
    with caplog.at_level(logging.WARNING, logger="routeledger"):
        fast = replay(db)
    assert fast.snapshot_position == 0
    assert fast.snapshot() == replay(db, snapshots=False).snapshot()
    warned = [r for r in caplog.records if "snapshot(s) ignored" in r.getMessage()]
    assert len(warned) == 1 and "folding from position 1" in warned[0].getMessage()
    assert_starts_correctly(cfg, db)
    assert stored(db)[0] == last_position(db)  # rebuilt (at close)
    assert replay(db).snapshot_position == last_position(db)


def test_an_older_valid_snapshot_is_used_when_the_newest_is_spoilt(cfg: Any, db: Path) -> None:
    """With the newest snapshot damaged, the fold starts from the one before it."""
    make_snapshotted_log(cfg, db, keep_older=True)
    newest, older = stored(db)
    damage(db, newest, "bad checksum")
    fast = replay(db)
    assert fast.snapshot_position == older
    assert fast.snapshot() == replay(db, snapshots=False).snapshot()


def test_a_row_damaged_after_a_snapshot_covered_it_is_found_by_a_replay_from_position_1(
    cfg: Any, db: Path
) -> None:
    """A snapshot vouches for the rows it covers; replay(snapshots=False) still reads them all."""
    make_snapshotted_log(cfg, db)
    with SQLiteStore(db, readonly=True) as store:
        bad = next(s.position for s in store.read() if isinstance(s.event, RequestReceived))
    with sqlite3.connect(db, isolation_level=None) as raw:
        raw.execute("UPDATE events SET data = ? WHERE position = ?", (b"\x00garbage", bad))
    raw.close()
    assert replay(db).snapshot_position == last_position(db)
    with pytest.raises(StoreCorrupted, match=f"position {bad}"):
        replay(db, snapshots=False)
