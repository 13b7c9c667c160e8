"""What every fold shares: the projection protocol and the guards on stored numbers.

Non-finite numbers never enter a fold's state (JSON cannot store them, so a live fold that
accepted them would disagree with its replay): a latency that is negative or not finite
counts as ``0.0``, a cost that is not finite counts as unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from routeledger.events._events import (
    Event,
)

__all__ = ["Handler", "Projection"]

Handler = Callable[[Any], None]
"""A fold's handler of one event type."""


class Projection(Protocol):
    """Anything that folds events: the store's replay and the log writer feed it in order."""

    def apply(self, position: int, event: Event) -> None:
        """Fold one event, stored at ``position`` of the log, into the state."""


def _latency(value: float) -> float:
    # NaN fails both comparisons, so it lands on 0.0 too.
    return value if 0.0 <= value < math.inf else 0.0


def _cost(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
