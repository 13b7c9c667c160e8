"""The PostgreSQL event store: one log shared by several daemons, on several machines.

psycopg 3 is an optional extra (``pip install 'routeledger[postgres]'``) imported lazily, at
the first :class:`PostgresStore`: importing routeledger never imports it.

Positions are gapless and in commit order with concurrent writers in any number of
processes. A plain sequence (or identity column) is not enough: numbers are handed out at
insert and become visible at commit, in another order, so a tailer reading "everything after
the last position I saw" skips the rows of a transaction that commits after a later one.
Here an append is one server-side call (``routeledger_append``, one round trip, one
transaction) that locks the one-row head table ``FOR UPDATE``, numbers its rows from the
head's ``last``, inserts them, moves the head and commits: the next writer waits for the
lock, so positions become visible strictly in order, and a reader that bounds its read by
the head it saw first reads a stable prefix of the log.

A batch is never stored twice. Each append carries a batch id, kept in ``routeledger_batches``
in the same transaction. When the connection drops during the call, the outcome is unknown
(the commit may have happened and only its answer been lost): the store reconnects, looks
the batch id up, and either returns the positions already stored or appends it now. When even
the reconnect fails, the batch is remembered as in doubt: the next append looks it up first,
and the events a retry resends that are already stored get their stored positions back
instead of new rows (the log writer resends its buffer from the head, in order).

The same call notifies ``routeledger_<schema>`` with the new head, so that a follower waits
with :meth:`PostgresStore.wait_for_commit` instead of polling (polling is the fallback).

Tables (in the connection's schema, ``search_path``; a URL may set it with
``?options=-csearch_path%3Dname``)::

    routeledger_head     (id boolean PRIMARY KEY, last bigint, version int)   -- one row
    routeledger_events   (position bigint PRIMARY KEY, type text, ts float8,
                          request_id text, data text)                          -- the log
    routeledger_batches  (batch_id text PRIMARY KEY, first bigint, count int)
    routeledger_snapshots (position bigint PRIMARY KEY, format int, code text,
                          anchor text, checksum text, state bytea)

Connections: one writer connection serves appends (the head lock serialises them anyway);
reads use a few idle connections, one per running iterator, and page by position below the
head they saw at their first step (no long transaction is held). Every connection is a
session connection: LISTEN and advisory locks (strict concurrency) do not work through a
pooler in transaction mode.

This module is over 500 lines because one set of connections and locks serves the log, its
snapshots and the strict-concurrency slots; split, each part would reach into the others'.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from routeledger.events import SchemaVersionError, StoreError
from routeledger.store._base import EventStore, StoredEvent, check_limit
from routeledger.store._mapper import EventRow, decode_rows, events_to_rows
from routeledger.store._pgerrors import is_connection_lost, shown_url, translate, url_secrets

if TYPE_CHECKING:
    import psycopg

    from routeledger.events import Event

__all__ = ["PG_SCHEMA_VERSION", "PostgresStore", "Slot", "is_postgres_url"]

PG_SCHEMA_VERSION = 1
"""The version of the PostgreSQL tables this routeledger writes."""

_SCHEMES = ("postgresql://", "postgres://")
_FETCH_SIZE = 1000
_MAX_IDLE_READERS = 4
_POLL_S = 0.05
"""How often :meth:`PostgresStore.wait_for_commit` polls when notifications are unavailable."""
_DDL_LOCK = 0x726C6462  # "rldb": serialises schema creation across processes
_SLOT_SPACE = "routeledger-slot:"

_DDL = (
    """CREATE TABLE IF NOT EXISTS routeledger_head (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        last bigint NOT NULL,
        version integer NOT NULL)""",
    f"""INSERT INTO routeledger_head (id, last, version) VALUES (true, 0, {PG_SCHEMA_VERSION})
        ON CONFLICT (id) DO NOTHING""",
    """CREATE TABLE IF NOT EXISTS routeledger_events (
        position   bigint PRIMARY KEY,
        type       text NOT NULL,
        ts         double precision NOT NULL,
        request_id text,
        data       text NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS routeledger_events_request_id ON routeledger_events (request_id)",
    """CREATE TABLE IF NOT EXISTS routeledger_batches (
        batch_id text PRIMARY KEY,
        first    bigint NOT NULL,
        count    integer NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS routeledger_snapshots (
        position bigint PRIMARY KEY,
        format   integer NOT NULL,
        code     text NOT NULL,
        anchor   text NOT NULL,
        checksum text NOT NULL,
        state    bytea NOT NULL)""",
    # One call, one transaction per batch: the head's row lock orders commits (see above).
    """CREATE OR REPLACE FUNCTION routeledger_append(
        p_batch text, p_types text[], p_ts double precision[], p_request_ids text[],
        p_data text[], OUT o_first bigint, OUT o_existed boolean)
    LANGUAGE plpgsql AS $fn$
    DECLARE
        v_last bigint;
        v_count integer := coalesce(cardinality(p_data), 0);
    BEGIN
        SELECT last INTO v_last FROM routeledger_head WHERE id FOR UPDATE;
        -- Under the lock: a retry of a batch whose commit happened gets its positions back.
        SELECT first INTO o_first FROM routeledger_batches WHERE batch_id = p_batch;
        IF FOUND THEN
            o_existed := true;
            RETURN;
        END IF;
        INSERT INTO routeledger_events (position, type, ts, request_id, data)
            SELECT v_last + i, p_types[i], p_ts[i], p_request_ids[i], p_data[i]
            FROM generate_subscripts(p_data, 1) AS i;
        UPDATE routeledger_head SET last = v_last + v_count WHERE id;
        INSERT INTO routeledger_batches (batch_id, first, count)
            VALUES (p_batch, v_last + 1, v_count);
        PERFORM pg_notify('routeledger_' || current_schema(), (v_last + v_count)::text);
        o_first := v_last + 1;
        o_existed := false;
    END
    $fn$""",
    # Strict concurrency: the first free slot of ``p_limit``, skipping the ones this session
    # holds already (advisory locks are re-entrant within one session).
    """CREATE OR REPLACE FUNCTION routeledger_try_slot(
        p_key integer, p_limit integer, p_held integer[]) RETURNS integer
    LANGUAGE plpgsql AS $fn$
    BEGIN
        FOR i IN 0 .. p_limit - 1 LOOP
            IF NOT (i = ANY (p_held)) AND pg_try_advisory_lock(p_key, i) THEN
                RETURN i;
            END IF;
        END LOOP;
        RETURN NULL;
    END
    $fn$""",
)

_APPEND_SQL = (
    "SELECT o_first, o_existed FROM routeledger_append("
    "%s, %s::text[], %s::float8[], %s::text[], %s::text[])"
)
_LAST_SQL = "SELECT last FROM routeledger_head"
_BATCH_SQL = "SELECT first, count FROM routeledger_batches WHERE batch_id = %s"
_PAGE_SQL = (
    "SELECT position, data FROM routeledger_events WHERE position >= %s AND position <= %s "
    "ORDER BY position LIMIT %s"
)
_REQUEST_SQL = (
    "SELECT position, data FROM routeledger_events WHERE request_id = %s AND position <= %s "
    "ORDER BY position"
)
_EVENT_DATA_SQL = "SELECT data FROM routeledger_events WHERE position = %s"
_SNAPSHOT_PUT_SQL = (
    "INSERT INTO routeledger_snapshots (position, format, code, anchor, checksum, state) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (position) DO UPDATE SET format = "
    "EXCLUDED.format, code = EXCLUDED.code, anchor = EXCLUDED.anchor, "
    "checksum = EXCLUDED.checksum, state = EXCLUDED.state"
)
_SNAPSHOT_PRUNE_SQL = (
    "DELETE FROM routeledger_snapshots WHERE position NOT IN (SELECT position FROM "
    "routeledger_snapshots WHERE position <= %s ORDER BY position DESC LIMIT %s)"
)
_SNAPSHOT_ROWS_SQL = (
    "SELECT position, format, code, anchor, checksum, state FROM routeledger_snapshots "
    "ORDER BY position DESC"
)


def is_postgres_url(target: object) -> bool:
    """Return whether ``target`` is a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(target, str) and target.startswith(_SCHEMES)


def _driver() -> Any:
    """Import psycopg, or say which extra provides it."""
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(
            "a postgresql:// event log needs psycopg 3: pip install 'routeledger[postgres]'"
        ) from exc
    return psycopg


def _index_value(request_id: str | None) -> str | None:
    # PostgreSQL text holds no NUL; the column is only an index (``data`` keeps the exact
    # JSON), so a NUL is replaced there and read_request filters on the decoded id.
    return None if request_id is None else request_id.replace("\x00", "\ufffd")


class Slot(NamedTuple):
    """One strict-concurrency slot held by this store's session (an advisory lock)."""

    provider: str
    number: int
    """Which of the provider's ``limit`` slots (0-based)."""


class _InDoubt(NamedTuple):
    batch_id: str
    rows: list[EventRow]


class PostgresStore(EventStore):
    """Keep the event log in PostgreSQL, shared by every process that opens the same URL.

    Args:
        url: ``postgresql://user[:password]@host[:port]/db[?options]`` (libpq's form;
            ``postgres://`` too). The password is never shown (see :attr:`url`).
        readonly: never write (``replay``, ``tail``): the tables must exist; ``append``
            raises ``StoreError``.
        connect_timeout_s: how long a connection attempt may take.

    Raises:
        StoreError: psycopg is missing, the server cannot be reached, or the database holds
            no event log (``readonly``).
        SchemaVersionError: the tables were written by a newer routeledger.
    """

    def __init__(self, url: str, *, readonly: bool = False, connect_timeout_s: float = 5.0) -> None:
        if not is_postgres_url(url):
            raise ValueError("PostgresStore needs a postgresql:// URL")
        self._psycopg = _driver()
        self._dsn = url
        self._secrets = url_secrets(url)
        self.url = shown_url(url)
        """The URL as shown in messages: every password masked."""
        self.readonly = readonly
        self.skipped_unknown = 0
        self._connect_timeout = max(1, round(connect_timeout_s))
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._slot_lock = threading.Lock()
        self._listen_lock = threading.Lock()
        self._writer: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None
        self._slots_conn: psycopg.Connection[Any] | None = None
        self._held: set[Slot] = set()
        self._idle: list[psycopg.Connection[Any]] = []
        self._closed = False
        self._in_doubt: _InDoubt | None = None
        self._stored_unacknowledged: list[tuple[EventRow, int]] = []
        self._channel = ""
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        mode = ", readonly=True" if self.readonly else ""
        return f"PostgresStore({self.url!r}{mode})"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the contract -----------------------------------------------------------------------

    def append(self, events: Sequence[Event], *, batch_id: str | None = None) -> list[int]:
        """Append a batch atomically and return its gapless positions.

        Args:
            events: the batch.
            batch_id: the batch's idempotency key (default: a new one). An append whose
                ``batch_id`` is already stored writes nothing and returns the positions
                stored then.
        """
        rows = events_to_rows(events)
        with self._write_lock:
            self._check_writable()
            if not rows:
                return []
            done = self._resolve_in_doubt(rows)
            rest = rows[len(done) :]
            if not rest:
                return done
            return done + self._append_rows(rest, batch_id or uuid.uuid4().hex)

    def read(
        self, from_position: int = 1, *, limit: int | None = None, strict: bool = True
    ) -> Iterator[StoredEvent]:
        """Yield stored events in position order, starting at ``from_position``."""
        check_limit(limit)
        self._check_open()
        return decode_rows(
            self._pages(max(from_position, 1), limit),
            limit=limit,
            strict=strict,
            on_skip=self._count_skip,
        )

    def read_request(self, request_id: str, *, strict: bool = True) -> Iterator[StoredEvent]:
        """Yield, in position order, the events of one request (uses the request_id index)."""
        self._check_open()
        events = decode_rows(
            self._request_rows(request_id), limit=None, strict=strict, on_skip=self._count_skip
        )
        return (s for s in events if getattr(s.event, "request_id", None) == request_id)

    def last_position(self) -> int:
        """Return the last committed position, 0 when empty."""
        rows = self._query("last_position", _LAST_SQL)
        return int(rows[0][0]) if rows else 0

    def wait_for_commit(self, after_position: int, timeout_s: float) -> int:
        """Block until the last committed position is above ``after_position``, or timeout.

        Woken by the NOTIFY each append sends; when notifications are unavailable (the
        listening connection fails), polls every 50 ms instead.

        Returns:
            :meth:`last_position` when it returns.
        """
        deadline = time.monotonic() + max(timeout_s, 0.0)
        if not self._listen_lock.acquire(timeout=max(timeout_s, 0.0)):
            return self.last_position()
        try:
            while True:
                listener = self._listening()
                last = self.last_position()  # after LISTEN: no notification can be missed
                left = deadline - time.monotonic()
                if last > after_position or left <= 0:
                    return last
                if listener is None:
                    time.sleep(min(_POLL_S, left))
                    continue
                try:
                    for _ in listener.notifies(timeout=left, stop_after=1):
                        pass
                except self._psycopg.Error:
                    self._drop_listener()
        finally:
            self._listen_lock.release()

    def close(self) -> None:
        """Close every connection (releasing any slot held); later calls raise ``StoreError``."""
        with self._write_lock, self._lock:
            self._closed = True
            connections = [*self._idle, self._writer, self._listener, self._slots_conn]
            self._idle.clear()
            self._writer = self._listener = self._slots_conn = None
            self._held.clear()
        for conn in connections:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    # --- snapshots (see ``_snapshots``, which checks and builds the rows) -----------------------

    def put_snapshot(
        self, position: int, row: Callable[[object], tuple[object, ...]], *, keep: int
    ) -> bool:
        """Store the snapshot row ``row(data of the event at position)``; keep the newest ``keep``.

        One transaction on the writer connection: nothing is stored when the log holds no
        event at ``position`` (the fold ran ahead of it). Returns whether a row was stored.

        Raises:
            StoreError: the write failed; the table is as it was.
        """
        with self._write_lock:
            self._check_writable()
            try:
                writer = self._writer_connection()
                with writer.transaction():
                    found = writer.execute(_EVENT_DATA_SQL, (position,)).fetchone()
                    if found is None:
                        return False
                    writer.execute(_SNAPSHOT_PUT_SQL, row(found[0]))
                    writer.execute(_SNAPSHOT_PRUNE_SQL, (position, keep))
            except self._psycopg.Error as exc:
                self._drop_writer()
                raise self._translate(exc, f"snapshot at {position}") from exc
        return True

    def snapshot_rows(self) -> list[tuple[Any, ...]]:
        """Return the stored snapshot rows, newest first, unchecked."""
        return self._query("read snapshots", _SNAPSHOT_ROWS_SQL)

    def event_data(self, position: int) -> object | None:
        """Return the stored data (JSON text) of the event at ``position``, or ``None``."""
        rows = self._query("read an event", _EVENT_DATA_SQL, (position,))
        return rows[0][0] if rows else None

    # --- strict concurrency -----------------------------------------------------------------

    def try_acquire_slot(self, provider: str, limit: int) -> Slot | None:
        """Take one of ``limit`` slots of ``provider`` across every daemon, or ``None``.

        A slot is a session advisory lock on ``(hash of provider, i)``: exact across
        processes, one round trip. A lost connection releases its slots at the server; the
        store then forgets them too (their releases become no-ops).

        Raises:
            StoreError: the server cannot be reached (the caller decides: refuse or go local).
        """
        with self._slot_lock:
            self._check_open()
            for attempt in (1, 2):
                held = [s.number for s in self._held if s.provider == provider]
                try:
                    conn = self._slot_connection()
                    row = conn.execute(
                        "SELECT routeledger_try_slot(hashtext(%s), %s, %s::int[])",
                        (_SLOT_SPACE + provider, limit, held),
                    ).fetchone()
                    break
                except self._psycopg.Error as exc:
                    # The session is gone, and every slot it held with it: start a new one.
                    self._drop_slots()
                    if attempt == 1 and is_connection_lost(exc):
                        continue
                    raise self._translate(exc, "try_acquire_slot") from exc
            if row is None or row[0] is None:
                return None
            slot = Slot(provider, int(row[0]))
            self._held.add(slot)
            return slot

    def release_slot(self, slot: Slot) -> None:
        """Give ``slot`` back; never raises (a lost session has released it already)."""
        with self._slot_lock:
            if slot not in self._held:
                return
            self._held.discard(slot)
            conn = self._slots_conn
            if conn is None:
                return
            try:
                conn.execute(
                    "SELECT pg_advisory_unlock(hashtext(%s), %s)",
                    (_SLOT_SPACE + slot.provider, slot.number),
                )
            except self._psycopg.Error:
                self._drop_slots()

    # --- opening ----------------------------------------------------------------------------

    def _connect(self, *, readonly: bool = False) -> psycopg.Connection[Any]:
        options: dict[str, Any] = {"autocommit": True, "connect_timeout": self._connect_timeout}
        conn = self._psycopg.connect(self._dsn, **options)
        if readonly:
            conn.execute("SET default_transaction_read_only = on")
        return conn  # type: ignore[no-any-return]

    def _open(self) -> None:
        try:
            conn = self._connect(readonly=self.readonly)
        except self._psycopg.Error as exc:
            raise self._translate(exc, "open") from exc
        try:
            if not self.readonly:
                self._create_schema(conn)
            self._check_schema(conn)
            (schema,) = conn.execute("SELECT current_schema()").fetchone() or ("",)
            self._channel = f"routeledger_{schema}"
        except self._psycopg.Error as exc:
            conn.close()
            raise self._translate(exc, "open") from exc
        except BaseException:
            conn.close()
            raise
        if self.readonly:
            self._idle.append(conn)
        else:
            self._writer = conn

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            # Two processes creating the tables at once would collide in the catalogue.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            exists = conn.execute("SELECT to_regclass('routeledger_head') IS NOT NULL").fetchone()
            if exists and exists[0]:
                return
            for statement in _DDL:
                conn.execute(statement)

    def _check_schema(self, conn: psycopg.Connection[Any]) -> None:
        found = conn.execute("SELECT to_regclass('routeledger_head') IS NOT NULL").fetchone()
        if not found or not found[0]:
            raise StoreError(f"no event log at {self.url} (no routeledger tables)", path=self.url)
        row = conn.execute("SELECT version FROM routeledger_head").fetchone()
        version = int(row[0]) if row else 0
        if version > PG_SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the event log at {self.url} has schema version {version}, written by a "
                f"newer routeledger (this one writes {PG_SCHEMA_VERSION}); upgrade to use it",
                path=self.url,
            )

    # --- appending --------------------------------------------------------------------------

    def _append_rows(self, rows: list[EventRow], batch_id: str) -> list[int]:
        parameters = (
            batch_id,
            [r.type for r in rows],
            [r.ts for r in rows],
            [_index_value(r.request_id) for r in rows],
            [r.data for r in rows],
        )
        action = f"append of {len(rows)} event(s)"
        for attempt in (1, 2):
            try:
                writer = self._writer_connection()
                first, existed = self._call(writer, parameters)
            except self._psycopg.Error as exc:
                lost = is_connection_lost(exc)
                self._drop_writer()
                if lost and attempt == 1:
                    # The commit may have happened: the retry looks the batch id up first.
                    self._in_doubt = _InDoubt(batch_id, rows)
                    continue
                raise self._translate(exc, action) from exc
            self._in_doubt = None
            if existed:
                stored = self._stored_count(batch_id)
                if stored != len(rows):
                    raise StoreError(
                        f"{action} on {self.url}: batch id {batch_id!r} is stored already "
                        f"with {stored} event(s)",
                        path=self.url,
                    )
            return list(range(first, first + len(rows)))
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(
        self, writer: psycopg.Connection[Any], parameters: tuple[object, ...]
    ) -> tuple[int, bool]:
        row = writer.execute(_APPEND_SQL, parameters).fetchone()
        assert row is not None
        return self._acknowledge(writer, int(row[0]), bool(row[1]))

    def _acknowledge(
        self, writer: psycopg.Connection[Any], first: int, existed: bool
    ) -> tuple[int, bool]:
        # A seam of its own: a test drops the connection after the commit, before the answer.
        return first, existed

    def _stored_count(self, batch_id: str) -> int:
        writer = self._writer_connection()
        row = writer.execute(_BATCH_SQL, (batch_id,)).fetchone()
        return int(row[1]) if row else 0

    def _resolve_in_doubt(self, rows: list[EventRow]) -> list[int]:
        """Return the positions already stored for the head of ``rows`` (a resent batch).

        A batch in doubt (its connection dropped and the reconnect failed) is looked up by
        its id: if it was committed, its rows and positions are kept as stored but not yet
        acknowledged, and every later append that starts with those rows gets those
        positions back instead of storing them again.
        """
        if self._in_doubt is not None:
            doubt = self._in_doubt
            try:
                row = self._writer_connection().execute(_BATCH_SQL, (doubt.batch_id,)).fetchone()
            except self._psycopg.Error as exc:
                self._drop_writer()
                raise self._translate(exc, "look up a batch in doubt") from exc
            self._in_doubt = None
            if row is not None:
                first = int(row[0])
                self._stored_unacknowledged = [(r, first + i) for i, r in enumerate(doubt.rows)]
        done: list[int] = []
        pending = self._stored_unacknowledged
        while pending and len(done) < len(rows) and pending[0][0] == rows[len(done)]:
            done.append(pending.pop(0)[1])
        if pending and len(done) < len(rows):
            pending.clear()  # the writer moved on: what it did not resend is not expected
        return done

    # --- reading ----------------------------------------------------------------------------

    def _pages(self, start: int, limit: int | None) -> Iterator[tuple[int, object]]:
        # The head at the first step bounds the read: gapless positions make the prefix up
        # to it a stable snapshot, without holding a transaction open between pages.
        head = self.last_position()
        size = _FETCH_SIZE if limit is None else max(1, min(limit, _FETCH_SIZE))
        position = start
        while position <= head:
            rows = self._query("read", _PAGE_SQL, (position, head, size))
            if not rows:
                return
            for row in rows:
                yield int(row[0]), row[1]
            position = int(rows[-1][0]) + 1

    def _request_rows(self, request_id: str) -> Iterator[tuple[int, object]]:
        head = self.last_position()
        rows = self._query("read_request", _REQUEST_SQL, (_index_value(request_id), head))
        for row in rows:
            yield int(row[0]), row[1]

    def _count_skip(self) -> None:
        with self._lock:
            self.skipped_unknown += 1

    # --- connections ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the event log {self.url} is closed", path=self.url)

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise StoreError(f"the event log {self.url} was opened read-only", path=self.url)

    def _writer_connection(self) -> psycopg.Connection[Any]:
        if self._writer is None or self._writer.closed:
            self._writer = self._connect()
        return self._writer

    def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    def _query(self, action: str, statement: str, params: tuple[object, ...] = ()) -> list[Any]:
        """Run one read on an idle reader connection (or a new one) and return its rows.

        An idle connection may have been closed by the server meanwhile (a restart, an
        administrator, an idle timeout): a read is safe to repeat, so it is, once, on a new
        connection.
        """
        for attempt in (1, 2):
            with self._lock:
                self._check_open()
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            try:
                if conn is None or conn.closed:
                    conn = self._connect(readonly=True)
                rows = conn.execute(statement, params or None).fetchall()
            except self._psycopg.Error as exc:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                if reused and attempt == 1 and is_connection_lost(exc):
                    continue
                raise self._translate(exc, action) from exc
            except BaseException:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                raise
            with self._lock:
                if not self._closed and len(self._idle) < _MAX_IDLE_READERS:
                    self._idle.append(conn)
                    return rows
            conn.close()
            return rows
        raise AssertionError("unreachable")  # pragma: no cover

    def _listening(self) -> psycopg.Connection[Any] | None:
        """Return the LISTENing connection, or ``None`` when it cannot be had (poll)."""
        self._check_open()
        if self._listener is not None and not self._listener.closed:
            return self._listener
        try:
            conn = self._connect()
            conn.execute(f'LISTEN "{self._channel}"')
        except self._psycopg.Error:
            return None
        self._listener = conn
        return conn

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()

    def _slot_connection(self) -> psycopg.Connection[Any]:
        if self._slots_conn is None or self._slots_conn.closed:
            self._held.clear()  # a new session holds nothing
            self._slots_conn = self._connect()
        return self._slots_conn

    def _drop_slots(self) -> None:
        conn, self._slots_conn = self._slots_conn, None
        self._held.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _translate(self, exc: psycopg.Error, action: str) -> StoreError:
        return translate(exc, url=self.url, action=action, secrets=self._secrets)
