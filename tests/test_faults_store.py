"""Fault catalogue, event log: store failures end to end through a real Runtime.

Requests keep being served while the log fails; events wait in the writer's buffer (an
overflow becomes an explicit gap event); nothing already committed is ever lost; bad files
give clear errors of the hierarchy, never a traceback and never a write.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pykka
import pytest

from routeledger import (
    LogConfig,
    Message,
    ModelSpec,
    ProviderConfig,
    Request,
    Runtime,
    RuntimeConfig,
    VirtualClock,
    replay,
)
from routeledger.cli import build_parser, main
from routeledger.events import (
    ConfigurationApplied,
    EventsDropped,
    RequestCompleted,
    RequestReceived,
    SchemaVersionError,
    StoreCorrupted,
    StoreFull,
    StoreLocked,
)
from routeledger.store import SQLiteStore, StoredEvent
from routeledger.testing import FakeProvider, no_backoff

MODEL = "fake-model"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Return the path of a fresh event log."""
    return tmp_path / "events.sqlite"


# --- helpers --------------------------------------------------------------------------------


def config(fake: FakeProvider, **runtime: Any) -> RuntimeConfig:
    """Return a one-provider configuration on ``fake``."""
    return RuntimeConfig(
        providers=[
            ProviderConfig(
                name="a",
                kind="openai",
                base_url=fake.url + "/v1",
                models=[ModelSpec(name=MODEL, input_per_mtok=1.0, output_per_mtok=2.0)],
                timeout_s=5.0,
            )
        ],
        failover=no_backoff(),
        seed=0,
        **runtime,
    )


def start(fake: FakeProvider, event_log: Path | SQLiteStore, **runtime: Any) -> Runtime:
    """Start a runtime on a virtual clock (the writer's retry backoff then waits for flush)."""
    return Runtime.start(
        config(fake, **runtime),
        event_log=event_log,
        clock=VirtualClock(),
        active_health_checks=False,
    )


def request(content: str = "hello", **kwargs: Any) -> Request:
    """Return a one-message request."""
    kwargs.setdefault("max_tokens", 8)
    return Request(model=MODEL, messages=[Message(role="user", content=content)], **kwargs)


def read(db: Path) -> list[StoredEvent]:
    """Return every committed event of the log."""
    store = SQLiteStore(db, readonly=True)
    try:
        return list(store.read())
    finally:
        store.close()


def assert_gapless(stored: list[StoredEvent]) -> None:
    """Assert the positions are exactly 1..n."""
    assert [s.position for s in stored] == list(range(1, len(stored) + 1))


def completed_ids(stored: list[StoredEvent]) -> set[str]:
    """Return the ids of the requests the log records as completed."""
    return {s.event.request_id for s in stored if isinstance(s.event, RequestCompleted)}


def file_digest(directory: Path) -> dict[str, str]:
    """Return a hash of every file in ``directory``."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def has_command(name: str) -> bool:
    """Return whether the command line offers sub-command ``name``."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return name in action.choices
    return False


# --- a locked database ----------------------------------------------------------------------


def test_locked_database_buffers_events_and_loses_none_once_released(
    db: Path, fake: FakeProvider
) -> None:
    """Another writer holding the lock past the busy timeout delays the log, never requests."""
    store = SQLiteStore(db, busy_timeout_s=0.02)
    with start(fake, store) as rt:
        before = [rt.complete(request()).request_id for _ in range(2)]
        rt.flush()
        acked = read(db)
        other = sqlite3.connect(db, isolation_level=None, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            during = [rt.complete(request()).request_id for _ in range(5)]
            with pytest.raises(StoreLocked):
                rt.flush()
            assert isinstance(rt.store_error, StoreLocked)
            assert read(db) == acked  # WAL: readers go on, and nothing new is half-written
        finally:
            other.execute("ROLLBACK")
            other.close()
        rt.flush()
        assert rt.store_error is None
        stored = read(db)
        assert rt.get_metrics() == replay(db).metrics
    assert_gapless(stored)
    assert stored[: len(acked)] == acked
    assert completed_ids(stored) == set(before + during)
    assert not [s for s in stored if isinstance(s.event, EventsDropped)]


# --- a full disk ----------------------------------------------------------------------------


def test_full_store_keeps_serving_and_records_the_overflow_as_a_gap(
    db: Path, fake: FakeProvider
) -> None:
    """A full store: requests served, error reported, buffer kept, overflow logged as one gap."""
    store = SQLiteStore(db, max_size_bytes=64 * 1024)
    buffer = 10
    log = LogConfig(include_text=True, buffer_max_events=buffer)
    big = "x" * 6000  # text opted in: each request's events need several pages
    with start(fake, store, log=log) as rt:
        rt.flush()
        for _ in range(40):
            assert rt.complete(request(big)).provider == "a"
            try:
                rt.flush()
            except StoreFull:
                break
        else:
            pytest.fail("the store never filled up")
        assert isinstance(rt.store_error, StoreFull)
        acked = read(db)  # everything committed before the store filled up
        served = [rt.complete(request(big)) for _ in range(5)]
        assert [r.provider for r in served] == ["a"] * 5
        with pytest.raises(StoreFull):
            rt.flush()
        assert read(db) == acked
        # Free space on the very connection the writer uses, then let it catch up.
        store._writer.execute("PRAGMA max_page_count = 1000000")  # type: ignore[union-attr]  # open
        rt.flush()
        assert rt.store_error is None
        stored = read(db)
        assert rt.get_metrics() == replay(db).metrics
    assert_gapless(stored)
    assert stored[: len(acked)] == acked
    new = stored[len(acked) :]
    assert len(new) == buffer + 1  # the whole buffer, then the gap event
    gaps = [s.event for s in new if isinstance(s.event, EventsDropped)]
    assert len(gaps) == 1 and new[-1].event is gaps[0]
    assert gaps[0].count > 0 and gaps[0].first_ts <= gaps[0].last_ts
    assert "event log unavailable" in gaps[0].reason and "full" in gaps[0].reason
    assert [s for s in read(db) if isinstance(s.event, EventsDropped)] == [new[-1]]


def test_full_store_without_overflow_writes_every_buffered_event(
    db: Path, fake: FakeProvider
) -> None:
    """A store full for a short while loses nothing when the buffer was big enough."""
    store = SQLiteStore(db, max_size_bytes=64 * 1024)
    log = LogConfig(include_text=True)
    with start(fake, store, log=log) as rt:
        ids = []
        while True:
            ids.append(rt.complete(request("y" * 6000)).request_id)
            try:
                rt.flush()
            except StoreFull:
                break
            assert len(ids) < 40, "the store never filled up"
        ids += [rt.complete(request("y" * 6000)).request_id for _ in range(3)]
        store._writer.execute("PRAGMA max_page_count = 1000000")  # type: ignore[union-attr]  # open
        rt.flush()
    stored = read(db)
    assert_gapless(stored)
    assert completed_ids(stored) == set(ids)
    assert not [s for s in stored if isinstance(s.event, EventsDropped)]


def test_a_backlog_is_written_in_smaller_batches_when_only_a_little_space_comes_back(
    db: Path, fake: FakeProvider
) -> None:
    """A backlog too big for the space freed is written in part, not refused as a whole."""
    store = SQLiteStore(db, max_size_bytes=64 * 1024)
    log = LogConfig(include_text=True)
    with start(fake, store, log=log) as rt:
        while True:
            rt.complete(request("z" * 3000))
            try:
                rt.flush()
            except StoreFull:
                break
        for _ in range(30):  # a backlog of some 150 events, about 100 KiB of text
            rt.complete(request("z" * 3000))
        before = len(read(db))
        writer = store._writer  # type: ignore[union-attr]  # open
        (pages,) = writer.execute("PRAGMA page_count").fetchone()
        writer.execute(f"PRAGMA max_page_count = {pages + 8}")  # room for a few events only
        for _ in range(12):  # each flush tries once, with a smaller batch after a refusal
            try:
                rt.flush()
                break
            except StoreFull:
                pass
        after = read(db)
        assert len(after) > before, "no progress although some space came back"
        assert_gapless(after)
        writer.execute("PRAGMA max_page_count = 1000000")
        rt.flush()
        assert rt.get_metrics() == replay(db).metrics
    assert not [s for s in read(db) if isinstance(s.event, EventsDropped)]


# --- bad files ------------------------------------------------------------------------------


def make_log(db: Path, fake: FakeProvider, requests: int = 2) -> list[str]:
    """Write a log through a runtime; return the request ids."""
    with start(fake, db) as rt:
        return [rt.complete(request()).request_id for _ in range(requests)]


def test_corrupted_row_is_a_clear_error_naming_its_position(
    db: Path, fake: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged row: replay and the commands say StoreCorrupted at that position, no traceback."""
    ids = make_log(db, fake)
    before = read(db)
    bad = next(s.position for s in before if isinstance(s.event, RequestReceived))
    with sqlite3.connect(db, isolation_level=None) as raw:
        raw.execute("UPDATE events SET data = ? WHERE position = ?", (b"\x00\xffgarbage", bad))
    raw.close()

    with pytest.raises(StoreCorrupted, match=f"position {bad}"):
        replay(db)
    with pytest.raises(StoreCorrupted, match=f"position {bad}"):
        list(SQLiteStore(db, readonly=True).read_request(ids[0]))
    commands = [["replay", "--db", str(db)], ["tail", "--db", str(db), "--no-follow"]]
    if has_command("audit"):
        commands.append(["audit", "--db", str(db), ids[0]])
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"position {bad}" in err and "Traceback" not in err, argv
    proc = subprocess.run(
        [sys.executable, "-m", "routeledger", "replay", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert f"position {bad}" in proc.stderr and "Traceback" not in proc.stderr

    # The rest of the log is intact, and the file still takes appends.
    with SQLiteStore(db, readonly=True) as store:
        assert [s.position for s in store.read(bad + 1)] == list(range(bad + 1, len(before) + 1))
    with start(fake, db) as rt:
        after = rt.complete(request()).request_id
    with sqlite3.connect(db) as raw:
        positions = [p for (p,) in raw.execute("SELECT position FROM events ORDER BY position")]
        rows = raw.execute("SELECT COUNT(*) FROM events WHERE request_id = ?", (after,)).fetchone()
    raw.close()
    assert positions == list(range(1, len(positions) + 1)) and len(positions) > len(before)
    assert rows[0] > 0


def test_newer_schema_version_is_refused_before_any_write(
    db: Path, fake: FakeProvider, tmp_path: Path
) -> None:
    """A log written by a newer routeledger: Runtime.start raises, and no byte changes."""
    make_log(db, fake)
    with sqlite3.connect(db, isolation_level=None) as raw:
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    files = file_digest(tmp_path)
    for event_log in (db, str(db)):
        with pytest.raises(SchemaVersionError, match="99"):
            Runtime.start(config(fake), event_log=event_log, active_health_checks=False)
    with pytest.raises(SchemaVersionError):
        SQLiteStore(db)
    assert pykka.ActorRegistry.get_all() == []
    # In a process of its own, the refused start leaves nothing for the exit hook to trip on.
    proc = subprocess.run(
        [sys.executable, "-c", _REFUSED, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "refused"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert file_digest(tmp_path) == files
    assert fake.stats.requests == 2  # make_log's only


_REFUSED = """
import sys
from routeledger import ModelSpec, ProviderConfig, Runtime, RuntimeConfig
from routeledger.events import SchemaVersionError

config = RuntimeConfig(providers=[ProviderConfig(
    name="a", kind="openai", base_url="http://127.0.0.1:9/v1", models=[ModelSpec(name="m")])])
try:
    Runtime.start(config, event_log=sys.argv[1], active_health_checks=False)
except SchemaVersionError as exc:
    kept = exc  # its traceback keeps the half-built runtime alive until the interpreter exits
    print("refused", flush=True)
"""


# --- processes ------------------------------------------------------------------------------

_APPENDER = """
import sys
from routeledger import (FailoverConfig, Message, ModelSpec, ProviderConfig, Request, Runtime,
                         RuntimeConfig)
from routeledger.testing import FakeProvider

db, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with FakeProvider() as fake:
    config = RuntimeConfig(providers=[ProviderConfig(
        name=name, kind="openai", base_url=fake.url + "/v1",
        models=[ModelSpec(name="fake-model")])])
    print("ready", flush=True)
    sys.stdin.readline()
    with Runtime.start(config, event_log=db, active_health_checks=False) as rt:
        for i in range(count):
            rt.complete(Request(model="fake-model", request_id=f"{name}-{i}", max_tokens=4,
                                messages=[Message(role="user", content="hi")]))
print("done", flush=True)
"""


def test_two_processes_appending_through_two_runtimes_get_gapless_positions(db: Path) -> None:
    """Two runtimes in two processes share one log: positions unique, gapless, nothing lost."""
    names, count = ["p", "q"], 25
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(db), name, str(count)],
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
    assert [child.returncode for child in children] == [0, 0]
    assert all(out.strip() == "done" for out in outputs)
    stored = read(db)
    assert_gapless(stored)
    assert len([s for s in stored if isinstance(s.event, ConfigurationApplied)]) == 2
    assert completed_ids(stored) == {f"{n}-{i}" for n in names for i in range(count)}
    with SQLiteStore(db, readonly=True) as store:
        for name in names:
            kinds = [type(s.event) for s in store.read_request(f"{name}-0")]
            assert kinds[0] is RequestReceived and kinds[-1] is RequestCompleted


_WORKER = """
import json, sys
from routeledger import (FailoverConfig, Message, ModelSpec, ProviderConfig, Request, Runtime,
                         RuntimeConfig)
from routeledger.testing import FakeProvider

db, flush_after = sys.argv[1], int(sys.argv[2])
fake = FakeProvider().start()
config = RuntimeConfig(providers=[ProviderConfig(
    name="a", kind="openai", base_url=fake.url + "/v1", models=[ModelSpec(name="fake-model")])])
rt = Runtime.start(config, event_log=db, active_health_checks=False)
i = 0
while True:
    rt.complete(Request(model="fake-model", request_id=f"r{i}", max_tokens=4,
                        messages=[Message(role="user", content="hi")]))
    i += 1
    if i == flush_after:
        rt.flush()
        print(json.dumps({"last": rt._store.last_position()}), flush=True)
    elif i == 3 * flush_after:
        print("busy", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_heavy_appends_loses_nothing_flushed(db: Path, fake: FakeProvider) -> None:
    """A runtime killed mid-stream keeps every flushed event; the file opens and appends after."""
    flush_after = 30
    child = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(db), str(flush_after)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        flushed = json.loads(child.stdout.readline())["last"]
        assert child.stdout.readline().strip() == "busy"  # appends going on: now kill it
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL

    with SQLiteStore(db, busy_timeout_s=10.0) as store:
        stored = list(store.read())
    assert_gapless(stored)
    assert len(stored) >= flushed
    assert {f"r{i}" for i in range(flush_after)} <= completed_ids(stored)
    with start(fake, db) as rt:
        after = rt.complete(request()).request_id
    again = read(db)
    assert_gapless(again)
    assert again[: len(stored)] == stored
    assert after in completed_ids(again)
