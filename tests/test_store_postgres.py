"""The PostgreSQL event store against a real server: what the shared contract does not cover.

Every test runs in a fresh schema of the server ``scripts/with-postgres.sh`` started (see
``pg_support``); without one they skip, and under CI they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_support import fresh_url, server_url, start_server, stop_server
from support import wait_for

from routeledger import Runtime, replay
from routeledger.events import (
    HealthProbed,
    SchemaVersionError,
    StoreCorrupted,
    StoreError,
    UnknownEventType,
)
from routeledger.store import PostgresStore, open_store

REPO = Path(__file__).resolve().parent.parent


def probe(i: int) -> HealthProbed:
    """Return a small event, different for each ``i``."""
    return HealthProbed(ts=float(i), provider=f"p{i % 3}", healthy=True, latency_ms=float(i))


@pytest.fixture
def url() -> Iterator[str]:
    """A URL whose tables live in a fresh, empty schema."""
    with fresh_url() as u:
        yield u


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    """An open PostgresStore on a fresh schema."""
    s = PostgresStore(url)
    yield s
    s.close()


def sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection and return its rows (if any)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


def terminate(url: str, store_pid: int) -> None:
    """Terminate the server backend ``store_pid`` (as an administrator would), and wait for it."""
    sql(url, "SELECT pg_terminate_backend(%s, 5000)", store_pid)


# --- opening, URLs and secrets ----------------------------------------------------------------


def test_open_store_dispatches_on_the_url_scheme(url: str, tmp_path: Path) -> None:
    """open_store opens PostgresStore for postgresql:// and postgres:// URLs, SQLite otherwise."""
    with open_store(url) as pg:
        assert isinstance(pg, PostgresStore)
    with open_store("postgres://" + url.removeprefix("postgresql://")) as pg:
        assert isinstance(pg, PostgresStore)
    with open_store(tmp_path / "x.sqlite") as lite:
        assert not isinstance(lite, PostgresStore)


def test_importing_routeledger_never_imports_psycopg() -> None:
    """psycopg is imported at the first PostgresStore, not by importing routeledger."""
    code = "import sys, routeledger, routeledger.store; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_missing_driver_is_a_store_error_naming_the_extra() -> None:
    """Without psycopg, opening a postgresql:// log says which extra to install."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["psycopg"] = None  # as if it were not installed
        from routeledger.store import open_store
        from routeledger.events import StoreError
        try:
            open_store("postgresql://u:hunter2@127.0.0.1:1/db")
        except StoreError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "routeledger[postgres]" in out.stdout
    assert "hunter2" not in out.stdout


def test_a_password_in_the_url_never_reaches_errors_or_repr() -> None:
    """An unreachable server's error, and the store's repr, show the URL's password masked."""
    server_url()  # needs the driver
    for url in (
        "postgresql://u:hunter2@127.0.0.1:1/db",
        "postgresql://u@127.0.0.1:1/db?password=hunter2",
    ):
        with pytest.raises(StoreError) as info:
            PostgresStore(url, connect_timeout_s=1)
        text = f"{info.value} {info.value.path} {info.value.__cause__!s:.0}"
        assert "hunter2" not in text
        assert "***" in text


def test_replay_and_the_cli_read_a_url_and_never_print_its_password(
    url: str, fake: Any, config_for: Any, req: Any
) -> None:
    """Live equals replay(url); `routeledger replay --db URL` prints the URL masked."""
    secret_url = url.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    cfg = config_for({"a": fake})
    with Runtime.start(cfg, event_log=secret_url) as rt:
        for _ in range(3):
            rt.complete(req())
        rt.flush()
        assert rt.get_metrics() == replay(secret_url).metrics
        assert "hunter2" not in str(rt.event_log_path)
    out = subprocess.run(
        [sys.executable, "-m", "routeledger", "replay", "--db", secret_url, "metrics"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "hunter2" not in out.stdout + out.stderr
    assert "postgres:***@" in out.stdout
    assert replay(url).metrics["a"].requests == 3


def test_a_readonly_store_needs_an_existing_log_and_never_writes(url: str) -> None:
    """readonly=True refuses a schema without the tables, and refuses appends."""
    with pytest.raises(StoreError, match="no event log"):
        PostgresStore(url, readonly=True)
    PostgresStore(url).close()
    with PostgresStore(url, readonly=True) as ro:
        assert ro.last_position() == 0
        with pytest.raises(StoreError, match="read-only"):
            ro.append([probe(1)])


def test_tables_of_a_newer_schema_version_are_refused(url: str) -> None:
    """A log whose head says a newer schema version is refused before anything is written."""
    PostgresStore(url).close()
    sql(url, "UPDATE routeledger_head SET version = version + 1")
    with pytest.raises(SchemaVersionError):
        PostgresStore(url)


# --- rows the contract suite cannot plant ----------------------------------------------------


def test_planted_unknown_and_corrupted_rows_behave_as_in_sqlite(
    store: PostgresStore, url: str
) -> None:
    """Rows planted by SQL: an unknown tag skips (counted) or raises; bad JSON raises always.

    The contract suite only appends through the store, so this plants two rows behind its
    back with INSERT (moving the head): position 2 holds ``{"type": "from.the.future"}`` (a
    tag this version does not know) and position 3 holds the text ``not json``.
    """
    store.append([probe(1)])
    sql(
        url,
        "INSERT INTO routeledger_events VALUES (2, 'from.the.future', 2, NULL, %s), "
        "(3, 'x', 3, NULL, 'not json')",
        '{"type": "from.the.future", "ts": 2.0}',
    )
    sql(url, "UPDATE routeledger_head SET last = 3")
    with pytest.raises(UnknownEventType) as unknown:
        list(store.read())
    assert unknown.value.position == 2
    with pytest.raises(StoreCorrupted) as corrupted:
        list(store.read(strict=False))
    assert corrupted.value.position == 3
    assert store.skipped_unknown == 1
    assert [s.position for s in store.read(limit=1, strict=False)] == [1]


def test_a_request_id_holding_a_nul_round_trips(store: PostgresStore) -> None:
    """PostgreSQL text holds no NUL; such a request id is still stored and found exactly."""
    from routeledger.events import RequestReceived

    odd = RequestReceived(ts=1.0, request_id="a\x00b", model="m")
    near = RequestReceived(ts=2.0, request_id="a\ufffdb", model="m")
    store.append([odd, near])
    assert [s.event for s in store.read_request("a\x00b")] == [odd]
    assert [s.event for s in store.read_request("a\ufffdb")] == [near]


# --- gapless, commit-ordered positions across processes --------------------------------------

_WRITER = textwrap.dedent(
    """
    import random, sys
    import psycopg
    from routeledger.events import HealthProbed
    from routeledger.store import PostgresStore
    from routeledger.store._postgres import _APPEND_SQL

    url, writer, batches, size = sys.argv[1], *map(int, sys.argv[2:5])
    rng = random.Random(writer)

    def hold():
        # Both kinds wait the same random moment between numbering their rows and
        # committing: that is where a commit order can differ from the numbering order.
        return rng.random() * 0.003

    class Slow(PostgresStore):
        def _call(self, conn, parameters):
            with conn.transaction():
                first, existed = conn.execute(_APPEND_SQL, parameters).fetchone()
                conn.execute("SELECT pg_sleep(%s)", (hold(),))
            return first, existed

    conn = psycopg.connect(url, autocommit=True)

    def naive(batch):
        # The control: an identity column, numbered at insert, visible at commit.
        with conn.transaction():
            conn.cursor().executemany("INSERT INTO naive DEFAULT VALUES", [() for _ in batch])
            conn.execute("SELECT pg_sleep(%s)", (hold(),))

    events = [
        HealthProbed(ts=float(i), provider=f"w{writer}", healthy=True, latency_ms=1.0)
        for i in range(size)
    ]
    for append in (naive, Slow(url).append):
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(batches):
            append(events)
    """
)


def test_a_tailer_never_skips_events_of_four_writer_processes(url: str) -> None:
    """With 4 writers, a tailer reading by position sees every event; a naive store skips some.

    The same 4 processes first write through the control, a plain identity column, then
    through PostgresStore, the same batches with the same random pause before each commit.
    With the control a transaction numbered earlier commits later, and the tailer, already
    past its numbers, never reads its rows.
    """
    import psycopg

    writers, batches, size = 4, 10, 10
    total = writers * batches * size
    sql(url, "CREATE TABLE naive (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY)")
    store = PostgresStore(url)
    conn = psycopg.connect(url, autocommit=True)
    query = "SELECT position FROM naive WHERE position > %s ORDER BY 1"
    tailers: list[Callable[[int], list[int]]] = [
        lambda after: [r[0] for r in conn.execute(query, (after,)).fetchall()],
        lambda after: [s.position for s in store.read(after + 1)],
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, str(w), str(batches), str(size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(writers)
    ]
    tailed: list[int] = []
    try:
        for read_after in tailers:
            for child in children:
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            # A tailer as a follower is: read what is after the last position seen, again.
            seen: list[int] = []
            last = 0
            deadline = time.monotonic() + 30
            while last < total:
                got = read_after(last)
                seen += got
                last = max([last, *got])
                assert time.monotonic() < deadline, f"tailed up to {last} of {total}"
            tailed.append(len(seen))
    finally:
        for child in children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.close()
            child.wait(timeout=30)
            child.stdout.close()
        conn.close()
        store.close()
    assert all(child.returncode == 0 for child in children)
    naive, ours = tailed
    assert naive < total, "the naive control should have skipped events"
    print(f"the naive control's tailer skipped {total - naive} of {total}")
    assert ours == total
    with PostgresStore(url) as check:
        assert [s.position for s in check.read()] == list(range(1, total + 1))


# --- a batch is never stored twice -----------------------------------------------------------


class DropsTheAnswer(PostgresStore):
    """Loses its connection after the commit of the next append, before reading the answer."""

    drops = 1

    def _acknowledge(self, writer: Any, first: int, existed: bool) -> tuple[int, bool]:
        if self.drops:
            self.drops -= 1
            terminate(self._dsn, writer.info.backend_pid)
            writer.execute("SELECT 1")  # the connection is gone: this raises
        return super()._acknowledge(writer, first, existed)


def test_a_batch_whose_answer_was_lost_is_stored_once(url: str) -> None:
    """The connection dies between commit and answer: the retry returns the stored positions."""
    with DropsTheAnswer(url) as store:
        store.append([probe(0)])
        store.drops = 1
        assert store.append([probe(1), probe(2), probe(3)]) == [2, 3, 4]
        assert store.last_position() == 4
        assert store.append([probe(4)]) == [5]
    assert sql(url, "SELECT count(*) FROM routeledger_events") == [(5,)]


def test_a_batch_in_doubt_resent_after_reconnect_is_stored_once(url: str) -> None:
    """The answer is lost and the server stays away: the resent events keep their positions.

    The log writer resends its buffer from the head after a failure (perhaps with more events
    after it): the events that were committed get their positions back, the rest are new.
    """

    class AwayAfterCommit(DropsTheAnswer):
        away = False

        def _connect(self, *, readonly: bool = False) -> Any:
            if self.away:
                self.away = False
                import psycopg

                raise psycopg.OperationalError("connection refused (simulated)")
            return super()._connect(readonly=readonly)

        def _acknowledge(self, writer: Any, first: int, existed: bool) -> tuple[int, bool]:
            self.away = bool(self.drops)
            return super()._acknowledge(writer, first, existed)

    with AwayAfterCommit(url) as store:
        batch = [probe(1), probe(2)]
        with pytest.raises(StoreError, match="unreachable"):
            store.append(batch)
        assert store.last_position() == 2  # it was committed
        assert store.append([*batch, probe(3)]) == [1, 2, 3]
        assert [s.event for s in store.read()] == [*batch, probe(3)]


def test_an_explicit_batch_id_is_stored_once(store: PostgresStore) -> None:
    """append(batch_id=...) twice stores the batch once and returns the same positions."""
    assert store.append([probe(1), probe(2)], batch_id="b-1") == [1, 2]
    assert store.append([probe(1), probe(2)], batch_id="b-1") == [1, 2]
    with pytest.raises(StoreError, match="stored already"):
        store.append([probe(1)], batch_id="b-1")
    assert store.last_position() == 2


# --- recovery ---------------------------------------------------------------------------------


def test_a_terminated_connection_is_recovered_by_the_next_call(
    store: PostgresStore, url: str
) -> None:
    """pg_terminate_backend on every session of the store: the next append and read reconnect."""
    store.append([probe(1)])
    assert store.last_position() == 1
    sql(
        url,
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND datname = current_database()",
    )
    assert store.append([probe(2)]) == [2]
    assert [s.position for s in store.read()] == [1, 2]


def test_a_server_restart_mid_run_loses_nothing_acknowledged(
    url: str, fake: Any, config_for: Any, req: Any
) -> None:
    """The server stops while requests run: events wait in the buffer and are written after."""
    cfg = config_for({"a": fake})
    with Runtime.start(cfg, event_log=url) as rt:
        rt.complete(req())
        rt.flush()
        stop_server()
        try:
            for _ in range(3):
                rt.complete(req())  # served while the log is away
            with pytest.raises(StoreError):
                rt.flush()
        finally:
            start_server()
        rt.flush()
        assert rt.store_error is None
        assert rt.get_metrics()["a"].requests == 4
        assert rt.get_metrics() == replay(url).metrics


def test_events_unwritten_at_close_with_the_server_down_are_a_gap_at_the_next_start(
    url: str, fake: Any, config_for: Any, req: Any, tmp_path: Path
) -> None:
    """Closed while the server is down: the lost events are kept as a gap in the local state
    dir, which the next start on that URL records in the log, once."""
    from routeledger.events import EventsDropped

    state = tmp_path / "state"  # ROUTELEDGER_GAPS_DIR (tests/conftest.py)
    cfg = config_for({"a": fake})
    rt = Runtime.start(cfg, event_log=url)
    try:
        rt.complete(req())
        rt.flush()
        stop_server()
        rt.complete(req())  # its events wait in the buffer
    finally:
        try:
            report = rt.close(grace_s=0.2)
        finally:
            start_server()
    assert report.unwritten_events > 0
    assert report.gap_kept
    [kept] = list(state.iterdir())
    assert kept.name.startswith("pg-") and kept.name.endswith("-gaps.json")
    with Runtime.start(cfg, event_log=url) as again:
        again.flush()
    assert not list(state.iterdir())  # recorded, then forgotten
    gaps = [e for _, e in replay_events(url) if isinstance(e, EventsDropped)]
    assert [g.count for g in gaps] == [report.unwritten_events]
    assert "not written before the runtime closed" in gaps[0].reason


def test_a_url_logs_gaps_are_named_by_its_url_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two passwords, one gaps file; ROUTELEDGER_GAPS_DIR, else XDG_STATE_HOME, places it."""
    from types import SimpleNamespace

    from routeledger.store import gap_base
    from routeledger.store._pgerrors import shown_url

    def base(url: str) -> str | None:
        return gap_base(SimpleNamespace(url=shown_url(url)))

    one, two = (f"postgresql://u:{pw}@127.0.0.1:5/db" for pw in ("s3cret-one", "s3cret-two"))
    assert base(one) == base(two) != base("postgresql://u:x@127.0.0.1:5/other")
    assert base(one) == str(tmp_path / "state" / Path(str(base(one))).name)
    assert "s3cret" not in str(base(one))
    monkeypatch.delenv("ROUTELEDGER_GAPS_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert str(base(one)).startswith(str(tmp_path / "xdg" / "routeledger" / "pg-"))
    assert gap_base(SimpleNamespace()) is None  # a log in memory keeps no gaps


def replay_events(url: str) -> list[tuple[int, Any]]:
    """Return every (position, event) of the log at ``url``."""
    s = PostgresStore(url, readonly=True)
    try:
        return list(s.read())
    finally:
        s.close()


# --- following the log -----------------------------------------------------------------------


def test_wait_for_commit_wakes_on_another_process_append(store: PostgresStore, url: str) -> None:
    """wait_for_commit returns once another store commits past the position, woken by NOTIFY."""
    assert store.wait_for_commit(0, 0.05) == 0  # times out on an empty log
    other = PostgresStore(url)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(store.wait_for_commit(0, 10.0)))
    waiter.start()
    try:
        other.append([probe(1), probe(2)])
        waiter.join(timeout=10)
    finally:
        other.close()
    assert got == [2]


def test_wait_for_commit_polls_when_notifications_are_unavailable(url: str) -> None:
    """Without a LISTEN connection, wait_for_commit still returns the new head by polling."""

    class Deaf(PostgresStore):
        def _listening(self) -> Any:
            return None

    with Deaf(url) as store, PostgresStore(url) as other:
        other.append([probe(1)])
        assert store.wait_for_commit(0, 5.0) == 1


# --- strict concurrency -----------------------------------------------------------------------


def test_slots_are_exact_across_stores_and_come_back_on_release(url: str) -> None:
    """Two stores (two daemons) share `limit` slots of a provider; a release frees one."""
    with PostgresStore(url) as a, PostgresStore(url) as b:
        first = a.try_acquire_slot("openai", 2)
        second = b.try_acquire_slot("openai", 2)
        assert first is not None and second is not None and first.number != second.number
        assert a.try_acquire_slot("openai", 2) is None
        assert b.try_acquire_slot("openai", 2) is None
        assert a.try_acquire_slot("anthropic", 2) is not None  # another provider's slots
        a.release_slot(first)
        again = b.try_acquire_slot("openai", 2)
        assert again is not None and again.number == first.number


def test_a_closed_store_gives_its_slots_back(url: str) -> None:
    """A daemon that goes away (its session ends) releases its slots at the server."""
    with PostgresStore(url) as b:
        a = PostgresStore(url)
        assert a.try_acquire_slot("p", 1) is not None
        assert b.try_acquire_slot("p", 1) is None
        a.close()
        # The server frees a session's locks as its backend exits, just after the close.
        wait_for(lambda: b.try_acquire_slot("p", 1) is not None, "the slot to come back")


# --- snapshots --------------------------------------------------------------------------------


def test_snapshots_on_postgresql_start_a_runtime_with_the_figures_of_a_full_replay(
    url: str, fake: Any, config_for: Any, req: Any
) -> None:
    """The writer stores snapshots in PostgreSQL; a restart loads one, and it is checked."""
    from routeledger import LogConfig
    from routeledger.store import load_snapshot, read_snapshots

    cfg = config_for({"a": fake}, log=LogConfig(snapshot_every=10))
    with Runtime.start(cfg, event_log=url) as rt:
        for _ in range(6):
            rt.complete(req())
    with PostgresStore(url, readonly=True) as store:
        rows = read_snapshots(store)
        assert rows and isinstance(rows[0].state, bytes)
        loaded = load_snapshot(store)
        assert loaded is not None and loaded.position == rows[0].position
    with Runtime.start(cfg, event_log=url) as rt:
        assert rt.get_metrics() == replay(url, snapshots=False).metrics
        assert rt.get_metrics()["a"].requests == 6
    # A snapshot whose anchor no longer matches the log is ignored, never trusted.
    sql(url, "UPDATE routeledger_snapshots SET anchor = 'x'")
    with PostgresStore(url, readonly=True) as store:
        assert load_snapshot(store) is None
    assert replay(url).metrics == replay(url, snapshots=False).metrics


def test_a_strict_budget_holds_its_limit_across_daemons(url: str) -> None:
    """Two daemons' budgets of one provider, limit 2 each: 2 requests in flight in total."""
    from routeledger.actors._budget import Budget

    with PostgresStore(url) as one, PostgresStore(url) as two:
        a = Budget(2, shared=one, provider="p")
        b = Budget(2, shared=two, provider="p")
        assert a.try_acquire() and b.try_acquire()
        assert not a.try_acquire() and not b.try_acquire()
        assert a.in_flight == 1 and b.in_flight == 1  # a refused slot is given back locally
        a.release()
        assert b.try_acquire()
        assert not a.try_acquire()


def test_a_strict_budget_falls_back_to_its_local_limit_when_the_database_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Slots that cannot be had (StoreError) leave the local limit in force, said once."""
    from routeledger.actors._budget import Budget

    class Away:
        def try_acquire_slot(self, provider: str, limit: int) -> None:
            raise StoreError("unreachable")

        def release_slot(self, slot: object) -> None:
            raise AssertionError("nothing was taken")

    budget = Budget(2, shared=Away(), provider="p")
    with caplog.at_level("WARNING", logger="routeledger"):
        assert budget.try_acquire() and budget.try_acquire()
        assert not budget.try_acquire()
        budget.release()
    assert sum("shared slots unavailable" in r.message for r in caplog.records) == 1


def test_strict_shared_concurrency_is_refused_without_postgresql(tmp_path: Path) -> None:
    """shared_concurrency = "strict" with a SQLite file or in memory is a ConfigError."""
    from types import SimpleNamespace

    from routeledger import ConfigError
    from routeledger.actors._budget import check_strict

    strict = SimpleNamespace(shared_concurrency="strict")
    for log in (tmp_path / "x.sqlite", None):
        with pytest.raises(ConfigError, match="strict"):
            check_strict(strict, log)
    check_strict(strict, "postgresql://u@127.0.0.1/db")
    check_strict(SimpleNamespace(shared_concurrency="lease"), None)


def test_slots_of_a_terminated_session_are_forgotten_and_the_next_take_reconnects(
    url: str,
) -> None:
    """The slot session is terminated: its slots are free at the server and here alike."""
    with PostgresStore(url) as a, PostgresStore(url) as b:
        held = a.try_acquire_slot("p", 1)
        assert held is not None
        assert a._slots_conn is not None
        terminate(url, a._slots_conn.info.backend_pid)
        wait_for(lambda: b.try_acquire_slot("p", 1) is not None, "the server to release it")
        assert a.try_acquire_slot("p", 2) is not None  # a reconnects, holding nothing
        a.release_slot(held)  # a no-op: that session is gone


def test_strict_mode_holds_max_concurrency_in_total_at_the_provider(
    url: str, config_for: Any, req: Any
) -> None:
    """Two runtimes (two daemons' sessions), max_concurrency=2: at most 2 at the provider.

    The control, the same load with ``shared_concurrency="local"`` (each runtime alone),
    goes above 2.
    """
    from concurrent.futures import ThreadPoolExecutor

    from routeledger import FailoverConfig
    from routeledger.testing import Behaviour, FakeProvider

    def peak(strict: bool) -> int:
        with FakeProvider(Behaviour(latency_ms=40), seed=0) as fake:
            cfg = config_for(
                {"a": fake},
                per_provider={"a": {"max_concurrency": 2}},
                failover=FailoverConfig(queue_timeout_s=5.0),
                shared_concurrency="strict" if strict else "local",
            )
            with (
                Runtime.start(cfg, event_log=url, active_health_checks=False) as one,
                Runtime.start(cfg, event_log=url, active_health_checks=False) as two,
                ThreadPoolExecutor(8) as pool,
            ):
                calls = [pool.submit((one, two)[i % 2].complete, req()) for i in range(16)]
                # Requests wait for a slot (the queue), in strict mode one another daemon frees.
                assert [call.exception(timeout=30) for call in calls] == [None] * len(calls)
            return fake.stats.max_concurrent

    assert peak(strict=False) > 2
    assert peak(strict=True) <= 2


def test_a_runtime_recovers_from_its_connections_being_terminated(
    url: str, fake: Any, config_for: Any, req: Any
) -> None:
    """Every session of a running runtime is terminated: it goes on, and live equals replay."""
    with Runtime.start(config_for({"a": fake}), event_log=url) as rt:
        rt.complete(req())
        rt.flush()
        sql(
            url,
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()",
        )
        for _ in range(2):
            rt.complete(req())
        rt.flush()
        assert rt.store_error is None
        assert rt.get_metrics() == replay(url).metrics
        assert rt.get_metrics()["a"].requests == 3


def test_tail_follows_a_postgresql_log_as_it_grows(store: PostgresStore, url: str) -> None:
    """`routeledger tail --db URL` prints the log, then each event another process appends."""
    store.append([probe(1)])
    tail = subprocess.Popen(
        [sys.executable, "-m", "routeledger", "tail", "--db", url, "--from", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(tail.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: len(lines) >= 1, "the first line")
        store.append([probe(2)])
        wait_for(lambda: len(lines) >= 2, "the appended event's line")
    finally:
        tail.terminate()
        tail.wait(timeout=10)
        reader.join(timeout=10)
        assert tail.stdout is not None
        tail.stdout.close()
    assert lines[0].split()[0] == "1" and lines[1].split()[0] == "2"


def test_the_commands_added_since_read_a_postgresql_log_without_showing_its_password(
    url: str, fake: Any, config_for: Any, req: Any, tmp_path: Path
) -> None:
    """export, report and scenario read a URL's log; nothing they write shows its password."""
    secret_url = url.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    with Runtime.start(config_for({"a": fake}), event_log=secret_url) as rt:
        for _ in range(2):
            rt.complete(req())
    commands = {
        "export": ["export", "--db", secret_url, "--format", "jsonl"],
        "report": ["report", "--db", secret_url, "-o", str(tmp_path / "r.html")],
        "scenario": ["scenario", "--db", secret_url, "-o", str(tmp_path / "s.toml")],
    }
    for name, args in commands.items():
        out = subprocess.run(
            [sys.executable, "-m", "routeledger", *args], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, (name, out.stderr)
        assert "hunter2" not in out.stdout + out.stderr, name
    assert len(replay(url).metrics) == 1
    for written in ("r.html", "s.toml"):
        assert "hunter2" not in (tmp_path / written).read_text(), written
