"""Spend budgets in routing: which providers a request may use, and what each may spend.

:class:`BudgetGuard` belongs to one :class:`~routeledger.actors.Router` and is only called
from its thread. It runs the spend fold (:class:`~routeledger.events.BudgetProjection`) over
the events the router records, so what it reads is what ``replay`` folds from the log, and
it adds what it alone knows: the *reservations* of attempts in flight.

Concurrency: at decision time the chosen attempt reserves its estimated cost (prompt tokens
plus the most it may output) on every budget covering it; the reservation is released when
the attempt's outcome is recorded, and the ``attempt.succeeded`` event's actual cost is
folded in its place. A budget admits an attempt while its spend plus the reservations is
below its limit, so concurrent requests see each other's reservations, and a budget ends a
period over its limit by at most one attempt's cost (the last one admitted; more only when
actual costs exceed their estimates, the estimate of the prompt being approximate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from routeledger.events import (
    AttemptSucceeded,
    BudgetLimitReached,
    BudgetProjection,
    BudgetReset,
    BudgetState,
    Event,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RequestRejected,
    period_start,
)

if TYPE_CHECKING:
    from routeledger.events import BudgetConfig, BudgetStatus, ModelSpec, Request

__all__ = ["SPEND_EVENTS", "BudgetGuard", "BudgetVerdict"]

SPEND_EVENTS = frozenset(
    {
        AttemptSucceeded,
        BudgetLimitReached,
        BudgetReset,
        RequestCompleted,
        RequestFailed,
        RequestReceived,
        RequestRejected,
    }
)
"""The events the spend fold reads, but for ``config.applied``: a runtime counts its own
budgets, whatever another runtime sharing the log configured."""


class BudgetVerdict(NamedTuple):
    """What the budgets say of one decision's candidates."""

    dropped: dict[str, str]
    """Providers left out by an exceeded ``other_providers`` budget, and why."""
    refused: dict[str, str]
    """Exceeded ``refuse`` budgets covering the request, and why (non-empty: refuse it)."""
    near: dict[str, str]
    """Providers a budget nearing its limit covers (ranked after the others), and which."""


_CLEAR = BudgetVerdict({}, {}, {})


class BudgetGuard:
    """The budgets of one router: spend folded from its events, plus reservations."""

    def __init__(self, budgets: list[BudgetConfig], state: BudgetState | None = None) -> None:
        self.fold = BudgetProjection.from_state(state) if state is not None else BudgetProjection()
        self.fold.configure(list(budgets))
        self.active = bool(budgets)
        self.reserved: dict[str, float] = dict.fromkeys(self.fold.budgets, 0.0)
        self._holds: dict[tuple[str, int], tuple[list[str], float]] = {}

    def observe(self, events: list[Event]) -> None:
        """Fold the events the router records (the ones the spend fold reads)."""
        if self.active:
            for event in events:
                if type(event) in SPEND_EVENTS:
                    self.fold.apply(0, event)

    def _covering(self, request: Request, provider: str, model: str) -> list[BudgetConfig]:
        return [
            s.config
            for s in self.fold.budgets.values()
            if s.config.covers(provider, model) and s.config.covers_request(request.metadata)
        ]

    def _used(self, name: str, now: float) -> float:
        return self.fold.spent(name, now) + self.reserved.get(name, 0.0)

    def check(
        self, request: Request, candidates: list[str], specs: Mapping[str, ModelSpec], now: float
    ) -> BudgetVerdict:
        """Judge ``candidates`` (serving ``specs``) for ``request`` at wall time ``now``."""
        if not self.active:
            return _CLEAR
        dropped: dict[str, str] = {}
        refused: dict[str, str] = {}
        near: dict[str, str] = {}
        for name in candidates:
            for b in self._covering(request, name, specs[name].name):
                used = self._used(b.name, now)
                if used >= b.limit:
                    why = f"budget {b.name!r} exceeded ({used:.6g} of {b.limit:g} a {b.period})"
                    if b.on_exceeded == "refuse":
                        refused.setdefault(b.name, why)
                    else:
                        dropped.setdefault(name, why)
                elif used >= b.prefer_below * b.limit:
                    near.setdefault(name, b.name)
        return BudgetVerdict(dropped, refused, near)

    def hold(
        self, request: Request, attempt: int, provider: str, model: str, estimate: float | None
    ) -> None:
        """Reserve an attempt's estimated cost on the budgets covering it."""
        if not self.active:
            return
        names = [b.name for b in self._covering(request, provider, model)]
        amount = estimate or 0.0
        for name in names:
            self.reserved[name] += amount
        self._holds[(request.request_id, attempt)] = (names, amount)

    def release(self, request_id: str, attempt: int) -> None:
        """Release an attempt's reservation (its outcome is being recorded)."""
        held = self._holds.pop((request_id, attempt), None)
        if held is not None:
            names, amount = held
            for name in names:
                # max(): subtracting what was added can leave -1e-18 in floating point.
                self.reserved[name] = max(0.0, self.reserved[name] - amount)

    def release_request(self, request_id: str) -> None:
        """Release every reservation a request still holds (it ended)."""
        for key in [k for k in self._holds if k[0] == request_id]:
            self.release(*key)

    def announcements(self, now: float) -> list[Event]:
        """Return the ``budget.exceeded`` / ``budget.reset`` events now due (not yet folded)."""
        if not self.active:
            return []
        events: list[Event] = []
        for name, spend in self.fold.budgets.items():
            config = spend.config
            start = period_start(config.period, now)
            if spend.exceeded_start is not None and spend.exceeded_start < start:
                events.append(
                    BudgetReset(ts=now, budget=name, period=config.period, period_start=start)
                )
                continue
            spent = self.fold.spent(name, now)
            if spend.exceeded_start is None and spent >= config.limit:
                events.append(
                    BudgetLimitReached(
                        ts=now,
                        budget=name,
                        period=config.period,
                        period_start=start,
                        limit=config.limit,
                        spent=spent,
                    )
                )
        return events

    def status(self, now: float) -> list[BudgetStatus]:
        """Return every budget's figures at wall time ``now`` (reservations not included)."""
        return self.fold.status(now)
