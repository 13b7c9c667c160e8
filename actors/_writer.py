"""The log writer: the only writer of the event log, with group commit and live projections.

:class:`EventWriter` is the logic (the simulation calls it directly); :class:`LogWriterActor`
runs it on its own thread. Events arrive by ``tell``, so appending never blocks a request on
disk I/O. The actor commits when its mailbox is empty or ``batch_max_events`` are waiting:
under load, everything that arrived during one commit goes into the next (group commit).
After each commit the same events, with their positions, are folded into the live
projections, which therefore equal a replay of the file.

If the store fails, requests keep being served: events wait in a buffer of at most
``buffer_max_events``, the failure is logged, and commits are retried with backoff. Events
beyond the buffer are counted, and the first successful commit records them as one explicit
``log.events_dropped`` gap event: never a silent drop.

A backlog is committed in batches of at most ``batch_max_events``, and a batch the store
refuses is halved for the next try (down to one event): on a nearly full disk, whatever
space comes back is used, instead of one all-or-nothing transaction failing forever.

At close (:class:`~routeledger.actors._protocol.CloseLog`) a failing store is retried for a
grace period. What still cannot be written is reported (an ERROR line, and the
:class:`Unwritten` answer the runtime's ``close()`` returns), and kept as one gap event beside
the log file (:mod:`routeledger.store._gaps`) for the next start to record.

Every ``log.snapshot_every`` events, after a commit, and at close (once the log is that long),
the writer also stores a snapshot of the projections (``routeledger.store.write_snapshot``) on
its own thread; a snapshot that fails is logged and never stops the writer.

Several runtimes may share one log (see :mod:`routeledger.actors._follow`). The writer then
folds the whole log, in position order, into its projections: :meth:`EventWriter.catch_up`
reads what others appended since the last fold (a ``FollowLog`` tell from the follower, and
every ``Flush``), and a commit whose positions do not follow the last folded one first folds
the others' events before them. The store returns the positions of each batch it appends,
so whatever the writer reads back is another runtime's by construction; each folded batch,
own or foreign, goes to ``on_folded`` (the shared-log coordinator).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka

from routeledger.actors._protocol import (
    Append,
    CloseLog,
    DescribeLog,
    Flush,
    FollowLog,
    GetABResults,
    GetMetrics,
    GetUsage,
    WriterMessage,
)
from routeledger.events import Event, EventsDropped, Projections, StoreCorrupted, StoreError
from routeledger.store import EventNotStorable, gap_base, gaps_path, save_gap, write_snapshot

if TYPE_CHECKING:
    from collections.abc import Sequence

    from routeledger.actors._clock import Clock
    from routeledger.events import LogConfig, ProviderMetrics
    from routeledger.store import EventStore

__all__ = [
    "Append",
    "EventWriter",
    "Flush",
    "LogView",
    "LogWriterActor",
    "Unwritten",
    "latency_buckets",
]

log = logging.getLogger("routeledger")

RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0

Folded = Callable[["Sequence[tuple[int, Event]]", bool], None]
"""Called with each folded batch of ``(position, event)`` and whether it is this writer's."""


class Unwritten(NamedTuple):
    """What a closing writer could not write: ``events`` lost from the log, and why."""

    events: int = 0
    error: str | None = None
    kept: bool = False
    """A gap event describing them is kept beside the log (or, for a URL, in the local state
    directory) for the next start."""


class LogView(NamedTuple):
    """The live figures and the writer's state at one log position, copied (never shared)."""

    position: int
    events: int
    metrics: dict[str, ProviderMetrics]
    latency_buckets: dict[str, list[int]]
    """Each provider's latency histogram counts (see ``MetricsProjection.histogram``)."""
    pending_events: int
    store_failing: bool
    store: EventStore


class EventWriter:
    """Buffers events, commits them in batches, and feeds the live projections."""

    def __init__(
        self,
        store: EventStore,
        *,
        config: LogConfig,
        clock: Clock,
        projections: Projections | None = None,
        on_error: Callable[[StoreError | None], None] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.projections = projections if projections is not None else Projections()
        self.on_error = on_error
        self.pending: list[Event] = []
        self.error: StoreError | None = None
        self.dropped = 0
        self._dropped_first = 0.0
        self._dropped_last = 0.0
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN_S
        self._gap_at = 0
        self._gap_reason = ""
        """Where in ``pending`` the dropped events were lost (the gap event goes there)."""
        self._batch = config.batch_max_events
        self._snapshot_at = self.projections.snapshot_position
        self._snapshot_failed = False
        self.followed = self.projections.position
        """The last position folded or read past (unknown rows are read past, not folded)."""
        self.on_folded: Folded | None = None
        self._follow_failed = False

    def add(self, events: list[Event]) -> None:
        """Queue events; past the buffer's bound they are counted as dropped."""
        room = self.config.buffer_max_events - len(self.pending)
        if len(events) <= room:
            self.pending.extend(events)
            return
        keep, lost = events[: max(room, 0)], events[max(room, 0) :]
        self.pending.extend(keep)
        self._drop(lost, at=len(self.pending))

    def _drop(self, lost: list[Event], *, at: int) -> None:
        """Count events that will never be stored, for the next gap event.

        ``at`` is where in :attr:`pending` they were lost: the gap event is written there.
        """
        if not self.dropped:
            self._dropped_first = lost[0].ts
            self._gap_at = at
            self._gap_reason = f"event log unavailable: {self.error}" if self.error else ""
        self.dropped += len(lost)
        self._dropped_last = lost[-1].ts
        self._gap_at = min(self._gap_at, at)

    @property
    def full(self) -> bool:
        """Return whether a batch is ready regardless of what else is coming."""
        return len(self.pending) >= self.config.batch_max_events

    @property
    def unwritten(self) -> int:
        """Return how many events received are not in the log (pending or dropped)."""
        return len(self.pending) + self.dropped

    def commit(self, *, force: bool = False) -> bool:
        """Write what is pending; return whether everything is durable now.

        While the store is failing, a commit is attempted only when the backoff allows it,
        unless ``force``.
        """
        if not self.pending and not self.dropped:
            return True
        if self.error is not None and not force and self.clock.monotonic() < self._retry_at:
            return False
        while self.pending or self.dropped:
            if not self._commit_batch():
                return False
        return True

    def _gap(self) -> EventsDropped:
        return EventsDropped(
            ts=self.clock.time(),
            count=self.dropped,
            first_ts=self._dropped_first,
            last_ts=self._dropped_last,
            reason=self._gap_reason
            or (f"event log unavailable: {self.error}" if self.error else ""),
        )

    def _commit_batch(self) -> bool:
        """Write the next batch (at most ``_batch`` events); return whether it was written."""
        n = min(self._batch, len(self.pending))
        gap = None
        if self.dropped and self._gap_at <= n:
            n = self._gap_at
            gap = self._gap()
        batch = self.pending[:n]
        if gap is not None:
            batch.append(gap)
        try:
            positions = self.store.append(batch)
        except EventNotStorable as exc:
            # A fault in one event, not in the store: retrying would fail forever. Leave it
            # out, count it in the gap event, and write the rest at once.
            log.error("event log: an event cannot be stored and is dropped: %s", exc)
            if exc.index >= n:  # the gap event itself: cannot happen, but never loop
                self.dropped = 0
                return False
            bad = self.pending.pop(exc.index)
            if self.dropped and exc.index < self._gap_at:
                self._gap_at -= 1
            self._drop([bad], at=exc.index)
            return True
        except StoreError as exc:
            self._failed(exc)
            # A smaller batch may fit where this one did not (a nearly full disk).
            self._batch = max(1, n // 2)
            return False
        if self.error is not None:
            log.warning("event log recovered; %d buffered events written", len(batch))
            self.error = None
            self._retry_delay = RETRY_MIN_S
            if self.on_error is not None:
                self.on_error(None)
        del self.pending[:n]
        if gap is not None:
            self.dropped = 0
        else:
            self._gap_at -= n
        self._batch = min(self._batch * 2, self.config.batch_max_events)
        if positions and positions[0] > self.followed + 1:
            # Another runtime committed between our last fold and this batch: fold its
            # events first, so that the projections see the log in position order.
            self.catch_up(positions[0] - 1)
        apply = self.projections.apply
        for position, event in zip(positions, batch, strict=True):
            apply(position, event)
        if positions:
            self.followed = max(self.followed, positions[-1])
            if self.on_folded is not None:
                self.on_folded(list(zip(positions, batch, strict=True)), True)
        if self.projections.position - self._snapshot_at >= self.config.snapshot_every > 0:
            self.snapshot()
        return True

    def catch_up(self, upto: int | None = None) -> int:
        """Fold what other runtimes appended after :attr:`followed`, up to ``upto`` (default:
        the log's head now); return how many events were folded. Never raises.

        A row that cannot be decoded is left out (and logged), as at start; rows of unknown
        types are read past. A failing read is logged once and retried at the next call.
        """
        store, projections = self.store, self.projections
        folded: list[tuple[int, Event]] = []
        try:
            head = store.last_position() if upto is None else upto
            while self.followed < head:
                start = self.followed + 1
                try:
                    for position, event in store.read(
                        start, limit=head - self.followed, strict=False
                    ):
                        projections.apply(position, event)
                        self.followed = position
                        folded.append((position, event))
                    self.followed = head
                except StoreCorrupted as exc:
                    if exc.position is None or exc.position < start:
                        raise
                    log.error("event log: %s; left out of the figures", exc.message)
                    self.followed = exc.position
        except Exception as exc:  # a store's failure (or a bug) must not stop the writer
            level = logging.DEBUG if self._follow_failed else logging.WARNING
            log.log(level, "event log: following the shared log failed: %s", exc)
            self._follow_failed = True
        else:
            self._follow_failed = False
        if folded and self.on_folded is not None:
            self.on_folded(folded, False)
        return len(folded)

    def close(self, grace_s: float) -> Unwritten:
        """Commit what is pending, retrying a failing store for up to ``grace_s`` (real time).

        What cannot be written is logged at ERROR and kept as a gap event beside the log
        file (a PostgreSQL log's in the local state directory, :func:`gap_base`) for the next
        start to record.
        """
        deadline = time.monotonic() + grace_s
        delay = RETRY_MIN_S
        while not self.commit(force=True):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(delay, left))
            delay = min(delay * 2, RETRY_MAX_S)
        lost = self.unwritten
        if not lost:
            return Unwritten()
        error = str(self.error) if self.error is not None else "the store refused the events"
        path = gap_base(self.store)  # beside a log file; for a URL, in the local state dir
        first = self.pending[0].ts if self.pending else self._dropped_first
        last = self._dropped_last if self.dropped else self.pending[-1].ts
        gap = EventsDropped(
            ts=self.clock.time(),
            count=lost,
            first_ts=first,
            last_ts=last,
            reason=f"not written before the runtime closed: {error}",
        )
        kept = path is not None and save_gap(path, gap)
        log.error(
            "event log: %d events could not be written before close (%s); %s",
            lost,
            error,
            f"a gap event kept in {gaps_path(path)} records them at the next start"
            if kept and path is not None
            else "they are lost, and no gap event could be kept",
        )
        self.pending = []
        self.dropped = 0
        return Unwritten(lost, error, kept)

    def snapshot(self) -> None:
        """Store a snapshot of the projections if the log moved since the last one.

        A log shorter than ``snapshot_every`` gets none: folding it from position 1 is
        within the bound the schedule gives anyway. Never raises: a snapshot only saves a
        later start some folding.
        """
        every, position = self.config.snapshot_every, self.projections.position
        if not every or position < every or position <= self._snapshot_at:
            return
        try:
            if write_snapshot(self.store, self.projections):
                self._snapshot_at = self.projections.position
        except Exception as exc:
            # Once at WARNING: a store that cannot take snapshots would say it every time.
            level = logging.DEBUG if self._snapshot_failed else logging.WARNING
            log.log(level, "event log: snapshot not written: %s", exc)
            self._snapshot_failed = True

    def _failed(self, exc: StoreError) -> None:
        if self.error is None:
            log.error("event log write failed; buffering events: %s", exc)
            if self.on_error is not None:
                self.on_error(exc)
        self.error = exc
        self._retry_at = self.clock.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)


def latency_buckets(projections: Projections) -> dict[str, list[int]]:
    """Return a copy of each provider's latency histogram counts."""
    buckets: dict[str, list[int]] = {}
    for name in projections.metrics:
        histogram = projections.metrics.histogram(name)
        if histogram is not None:
            buckets[name] = list(histogram.counts)
    return buckets


def _describe(writer: EventWriter) -> LogView:
    projections = writer.projections
    return LogView(
        position=projections.position,
        events=projections.events,
        metrics=projections.metrics.snapshot(),
        latency_buckets=latency_buckets(projections),
        pending_events=len(writer.pending),
        store_failing=writer.error is not None,
        store=writer.store,
    )


class LogWriterActor(pykka.ThreadingActor):
    """Runs an :class:`EventWriter` on its own thread."""

    # A runtime that is never closed must not keep the process alive; the runtime's
    # exit hook closes it (and flushes the log) before daemon threads are stopped.
    use_daemon_thread = True

    def __init__(self, writer: EventWriter) -> None:
        super().__init__()
        self.writer = writer

    def on_receive(self, message: WriterMessage) -> Any:
        """Handle one message; an ``Append`` (a tell) never raises.

        A question about the figures first commits what is pending (without waiting out a
        failing store's backoff), so that it sees every event received before it.
        """
        writer = self.writer
        match message:
            case Append(events):
                try:
                    writer.add(events)
                    if writer.full or self.actor_inbox.empty():
                        writer.commit()
                except Exception:
                    log.exception("log writer: unexpected failure")
                return None
            case CloseLog(grace_s):
                return writer.close(grace_s)
            case Flush():
                if not writer.commit(force=True):
                    assert writer.error is not None
                    raise writer.error
                writer.catch_up()  # and every other runtime's events up to the log's head
                return True
            case FollowLog():
                try:
                    writer.catch_up()
                except Exception:
                    log.exception("log writer: following the log failed")
                return None
            case GetMetrics():
                writer.commit()
                return writer.projections.metrics.snapshot()
            case GetUsage(period, now):
                writer.commit()
                return writer.projections.usage.report(period, now=now)
            case GetABResults(name):
                writer.commit()
                return writer.projections.ab.results(name)
            case DescribeLog():
                writer.commit()
                return _describe(writer)
        raise TypeError(f"log writer got an unknown message {type(message).__name__}")

    def on_stop(self) -> None:
        """Write what is left, and a snapshot, before stopping."""
        try:
            self.writer.commit(force=True)
        except Exception:
            log.exception("log writer: final commit failed")
        self.writer.snapshot()
