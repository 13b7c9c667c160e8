"""Helpers shared by the test modules (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_for"]


def wait_for(predicate: Callable[[], bool], what: str = "condition", timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds: for work on real loopback I/O or actor threads.

    Never used to let time pass: where time matters, tests advance a VirtualClock.
    """
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)
