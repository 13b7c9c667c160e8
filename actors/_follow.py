"""The log follower: wakes the log writer when another runtime appended to the shared log.

Each runtime folds the whole log, its own events and the others', in position order (see
:mod:`routeledger.actors._writer`). The writer folds its own batches right after it commits
them; this thread notices the others' commits and tells the writer to fold them
(``FollowLog``), so the live projections, the health view and the capacity leases follow the
log within one wake-up.

How it wakes: a store that can say when something was committed (the PostgreSQL store's
``wait_for_commit(after_position, timeout_s)``, by LISTEN/NOTIFY) is waited on; any other
store is polled every :data:`POLL_S` with ``last_position()``. For SQLite, a poll is one
``SELECT MAX(position)`` on the primary key's b-tree through the store's pooled read
connection (a few microseconds, no page of the table read). ``PRAGMA data_version`` would say
the same thing ("the file changed") but needs one connection held open for it and a second
query for the position anyway. While the log is shared, 25 ms keeps a failure seen by one
runtime well inside a second of steering the others (about 40 queries a second, some 0.5 % of
a core here); a runtime alone polls every :data:`ALONE_POLL_S` (idle CPU near zero), so a
runtime that joins it is noticed within that, and the two then follow each other at 25 ms.

The follower never touches the projections itself: the writer's thread owns them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

from routeledger.actors._protocol import FollowLog
from routeledger.events import StoreError

if TYPE_CHECKING:
    from routeledger.store import EventStore

__all__ = ["ALONE_POLL_S", "POLL_S", "LogFollower"]

log = logging.getLogger("routeledger")

POLL_S = 0.025
"""How often a store without commit notifications is polled while the log is shared."""

ALONE_POLL_S = 0.25
"""How often it is polled while this runtime has seen no other on the log."""

RETELL_S = 1.0
"""How long the follower waits for a writer still behind the head before telling it again."""

WAIT_S = 1.0
"""How long one ``wait_for_commit`` may block (the thread checks for a stop between)."""


class LogFollower:
    """A daemon thread that tells the log writer to fold what others appended.

    Args:
        store: The shared event log.
        writer: The log writer actor.
        followed: Returns the last position the writer folded or read past.
        poll_s: The poll interval of a store without ``wait_for_commit``.
        shared: Returns whether another runtime was seen (poll at ``poll_s``, else at
            ``alone_poll_s``).
        alone_poll_s: The poll interval while not shared.
    """

    def __init__(
        self,
        store: EventStore,
        writer: pykka.ActorRef[Any],
        followed: Callable[[], int],
        *,
        poll_s: float = POLL_S,
        shared: Callable[[], bool] | None = None,
        alone_poll_s: float = ALONE_POLL_S,
    ) -> None:
        self._store = store
        self._writer = writer
        self._followed = followed
        self._poll_s = poll_s
        self._shared = shared
        self._alone_poll_s = alone_poll_s
        self._told = 0
        self._told_at = 0.0
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="routeledger-follower", daemon=True)

    def start(self) -> LogFollower:
        """Start following."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following (waits for the thread)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=WAIT_S + 5)

    def _head(self) -> int | None:
        """Wait for the next commit (or the poll interval); return the log's head."""
        wait: Callable[[int, float], int] | None = getattr(self._store, "wait_for_commit", None)
        if wait is not None:
            return wait(self._followed(), WAIT_S)
        alone = self._shared is not None and not self._shared()
        if self._stop.wait(self._alone_poll_s if alone else self._poll_s):
            return None
        return self._store.last_position()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                head = self._head()
            except StoreError as exc:
                level = logging.DEBUG if self._failed else logging.WARNING
                log.log(level, "log follower: reading the log's head failed: %s", exc)
                self._failed = True
                if self._stop.wait(self._poll_s * 10):
                    return
                continue
            except Exception:
                log.exception("log follower: unexpected failure")
                if self._stop.wait(self._poll_s * 10):
                    return
                continue
            self._failed = False
            if head is None or self._stop.is_set():
                continue
            # One tell per new head (the writer reads everything up to the head it finds), and
            # again after a while if the writer is still behind (its read failed).
            now = time.monotonic()
            if head > self._followed() and (head > self._told or now - self._told_at > RETELL_S):
                self._told, self._told_at = head, now
                try:
                    self._writer.tell(FollowLog())
                except pykka.ActorDeadError:
                    return
