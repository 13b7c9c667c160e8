"""The routing desk's flusher: it sends what gathered, and stops when asked, at any moment."""

from __future__ import annotations

import time
from typing import Any

from support import wait_for

from routeledger.actors._desk import _Flusher


class _CountingDesk:
    """A desk that counts the sends its flusher makes."""

    def __init__(self) -> None:
        self.sends = 0

    def send(self) -> None:
        self.sends += 1


def test_the_flusher_sends_once_per_request_window() -> None:
    """A request is followed by one send after the interval."""
    desk = _CountingDesk()
    flusher = _Flusher(desk, 0.001)  # type: ignore[arg-type]  # only send() is used
    try:
        flusher.request()
        wait_for(lambda: desk.sends == 1)
    finally:
        flusher.stop()


def test_a_stop_during_the_batching_sleep_ends_the_thread() -> None:
    """stop() while the flusher sleeps before a send still ends its thread (no lost wake-up)."""
    desk: Any = _CountingDesk()
    flusher = _Flusher(desk, 0.2)
    flusher.request()
    time.sleep(0.05)  # the thread is now inside its 0.2 s batching sleep
    flusher.stop()
    assert not flusher._thread.is_alive()
    assert desk.sends == 1  # what gathered was still sent
