"""A provider's concurrency budget: slots reserved and released atomically from any thread.

The budget is shared on the provider's handle. Its limit is changed only by the supervisor
(an operator's ``set_concurrent_limit``); reserving (by the supervisor, in the same step as
the decision) and releasing (by the thread whose call ended) are single atomic operations, so
the hot path takes no extra actor round trip. A released slot gives the requests waiting in
the runtime's bounded queue their turns (by priority: ``routeledger.actors._waitqueue``).

When several runtimes share one log, each may use only its granted ``share`` of the limit
(a capacity lease, see :mod:`routeledger.actors._lease`), set off the request path by the
lease thread; ``None`` (a runtime alone) leaves the whole limit.
"""

from __future__ import annotations

import threading

__all__ = ["Budget", "CapacitySignal"]


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

    __slots__ = ("_lock", "_signal", "in_flight", "limit", "peak", "share")

    def __init__(self, limit: int, signal: CapacitySignal | None = None) -> None:
        self._lock = threading.Lock()
        self._signal = signal
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
            return True

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            if self.in_flight > 0:
                self.in_flight -= 1
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
