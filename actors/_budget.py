"""A provider's concurrency budget: slots reserved and released atomically from any thread.

The budget is shared on the provider's handle. Its limit is changed only by the supervisor
(an operator's ``set_concurrent_limit``); reserving (by the supervisor, in the same step as
the decision) and releasing (by the thread whose call ended) are single atomic operations, so
the hot path takes no extra actor round trip. A released slot gives the requests waiting in
the runtime's bounded queue their turns (by priority: ``routeledger.actors._waitqueue``).

Strict shared concurrency (``shared_concurrency = "strict"``, PostgreSQL only): a budget
given a :class:`SlotStore` also takes one of the provider's ``limit`` slots in the database
(an advisory lock) for each request, so that the limit holds in total across every daemon,
at one round trip; the slot is given back with the local one. When the database cannot be
reached the budget falls back to its local limit (logged once at WARNING): requests keep
being served, each daemon within its own ``max_concurrency``.
When several runtimes share one log, each may use only its granted ``share`` of the limit
(a capacity lease, see :mod:`routeledger.actors._lease`), set off the request path by the
lease thread; ``None`` (a runtime alone) leaves the whole limit.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from routeledger.events import ConfigError, StoreError

__all__ = [
    "SHARED_POLL_S",
    "Budget",
    "CapacitySignal",
    "RemoteReleases",
    "SlotStore",
    "check_strict",
    "strict_slots",
]

log = logging.getLogger("routeledger")


class SlotStore(Protocol):
    """A store that hands out provider slots across processes (``PostgresStore``)."""

    def try_acquire_slot(self, provider: str, limit: int) -> Any | None:
        """Take a free slot of ``provider`` out of ``limit``, or return ``None``."""
        ...

    def release_slot(self, slot: Any) -> None:
        """Give a slot back."""
        ...


SHARED_POLL_S = 0.02
"""How often requests waiting for a shared (strict) slot get a turn: another daemon's
release wakes nobody in this process."""


class CapacitySignal:
    """Wakes callers waiting for any provider's slot to free up."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Return a counter that grows each time capacity may have been freed."""
        return self._generation

    def notify(self) -> None:
        """Record that capacity may be free and wake every waiter."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen_generation: int, timeout: float) -> bool:
        """Wait until capacity changes after ``seen_generation``; return whether it did."""
        with self._cond:
            if self._generation != seen_generation:
                return True
            self._cond.wait(timeout)
            return self._generation != seen_generation


class Budget:
    """At most ``limit`` requests in flight; ``peak`` is the most seen at once."""

    __slots__ = (
        "_held",
        "_lock",
        "_provider",
        "_shared",
        "_shared_failed",
        "_signal",
        "in_flight",
        "limit",
        "peak",
        "share",
    )

    def __init__(
        self,
        limit: int,
        signal: CapacitySignal | None = None,
        *,
        shared: SlotStore | None = None,
        provider: str = "",
    ) -> None:
        self._lock = threading.Lock()
        self._signal = signal
        self._shared = shared
        self._provider = provider
        self._held: list[Any] = []
        """The shared slots this budget holds (interchangeable: a release gives any back)."""
        self._shared_failed = False
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self.share: int | None = None
        """This runtime's granted part of ``limit`` on a shared log (``None``: all of it)."""

    @property
    def cap(self) -> int:
        """Return how many slots this runtime may hold now (the limit, or its share)."""
        share = self.share
        return self.limit if share is None or share > self.limit else share

    def set_share(self, share: int | None) -> None:
        """Grant this runtime ``share`` slots of the limit (``None``: the whole limit)."""
        with self._lock:
            old, self.share = self.cap, share
        if self.cap > old and self._signal is not None:
            self._signal.notify()

    def try_acquire(self) -> bool:
        """Reserve a slot if one is free; return whether it was reserved."""
        with self._lock:
            share = self.share
            if self.in_flight >= self.limit or (share is not None and self.in_flight >= share):
                return False
            self.in_flight += 1
            if self.in_flight > self.peak:
                self.peak = self.in_flight
            limit = self.limit
        if self._shared is not None and not self._take_shared(limit):
            self._give_local()
            return False
        return True

    def _take_shared(self, limit: int) -> bool:
        """Take a shared slot (outside the lock: a round trip); False when none is free."""
        assert self._shared is not None
        try:
            slot = self._shared.try_acquire_slot(self._provider, limit)
        except StoreError as exc:
            if not self._shared_failed:
                log.warning(
                    "provider %s: shared slots unavailable, the local limit holds (%s)",
                    self._provider,
                    exc,
                )
            self._shared_failed = True
            return True
        if slot is None:
            return False
        self._shared_failed = False
        with self._lock:
            self._held.append(slot)
        return True

    def _give_local(self) -> None:
        with self._lock:
            if self.in_flight > 0:
                self.in_flight -= 1

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            if self.in_flight > 0:
                self.in_flight -= 1
            slot = self._held.pop() if self._held else None
        if slot is not None and self._shared is not None:
            self._shared.release_slot(slot)
        if self._signal is not None:
            self._signal.notify()

    def set_limit(self, limit: int) -> int:
        """Change the limit at once (slots in use above it drain naturally); return the old one."""
        with self._lock:
            old, self.limit = self.limit, limit
        if limit > old and self._signal is not None:
            self._signal.notify()
        return old

    @property
    def load(self) -> float:
        """Return the share of the budget in use."""
        cap = self.cap
        return self.in_flight / cap if cap > 0 else 1.0


class RemoteReleases:
    """Give waiting requests a turn every ``poll_s`` (strict mode), until :meth:`stop`.

    A slot freed by another daemon sends no signal to this process: without this, a request
    waiting for it would wait until a local release, or its queue timeout. A notify with no
    waiter costs one lock and an increment.
    """

    def __init__(self, signal: CapacitySignal, *, poll_s: float = SHARED_POLL_S) -> None:
        self._signal = signal
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rl-shared-slots", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            if getattr(self._signal, "waiting", 1):
                self._signal.notify()

    def stop(self) -> None:
        """Stop the thread (idempotent)."""
        self._stop.set()
        self._thread.join(timeout=1.0)


def strict_slots(config: object, store: object) -> SlotStore | None:
    """Return the store to take shared slots from, when ``config`` asks for strict mode.

    ``shared_concurrency = "strict"`` needs a store that hands out slots (``PostgresStore``);
    :func:`check_strict` refuses the configuration before anything starts otherwise.
    """
    if getattr(config, "shared_concurrency", "local") != "strict":
        return None
    if not callable(getattr(store, "try_acquire_slot", None)):
        return None
    return store  # type: ignore[return-value]


def check_strict(config: object, event_log: object) -> None:
    """Refuse strict shared concurrency on an event log that cannot share slots.

    Raises:
        ConfigError: ``shared_concurrency = "strict"`` with a log other than PostgreSQL.
    """
    if getattr(config, "shared_concurrency", "local") != "strict":
        return
    from routeledger.store import is_postgres_url

    if is_postgres_url(event_log) or callable(getattr(event_log, "try_acquire_slot", None)):
        return
    raise ConfigError(
        'shared_concurrency = "strict" needs a postgresql:// event log (advisory locks); '
        "use the default lease mode with SQLite"
    )
