"""Helpers shared by the test modules (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NoReturn

import pytest

__all__ = ["cannot", "wait_for"]


def wait_for(predicate: Callable[[], bool], what: str = "condition", timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds: for work on real loopback I/O or actor threads.

    Never used to let time pass: where time matters, tests advance a VirtualClock.
    """
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def cannot(reason: str) -> NoReturn:
    """Skip a test this machine cannot run; under CI (``CI`` set) fail instead.

    CI installs and starts what the suite needs (PostgreSQL, chromium, the extras) and runs
    as root where privileges can be dropped, so there a missing capability is a broken
    environment, not a reason to pass silently.
    """
    if os.environ.get("CI"):
        pytest.fail(f"under CI this must run: {reason}")
    pytest.skip(reason)
