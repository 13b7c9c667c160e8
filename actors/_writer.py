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

Every ``log.snapshot_every`` events, after a commit, and at close (once the log is that long),
the writer also stores a snapshot of the projections (``routeledger.store.write_snapshot``) on
its own thread; a snapshot that fails is logged and never stops the writer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka

from routeledger.actors._protocol import (
    Append,
    DescribeLog,
    Flush,
    GetABResults,
    GetMetrics,
    GetUsage,
    WriterMessage,
)
from routeledger.events import Event, EventsDropped, Projections, StoreError
from routeledger.store import EventNotStorable, write_snapshot

if TYPE_CHECKING:
    from routeledger.actors._clock import Clock
    from routeledger.events import LogConfig, ProviderMetrics
    from routeledger.store import EventStore

__all__ = ["Append", "EventWriter", "Flush", "LogView", "LogWriterActor", "latency_buckets"]

log = logging.getLogger("routeledger")

RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0


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
        self._snapshot_at = self.projections.snapshot_position
        self._snapshot_failed = False

    def add(self, events: list[Event]) -> None:
        """Queue events; past the buffer's bound they are counted as dropped."""
        room = self.config.buffer_max_events - len(self.pending)
        if len(events) <= room:
            self.pending.extend(events)
            return
        keep, lost = events[: max(room, 0)], events[max(room, 0) :]
        self.pending.extend(keep)
        self._drop(lost)

    def _drop(self, lost: list[Event]) -> None:
        """Count events that will never be stored, for the next gap event."""
        if not self.dropped:
            self._dropped_first = lost[0].ts
        self.dropped += len(lost)
        self._dropped_last = lost[-1].ts

    @property
    def full(self) -> bool:
        """Return whether a batch is ready regardless of what else is coming."""
        return len(self.pending) >= self.config.batch_max_events

    def commit(self, *, force: bool = False) -> bool:
        """Write what is pending; return whether everything is durable now.

        While the store is failing, a commit is attempted only when the backoff allows it,
        unless ``force``.
        """
        if not self.pending and not self.dropped:
            return True
        if self.error is not None and not force and self.clock.monotonic() < self._retry_at:
            return False
        batch = self.pending
        if self.dropped:
            batch = [
                *batch,
                EventsDropped(
                    ts=self.clock.time(),
                    count=self.dropped,
                    first_ts=self._dropped_first,
                    last_ts=self._dropped_last,
                    reason=f"event log unavailable: {self.error}" if self.error else "",
                ),
            ]
        try:
            positions = self.store.append(batch)
        except EventNotStorable as exc:
            # A fault in one event, not in the store: retrying would fail forever. Leave it
            # out, count it in the gap event, and write the rest at once.
            log.error("event log: an event cannot be stored and is dropped: %s", exc)
            bad = self.pending.pop(exc.index) if exc.index < len(self.pending) else None
            if bad is None:  # the gap event itself: cannot happen, but never loop
                self.dropped = 0
                return False
            self._drop([bad])
            return self.commit(force=force)
        except StoreError as exc:
            self._failed(exc)
            return False
        if self.error is not None:
            log.warning("event log recovered; %d buffered events written", len(batch))
            self.error = None
            self._retry_delay = RETRY_MIN_S
            if self.on_error is not None:
                self.on_error(None)
        self.pending = []
        self.dropped = 0
        apply = self.projections.apply
        for position, event in zip(positions, batch, strict=True):
            apply(position, event)
        if self.projections.position - self._snapshot_at >= self.config.snapshot_every > 0:
            self.snapshot()
        return True

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
            case Flush():
                if not writer.commit(force=True):
                    assert writer.error is not None
                    raise writer.error
                return True
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
