"""Clocks: the only source of time in routeledger, so that tests and simulations control it.

``monotonic()`` measures durations; ``time()`` stamps events (Unix seconds). ``sleep_until``
waits for a monotonic deadline unless ``cancel`` is set first.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "VirtualClock"]


class Clock(Protocol):
    """What routeledger needs of a clock."""

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes back."""
        ...

    def time(self) -> float:
        """Return the wall-clock time in Unix seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...

    def sleep_until(self, deadline: float, cancel: threading.Event) -> bool:
        """Wait until ``monotonic() >= deadline``; return ``True`` if ``cancel`` was set first."""
        ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return _time.monotonic()

    def time(self) -> float:
        """Return ``time.time()``."""
        return _time.time()

    def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        if seconds > 0:
            _time.sleep(seconds)

    def sleep_until(self, deadline: float, cancel: threading.Event) -> bool:
        """Wait on ``cancel`` until the deadline."""
        return cancel.wait(max(0.0, deadline - _time.monotonic()))


class VirtualClock:
    """A clock that moves only when told to; safe to share between threads.

    ``sleep`` in a simulation (one thread) simply advances time. Threads blocked in
    ``sleep_until`` wake when :meth:`advance` moves time past their deadline.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = 0.0
        self._epoch = start
        self._cond = threading.Condition()

    def monotonic(self) -> float:
        """Return virtual seconds since the clock was made."""
        return self._now

    def time(self) -> float:
        """Return the virtual wall-clock time."""
        return self._epoch + self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and wake the sleepers whose deadline passed."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def set(self, monotonic: float) -> None:
        """Move time forward to ``monotonic`` (never back)."""
        self.advance(max(0.0, monotonic - self._now))

    def sleep(self, seconds: float) -> None:
        """Advance time by ``seconds``: in a simulation, sleeping is the passing of time."""
        if seconds > 0:
            self.advance(seconds)

    def sleep_until(self, deadline: float, cancel: threading.Event) -> bool:
        """Block until virtual time reaches ``deadline`` or ``cancel`` is set."""
        with self._cond:
            while self._now < deadline and not cancel.is_set():
                # A short real wait lets a set() of ``cancel`` (which cannot notify this
                # condition) be seen promptly.
                self._cond.wait(0.05)
        return cancel.is_set()
