"""SQLiteStore beyond the contract: files, processes, crashes, locks, limits and bad data."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from routeledger.events import (
    HealthProbed,
    RequestReceived,
    SchemaVersionError,
    StoreCorrupted,
    StoreError,
    StoreFull,
    StoreLocked,
    UnknownEventType,
)
from routeledger.store import SCHEMA_VERSION, SQLiteStore, open_store
from routeledger.store._sqlerrors import translate

# --- helpers ------------------------------------------------------------------------------


def probe(i: int) -> HealthProbed:
    """Return a small event that carries no request id."""
    return HealthProbed(ts=float(i), provider="p", healthy=True, latency_ms=1.0)


def received(i: int, request_id: str, *, prompt: str | None = None) -> RequestReceived:
    """Return a small event of request ``request_id``."""
    return RequestReceived(ts=float(i), request_id=request_id, model="m", prompt=prompt)


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """Open a raw autocommit sqlite3 connection, closed on exit."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        yield connection
    finally:
        connection.close()


def digest(path: Path) -> str:
    """Return a hash of the file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_log(path: Path, count: int) -> None:
    """Create an event log at ``path`` holding ``count`` probe events."""
    with SQLiteStore(path) as store:
        store.append([probe(i) for i in range(1, count + 1)])


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A path for a new database file."""
    return tmp_path / "events.sqlite"


# --- the file -----------------------------------------------------------------------------


def test_new_file_gets_schema_wal_and_version(path: Path) -> None:
    """A new file gets the events table (JSON as TEXT), its index, WAL mode and the version."""
    with SQLiteStore(path) as store:
        store.append([probe(1)])
    with raw(path) as connection:
        db = sqlite_utils.Database(connection, execute_plugins=False)
        table = db.table("events")
        assert table.columns_dict == {
            "position": int,
            "type": str,
            "ts": float,
            "request_id": str,
            "data": str,
        }
        assert connection.execute("SELECT typeof(data) FROM events").fetchall() == [("text",)]
        assert table.pks == ["position"]
        assert [index.columns for index in table.indexes] == [["request_id"]]
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_reopened_log_keeps_events_and_positions(path: Path) -> None:
    """Events survive close; a reopened store continues the positions."""
    make_log(path, 3)
    with open_store(path) as store:
        assert store.last_position() == 3
        assert store.append([probe(4)]) == [4]
        assert [s.event for s in store.read(3)] == [probe(3), probe(4)]


@pytest.mark.parametrize("readonly", [False, True])
def test_newer_schema_version_refused_before_any_write(path: Path, readonly: bool) -> None:
    """A log of a newer schema version raises SchemaVersionError and its file is unchanged."""
    make_log(path, 2)
    with raw(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = digest(path)
    with pytest.raises(SchemaVersionError, match="newer"):
        SQLiteStore(path, readonly=readonly)
    assert digest(path) == before


def test_newer_version_of_rollback_journal_file_stays_unconverted(path: Path) -> None:
    """A newer file in rollback-journal mode is refused without switching it to WAL."""
    with raw(path) as connection:
        connection.execute("CREATE TABLE events (x)")
        connection.execute("PRAGMA user_version = 99")
    before = digest(path)
    with pytest.raises(SchemaVersionError):
        SQLiteStore(path)
    assert digest(path) == before
    with raw(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)


@pytest.mark.parametrize("readonly", [False, True])
def test_non_database_file_is_corrupted(path: Path, readonly: bool) -> None:
    """A file that is not a SQLite database raises StoreCorrupted naming it, and is unchanged."""
    path.write_bytes(b"this is not a database\n" * 200)
    before = digest(path)
    with pytest.raises(StoreCorrupted, match="not a SQLite database") as info:
        SQLiteStore(path, readonly=readonly)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert digest(path) == before


def test_foreign_sqlite_database_is_refused(path: Path) -> None:
    """A SQLite database of something else (no schema version, other tables) is refused."""
    with raw(path) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
    before = digest(path)
    with pytest.raises(StoreError, match="not a routeledger event log"):
        SQLiteStore(path)
    assert digest(path) == before


def test_events_table_of_wrong_shape_is_corrupted(path: Path) -> None:
    """A file that claims the schema version but lacks the right columns is StoreCorrupted."""
    with raw(path) as connection:
        connection.execute("CREATE TABLE events (position INTEGER PRIMARY KEY, data BLOB)")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    with pytest.raises(StoreCorrupted, match="columns"):
        SQLiteStore(path)


def test_bad_arguments_are_refused(path: Path) -> None:
    """Options out of range raise ValueError before any file is touched."""
    for kwargs in (
        {"synchronous": "SOMETIMES"},
        {"busy_timeout_s": -1.0},
        {"max_size_bytes": 0},
    ):
        with pytest.raises(ValueError):
            SQLiteStore(path, **kwargs)
    with pytest.raises(ValueError, match="MemoryStore"):
        SQLiteStore(":memory:")
    assert not path.exists()


# --- bad rows -----------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [b"\x00\xffnot json", b'{"type": "health.probed"}', 42])
def test_corrupted_row_raises_naming_its_position(path: Path, garbage: object) -> None:
    """A row whose data is not a valid event raises StoreCorrupted naming it, strict or not."""
    make_log(path, 3)
    with raw(path) as connection:
        connection.execute("UPDATE events SET data = ? WHERE position = 2", (garbage,))
    with SQLiteStore(path) as store:
        for strict in (True, False):
            events = store.read(strict=strict)
            assert next(events).position == 1
            with pytest.raises(StoreCorrupted, match="position 2"):
                next(events)


def test_unknown_tag_strict_raises_nonstrict_skips_and_counts(path: Path) -> None:
    """An unknown future tag raises in strict reads; non-strict reads skip and count it."""
    make_log(path, 3)
    future = b'{"type":"future.thing","ts":4.0,"request_id":"r","novel":true}'
    with raw(path) as connection:
        connection.execute("INSERT INTO events VALUES (4, 'future.thing', 4.0, 'r', ?)", (future,))
    with SQLiteStore(path) as store:
        assert store.append([received(5, "r")]) == [5]
        with pytest.raises(UnknownEventType) as info:
            list(store.read())
        assert (info.value.tag, info.value.position) == ("future.thing", 4)
        with pytest.raises(UnknownEventType):
            list(store.read_request("r"))
        assert store.skipped_unknown == 0
        assert [s.position for s in store.read(strict=False)] == [1, 2, 3, 5]
        assert store.skipped_unknown == 1
        assert [s.position for s in store.read_request("r", strict=False)] == [5]
        assert store.skipped_unknown == 2
        counted: list[int] = []

        class Positions:
            def apply(self, position: int, event: object) -> None:
                counted.append(position)

        store.replay(Positions(), strict=False)
        assert counted == [1, 2, 3, 5]
        assert store.skipped_unknown == 3


# --- failures while writing ---------------------------------------------------------------


def test_insert_failing_part_way_writes_nothing(path: Path) -> None:
    """A batch whose insert fails after some rows went in is rolled back whole."""
    make_log(path, 2)
    with raw(path) as connection:
        connection.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.request_id = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    with SQLiteStore(path) as store:
        batch = [received(3, "ok"), received(4, "ok"), received(5, "boom"), received(6, "ok")]
        with pytest.raises(StoreError, match="injected failure") as info:
            store.append(batch)
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
        assert store.last_position() == 2
        assert list(store.read_request("ok")) == []
        assert store.append([received(7, "ok")]) == [3]


def test_held_write_lock_raises_store_locked(path: Path) -> None:
    """A writer blocked past the busy timeout raises StoreLocked; reads go on; it recovers."""
    make_log(path, 1)
    with SQLiteStore(path, busy_timeout_s=0.02) as store, raw(path) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreLocked, match="busy timeout") as info:
            store.append([probe(2)])
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert store.last_position() == 1  # WAL: readers are not blocked by the writer
        other.execute("ROLLBACK")
        assert store.append([probe(2)]) == [2]


def test_size_limit_raises_store_full_and_writes_nothing(path: Path) -> None:
    """Past max_size_bytes an append raises StoreFull; nothing of it is stored; reads work."""
    with SQLiteStore(path, max_size_bytes=64 * 1024) as store:
        assert store.append([received(1, "small")]) == [1]
        big = [received(i, "big", prompt="x" * 2000) for i in range(100)]
        with pytest.raises(StoreFull) as info:
            store.append(big)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert store.last_position() == 1
        assert list(store.read_request("big")) == []
        assert store.append([received(2, "small")]) == [2]
    with SQLiteStore(path) as store:
        assert [s.position for s in store.read()] == [1, 2]


def test_size_limit_too_small_for_the_schema_raises_store_full(path: Path) -> None:
    """A limit smaller than the empty schema raises StoreFull when the file is created."""
    with pytest.raises(StoreFull):
        SQLiteStore(path, max_size_bytes=4096)


# --- read-only ----------------------------------------------------------------------------


def test_readonly_refuses_append_and_sees_other_writers(path: Path) -> None:
    """A read-only store refuses append with StoreError and reads what a writer commits."""
    make_log(path, 2)
    with SQLiteStore(path, readonly=True) as reader, SQLiteStore(path) as writer:
        with pytest.raises(StoreError, match="read-only"):
            reader.append([probe(3)])
        writer.append([probe(3)])
        assert reader.last_position() == 3
        assert [s.position for s in reader.read(2)] == [2, 3]


def test_readonly_missing_or_empty_file_is_refused(path: Path) -> None:
    """Read-only opening of a missing or uninitialised file raises StoreError, creating none."""
    with pytest.raises(StoreError) as info:
        SQLiteStore(path, readonly=True)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert not path.exists()
    path.touch()
    with pytest.raises(StoreError, match="not an initialised event log"):
        SQLiteStore(path, readonly=True)
    assert path.read_bytes() == b""


# --- no sqlite3 exception leaks -----------------------------------------------------------


def _error(cls: type[sqlite3.Error], code: int | None, message: str = "boom") -> sqlite3.Error:
    exc = cls(message)
    if code is not None:
        exc.sqlite_errorcode = code
        exc.sqlite_errorname = f"CODE_{code}"
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_error(sqlite3.OperationalError, 5), StoreLocked),  # SQLITE_BUSY
        (_error(sqlite3.OperationalError, 5 | 2 << 8), StoreLocked),  # SQLITE_BUSY_SNAPSHOT
        (_error(sqlite3.OperationalError, 6), StoreLocked),  # SQLITE_LOCKED
        (_error(sqlite3.OperationalError, 13), StoreFull),  # SQLITE_FULL
        (_error(sqlite3.DatabaseError, 11), StoreCorrupted),  # SQLITE_CORRUPT
        (_error(sqlite3.DatabaseError, 26), StoreCorrupted),  # SQLITE_NOTADB
        (_error(sqlite3.OperationalError, None, "Could not decode to UTF-8"), StoreCorrupted),
        (_error(sqlite3.IntegrityError, 19), StoreError),  # SQLITE_CONSTRAINT
        (_error(sqlite3.ProgrammingError, None), StoreError),
        (_error(sqlite3.InterfaceError, None), StoreError),
    ],
)
def test_translate_maps_each_sqlite_error(exc: sqlite3.Error, expected: type[StoreError]) -> None:
    """Each sqlite3 failure maps to its store error, which names the file and the action."""
    error = translate(exc, path="/x.sqlite", action="append")
    assert type(error) is expected
    assert error.path == "/x.sqlite"
    assert "/x.sqlite" in str(error)


class _Failing:
    """A stand-in connection on which every statement raises a given sqlite3 error."""

    in_transaction = False

    def __init__(self, exc: sqlite3.Error) -> None:
        self.exc = exc

    def execute(self, *args: Any) -> Any:
        raise self.exc

    def executemany(self, *args: Any) -> Any:
        raise self.exc

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "exc",
    [
        _error(sqlite3.OperationalError, 10, "disk I/O error"),
        _error(sqlite3.DatabaseError, 11, "database disk image is malformed"),
        _error(sqlite3.ProgrammingError, None, "Cannot operate on a closed database."),
    ],
)
def test_no_sqlite_exception_leaks_from_any_call(path: Path, exc: sqlite3.Error) -> None:
    """append, read, read_request, replay and last_position raise only store errors."""
    with SQLiteStore(path) as store:
        # Fake connections that fail every call, in place of the real ones.
        store._writer = _Failing(exc)  # type: ignore[assignment]
        store._idle_readers = [_Failing(exc)]  # type: ignore[list-item]
        calls = [
            lambda: store.append([probe(1)]),
            lambda: list(store.read()),
            lambda: list(store.read_request("r")),
            lambda: store.replay(_Nothing()),
            lambda: store.last_position(),
        ]
        for call in calls:
            with pytest.raises(StoreError) as info:
                call()
            assert not isinstance(info.value, sqlite3.Error)
            assert info.value.__cause__ is exc


class _Nothing:
    def apply(self, position: int, event: object) -> None:
        pass


def test_read_after_close_raises_store_error(path: Path) -> None:
    """An iterator still running when its store closes raises StoreError, not sqlite3."""
    make_log(path, 3)
    store = SQLiteStore(path)
    events = store.read(limit=None)
    assert next(events).position == 1
    store.close()
    with pytest.raises(StoreError) as info:
        list(events)
    assert isinstance(info.value.__cause__, sqlite3.ProgrammingError)


# --- processes ----------------------------------------------------------------------------

_APPENDER = """
import json, sys
from routeledger.events import RequestReceived
from routeledger.store import SQLiteStore

path, name, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = SQLiteStore(path, busy_timeout_s=30.0)
print("ready", flush=True)
sys.stdin.readline()
positions = [
    store.append([RequestReceived(ts=0.0, request_id=f"{name}-{b}", model="m")] * 5)
    for b in range(batches)
]
store.close()
print(json.dumps(positions), flush=True)
"""


def test_processes_appending_concurrently_get_gapless_unique_positions(path: Path) -> None:
    """Several processes that create and append to one file at once get gapless positions."""
    names, batches = ["a", "b", "c"], 40
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(path), name, str(batches)],
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
    results = {name: json.loads(out) for name, out in zip(names, outputs, strict=True)}
    every = sorted(p for batches_ in results.values() for batch in batches_ for p in batch)
    assert every == list(range(1, len(names) * batches * 5 + 1))
    with SQLiteStore(path) as store:
        for name, batches_ in results.items():
            for b, batch in enumerate(batches_):
                assert batch == list(range(batch[0], batch[0] + 5))
                stored = [s.position for s in store.read_request(f"{name}-{b}")]
                assert stored == batch


_CRASHER = """
import sys
from routeledger.events import RequestReceived
from routeledger.store import SQLiteStore

store = SQLiteStore(sys.argv[1])
for b in range(3):
    store.append([RequestReceived(ts=float(i), request_id=f"done-{b}", model="m")
                  for i in range(10)])

def stall(self, writer):
    # Inside BEGIN IMMEDIATE, after the insert, before COMMIT: report and wait to be killed.
    (count,) = writer.execute("SELECT COUNT(*) FROM events").fetchone()
    print(count, flush=True)
    sys.stdin.read()

SQLiteStore._commit = stall
store.append([RequestReceived(ts=0.0, request_id="partial", model="m")] * 50)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_crash_between_begin_and_commit_loses_only_the_open_batch(path: Path) -> None:
    """After SIGKILL mid-transaction the committed batches remain, the open one is gone."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        # The child saw its own uncommitted rows: 30 committed + 50 inserted.
        assert child.stdout.readline().strip() == "80"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with SQLiteStore(path, busy_timeout_s=10.0) as store:
        assert store.last_position() == 30
        assert list(store.read_request("partial")) == []
        assert [s.position for s in store.read()] == list(range(1, 31))
        assert store.append([received(31, "after")]) == [31]
        assert [s.position for s in store.read_request("after")] == [31]
