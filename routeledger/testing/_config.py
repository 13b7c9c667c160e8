"""Configurations for tests: a failover policy that never waits."""

from __future__ import annotations

from typing import Any

from routeledger.events import FailoverConfig

__all__ = ["no_backoff"]


def no_backoff(**overrides: Any) -> FailoverConfig:
    """Return a `FailoverConfig` whose retries never sleep, for tests.

    Backoff between retries of the same provider is zero (``backoff_base_s`` and
    ``backoff_max_s`` are 0.0), so a test that fails over or retries never waits on a timer;
    a ``Retry-After`` answer is still honoured (bounded by ``max_retry_after_s``). Every other
    field keeps its production default unless overridden.

    Args:
        **overrides: Any `FailoverConfig` field, e.g. ``max_attempts=2``; passing
            ``backoff_base_s``/``backoff_max_s`` replaces the zeros.

    Returns:
        A new `FailoverConfig`.

    Example:
        >>> no_backoff(max_attempts=2).backoff_max_s
        0.0
    """
    fields: dict[str, Any] = {"backoff_base_s": 0.0, "backoff_max_s": 0.0}
    fields.update(overrides)
    return FailoverConfig(**fields)
