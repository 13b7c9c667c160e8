"""Schema version 2 (JSON as TEXT) and the migration of version 1 logs, on a file v1 code wrote.

``tests/fixtures/v1_log.sqlite`` was written by routeledger at commit 2f1cddf (schema 1, JSON
as BLOBs); ``tests/fixtures/make_v1_log.py`` says how. Every test works on a copy: opening the
committed file as a writer would migrate it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils

from routeledger._replay import replay
from routeledger.events import Projections, RequestReceived, StoreError
from routeledger.store import (
    SCHEMA_VERSION,
    SQLiteStore,
    StoredEvent,
    _schema,
    load_snapshot,
    write_snapshot,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v1_log.sqlite"
FIXTURE_EVENTS = 755


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """Open a raw autocommit sqlite3 connection, closed on exit."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        yield connection
    finally:
        connection.close()


def stored_rows(path: Path) -> list[tuple[int, str, str, bytes]]:
    """Return every row as (position, type, storage class of data, data's bytes)."""
    with raw(path) as connection:
        rows = connection.execute(
            "SELECT position, type, typeof(data), CAST(data AS BLOB) FROM events ORDER BY position"
        ).fetchall()
    return [(p, t, kind, bytes(data)) for p, t, kind, data in rows]


def version_of(path: Path) -> int:
    """Return the file's ``user_version``."""
    with raw(path) as connection:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
    return int(version)


def read_all(path: Path) -> list[StoredEvent]:
    """Return every event of the log, read through a read-only store."""
    with SQLiteStore(path, readonly=True) as store:
        return list(store.read())


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    """A copy of the committed version 1 log."""
    path = tmp_path / "v1.sqlite"
    shutil.copyfile(FIXTURE, path)
    return path


def test_the_fixture_is_a_version_1_log_of_json_blobs(v1: Path) -> None:
    """The committed fixture really is schema 1: every event's JSON is a BLOB."""
    rows = stored_rows(v1)
    assert version_of(v1) == 1
    assert len(rows) == FIXTURE_EVENTS
    assert {kind for _, _, kind, _ in rows} == {"blob"}


def test_a_read_only_open_reads_a_v1_log_without_migrating_it(v1: Path) -> None:
    """A read-only store and replay() read a v1 log as it is, and leave its bytes alone."""
    before = hashlib.sha256(v1.read_bytes()).hexdigest()
    events = read_all(v1)
    figures = replay(v1)
    assert [s.position for s in events] == list(range(1, FIXTURE_EVENTS + 1))
    assert figures.events == FIXTURE_EVENTS
    assert figures.metrics["steady"].requests > 0
    assert version_of(v1) == 1
    assert hashlib.sha256(v1.read_bytes()).hexdigest() == before


def test_a_writer_migrates_a_v1_log_to_text_keeping_every_event_and_figure(v1: Path) -> None:
    """After a writer opens a v1 log: same events, same bytes, data TEXT, same replay."""
    rows_before = stored_rows(v1)
    events_before = read_all(v1)
    figures_before = replay(v1).snapshot()

    SQLiteStore(v1).close()

    assert version_of(v1) == SCHEMA_VERSION == 2
    rows_after = stored_rows(v1)
    assert {kind for _, _, kind, _ in rows_after} == {"text"}
    # The very same UTF-8 JSON bytes, now stored as TEXT.
    assert [(p, t, data) for p, t, _, data in rows_after] == [
        (p, t, data) for p, t, _, data in rows_before
    ]
    assert read_all(v1) == events_before
    assert replay(v1).snapshot() == figures_before
    with raw(v1) as connection:
        table = sqlite_utils.Database(connection, execute_plugins=False).table("events")
        assert table.columns_dict["data"] is str
        assert [index.columns for index in table.indexes] == [["request_id"]]
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with SQLiteStore(v1) as store:
        event = RequestReceived(ts=1.0, request_id="after", model="m")
        assert store.append([event]) == [FIXTURE_EVENTS + 1]
        assert [s.position for s in store.read_request("after")] == [FIXTURE_EVENTS + 1]


def test_json_extract_reads_the_events_of_a_migrated_log(v1: Path) -> None:
    """After migration every row is valid JSON text that SQL's JSON functions read."""
    # SQLite 3.45+ would take a v1 BLOB for JSONB here and fail or misread it; older SQLite
    # (this machine's) still reads it as text, so the v1 side is not asserted.
    query = (
        "SELECT json_extract(data, '$.provider'), COUNT(*) FROM events "
        "WHERE type = 'attempt.succeeded' GROUP BY 1 ORDER BY 1"
    )
    SQLiteStore(v1).close()
    with raw(v1) as connection:
        counts = dict(connection.execute(query).fetchall())
        (invalid,) = connection.execute(
            "SELECT COUNT(*) FROM events WHERE typeof(data) != 'text' OR NOT json_valid(data)"
        ).fetchone()
    assert invalid == 0
    assert sum(counts.values()) == 150
    assert set(counts) == {"steady", "flaky", "capped"}


def test_a_failing_statement_half_way_through_the_migration_leaves_the_v1_file_intact(
    v1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails after dropping the old table rolls back whole: v1, readable."""
    rows_before = stored_rows(v1)
    steps = list(_schema._MIGRATION_1_TO_2)
    drop = next(i for i, step in enumerate(steps) if step.startswith("DROP TABLE"))
    steps.insert(drop + 1, "INSERT INTO no_such_table VALUES (1)")
    monkeypatch.setattr(_schema, "_MIGRATION_1_TO_2", tuple(steps))

    with pytest.raises(StoreError, match="no_such_table"):
        SQLiteStore(v1)

    assert version_of(v1) == 1
    assert stored_rows(v1) == rows_before
    with raw(v1) as connection:
        tables = sqlite_utils.Database(connection, execute_plugins=False).table_names()
    assert tables == ["events"]
    assert len(read_all(v1)) == FIXTURE_EVENTS
    monkeypatch.undo()
    SQLiteStore(v1).close()
    assert version_of(v1) == 2
    assert len(read_all(v1)) == FIXTURE_EVENTS


_MIGRATION_KILLER = """
import os, signal, sys
from routeledger.store import SQLiteStore, _schema


class KillHalfWay(tuple):
    # Iterated by the migration: the process dies after the old table is dropped.
    def __iter__(self):
        for step in tuple.__iter__(self):
            yield step
            if step.startswith("DROP TABLE"):
                print("dropped", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)


_schema._MIGRATION_1_TO_2 = KillHalfWay(_schema._MIGRATION_1_TO_2)
SQLiteStore(sys.argv[1])
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_process_killed_half_way_through_the_migration_leaves_the_v1_file_intact(
    v1: Path,
) -> None:
    """SIGKILL inside the migration transaction: the file is still v1, whole, and migrates later."""
    rows_before = stored_rows(v1)
    child = subprocess.run(
        [sys.executable, "-c", _MIGRATION_KILLER, str(v1)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.stdout.strip() == "dropped", child.stderr
    assert child.returncode == -signal.SIGKILL
    assert version_of(v1) == 1
    assert stored_rows(v1) == rows_before
    assert len(read_all(v1)) == FIXTURE_EVENTS
    SQLiteStore(v1).close()
    assert version_of(v1) == 2
    assert [data for *_, data in stored_rows(v1)] == [data for *_, data in rows_before]


_OPENER = """
import json, sys
from routeledger.events import RequestReceived
from routeledger.store import SQLiteStore

print("ready", flush=True)
sys.stdin.readline()
with SQLiteStore(sys.argv[1], busy_timeout_s=30.0) as store:
    positions = store.append([RequestReceived(ts=0.0, request_id=sys.argv[2], model="m")])
print(json.dumps(positions), flush=True)
"""


def test_processes_opening_a_v1_log_at_once_migrate_it_once_and_lose_nothing(v1: Path) -> None:
    """Three writers opening a v1 log together: one migration, every event kept, gapless."""
    rows_before = stored_rows(v1)
    names = ["a", "b", "c"]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, str(v1), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=60)[0] for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert [child.returncode for child in children] == [0, 0, 0]
    positions = sorted(p for out in outputs for p in json.loads(out))
    assert positions == [FIXTURE_EVENTS + 1, FIXTURE_EVENTS + 2, FIXTURE_EVENTS + 3]
    rows_after = stored_rows(v1)
    assert [data for *_, data in rows_after[:FIXTURE_EVENTS]] == [data for *_, data in rows_before]
    assert {kind for _, _, kind, _ in rows_after} == {"text"}
    assert version_of(v1) == 2


def test_a_versioned_log_may_hold_other_tables_and_keeps_them_through_the_migration(
    v1: Path, tmp_path: Path
) -> None:
    """Extra tables (snapshots, say) do not make a v1 or v2 log corrupt, and survive migrating."""
    with raw(v1) as connection:
        connection.execute("CREATE TABLE side (k TEXT PRIMARY KEY, v BLOB)")
        connection.execute("INSERT INTO side VALUES ('x', x'00ff')")
    assert len(read_all(v1)) == FIXTURE_EVENTS
    SQLiteStore(v1).close()
    with raw(v1) as connection:
        assert connection.execute("SELECT k, v FROM side").fetchall() == [("x", b"\x00\xff")]
    assert len(read_all(v1)) == FIXTURE_EVENTS
    fresh = tmp_path / "fresh.sqlite"
    SQLiteStore(fresh).close()
    with raw(fresh) as connection:
        connection.execute("CREATE TABLE side (k TEXT)")
    SQLiteStore(fresh).close()
    assert read_all(fresh) == []


def test_a_v2_log_whose_events_table_still_holds_blob_data_is_corrupted(v1: Path) -> None:
    """A file that claims version 2 with the v1 column type is refused, not half-trusted."""
    with raw(v1) as connection:
        connection.execute("PRAGMA user_version = 2")
    for readonly in (False, True):
        with pytest.raises(StoreError, match="schema version 2"):
            SQLiteStore(v1, readonly=readonly)


def test_text_and_blob_rows_read_back_alike(tmp_path: Path) -> None:
    """A row of either storage class (an old writer may still append BLOBs) reads the same."""
    path = tmp_path / "mixed.sqlite"
    event = RequestReceived(ts=1.0, request_id="r", model="m")
    with SQLiteStore(path) as store:
        store.append([event])
    with raw(path) as connection:
        (text,) = connection.execute("SELECT data FROM events").fetchone()
        connection.execute(
            "INSERT INTO events VALUES (2, 'request.received', 1.0, 'r', ?)",
            (text.encode(),),
        )
    assert [s.event for s in read_all(path)] == [event, event]


def test_a_snapshot_taken_on_a_v1_log_stays_valid_after_the_migration(v1: Path) -> None:
    """The migration keeps each event's bytes, so a snapshot's anchor still matches them."""
    with SQLiteStore(v1) as store:
        projections = store.replay(Projections())
        assert write_snapshot(store, projections)
    # Back to schema 1 with its snapshots table, as a log written before schema 2 looks.
    with raw(v1) as connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "CREATE TABLE old (position INTEGER PRIMARY KEY, type TEXT NOT NULL, "
            "ts REAL NOT NULL, request_id TEXT, data BLOB NOT NULL)"
        )
        connection.execute(
            "INSERT INTO old SELECT position, type, ts, request_id, CAST(data AS BLOB) FROM events"
        )
        connection.execute("DROP TABLE events")
        connection.execute("ALTER TABLE old RENAME TO events")
        connection.execute("CREATE INDEX events_request_id ON events (request_id)")
        connection.execute("PRAGMA user_version = 1")
        connection.execute("COMMIT")
    assert {kind for _, _, kind, _ in stored_rows(v1)} == {"blob"}

    SQLiteStore(v1).close()

    assert version_of(v1) == 2
    with SQLiteStore(v1, readonly=True) as store:
        restored = load_snapshot(store)
    assert restored is not None
    assert restored.snapshot_position == FIXTURE_EVENTS
    assert restored.snapshot() == replay(v1, snapshots=False).snapshot()
