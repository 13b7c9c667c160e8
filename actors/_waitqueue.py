"""The wait queue: requests waiting for capacity, served by priority, then arrival order.

When every candidate of a request is saturated, the request waits (``AwaitCapacity``) until a
slot may be free. A released slot used to wake every waiter at once, and whichever thread
reached the router first took the slot. Here the waiters form one queue ordered by
``Request.priority`` (higher first), then by arrival, and a release wakes them *one at a
time* in that order: the first one asks the router again; if it found no slot it could use
(another model's provider was freed, say) or once it has asked, the next one in the queue
gets its turn, and so on until every waiter has had one turn for that release. So a
higher-priority request always asks before a lower-priority one, and no release is lost.

The queue is bounded (``FailoverConfig.max_queue``). When it is full, a newcomer of higher
priority than the lowest-priority waiter takes that waiter's place: the waiter is refused
early (its request ends with ``AllProvidersSaturated`` at once, rather than at its queue
timeout); a newcomer of no higher priority is refused itself.

:class:`WaitQueue` is a :class:`~routeledger.actors._budget.CapacitySignal`: budgets call
:meth:`WaitQueue.notify` when they release a slot, as before. With no waiter, a notify costs
one lock and an increment.
"""

from __future__ import annotations

import itertools
import threading
import time
from bisect import insort

from routeledger.actors._budget import CapacitySignal

__all__ = ["Ticket", "WaitQueue"]


class Ticket:
    """One request's place in the queue, kept across its waits (arrival order holds)."""

    __slots__ = ("key", "priority", "seen", "state", "turn")

    def __init__(self, priority: int, seq: int) -> None:
        self.priority = priority
        self.key = (-priority, seq)
        self.seen = -1
        """The capacity generation this waiter last asked the router at."""
        self.state = "idle"
        """``idle`` (not waiting), ``waiting``, ``woken`` (its turn) or ``refused``."""
        self.turn: threading.Condition | None = None

    def __lt__(self, other: Ticket) -> bool:
        return self.key < other.key


class WaitQueue(CapacitySignal):
    """Waiters for capacity in priority order; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._gen = 0
        self._seq = itertools.count()
        self._queue: list[Ticket] = []
        self._awake: Ticket | None = None
        """The waiter whose turn it is (asking the router), if any."""
        self._interrupts = 0

    @property
    def generation(self) -> int:
        """Return a counter that grows each time capacity may have been freed."""
        return self._gen

    def ticket(self, priority: int = 0) -> Ticket:
        """Return a new place in the queue for a request of ``priority``."""
        return Ticket(priority, next(self._seq))

    @property
    def waiting(self) -> int:
        """Return how many requests wait."""
        return len(self._queue)

    def notify(self) -> None:
        """Record that capacity may be free, and give the next waiter its turn."""
        with self._lock:
            self._gen += 1
            if self._queue and self._awake is None:
                self._hand_on()

    def interrupt(self) -> None:
        """Wake every waiter (a cancellation or shutdown: each checks its own scope)."""
        with self._lock:
            self._gen += 1
            self._interrupts += 1
            for t in self._queue:
                if t.turn is not None:
                    t.turn.notify()

    def _hand_on(self) -> None:
        """Wake the first waiter that has not asked since the latest release (lock held)."""
        for t in self._queue:
            if t.state == "waiting" and t.seen < self._gen:
                t.state = "woken"
                self._awake = t
                assert t.turn is not None
                t.turn.notify()
                return

    def done(self, ticket: Ticket) -> None:
        """Note that ``ticket``'s turn is over (it asked the router): the next one's begins."""
        with self._lock:
            if self._awake is ticket:
                self._awake = None
                if self._queue:
                    self._hand_on()

    def wait(self, seen_generation: int, timeout: float) -> bool:
        """Wait as a request of priority 0 (the :class:`CapacitySignal` interface)."""
        ticket = self.ticket()
        try:
            return self.wait_turn(ticket, seen_generation, timeout, max_queue=1 << 62)
        finally:
            self.done(ticket)

    def wait_turn(self, ticket: Ticket, seen: int, timeout: float, *, max_queue: int) -> bool:
        """Wait for ``ticket``'s turn after a release later than ``seen``.

        Returns True when it is its turn (the caller asks the router, then calls
        :meth:`done`), False when the wait timed out, the queue was full, or it was refused
        to make room for a request of higher priority. Uses real time (as the budgets'
        releases do).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            ticket.seen = max(ticket.seen, seen)
            if self._awake is ticket:  # a turn that ended by waiting again
                self._awake = None
            if len(self._queue) >= max_queue and not self._make_room(ticket):
                if self._awake is None and self._queue:
                    self._hand_on()
                return False
            ticket.state = "waiting"
            ticket.turn = threading.Condition(self._lock)
            insort(self._queue, ticket)
            interrupts = self._interrupts
            try:
                if self._awake is None:
                    self._hand_on()
                while ticket.state == "waiting" and self._interrupts == interrupts:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    ticket.turn.wait(left)
                return ticket.state == "woken"
            finally:
                if ticket.state != "refused":  # a refused ticket is already out
                    self._queue.remove(ticket)
                if ticket.state != "woken" and self._awake is None and self._queue:
                    self._hand_on()
                ticket.state = "idle"
                ticket.turn = None

    def _make_room(self, ticket: Ticket) -> bool:
        """Refuse the lowest-priority waiter if ``ticket`` outranks it (lock held)."""
        lowest = min(
            (t for t in self._queue if t.state == "waiting"),
            key=lambda t: (t.priority, -t.key[1]),
            default=None,
        )
        if lowest is None or lowest.priority >= ticket.priority:
            return False
        lowest.state = "refused"
        assert lowest.turn is not None
        lowest.turn.notify()
        # Out of the count at once, so that the newcomer's place is free now.
        self._queue.remove(lowest)
        return True
