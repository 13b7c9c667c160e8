"""The spend fold: what each configured budget has spent in its current UTC period.

:class:`BudgetProjection` folds, like every projection, each event once in order:

- ``config.applied`` sets the budgets being counted (their definitions are in the event's
  summary). A budget keeps what it spent while its definition stays the same; a new or
  changed one starts from nothing, so a budget counts spend from when it is configured;
- ``request.received`` notes the tags (metadata) of requests in flight while a budget is
  scoped by a tag, ``request.completed`` / ``request.failed`` / ``request.rejected`` forget
  them;
- ``attempt.succeeded`` adds the attempt's cost, as the event carries it (``None``: an
  unpriced model, nothing), to every budget covering the attempt, after moving a budget
  whose period has ended on to the attempt's period (spent back to zero);
- ``budget.exceeded`` and ``budget.reset`` mark and clear a budget's announced excess, so
  that each is recorded once per period, across restarts too.

The live runtime runs this same fold over the events it records (the router's
:class:`~routeledger.actors._budgets.BudgetGuard`), so the spend routing reads and the spend
``replay`` shows are the same figures. Periods are UTC calendar hours, days and months of
the events' ``ts``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from routeledger.events._config import BudgetConfig
from routeledger.events._events import (
    AttemptSucceeded,
    BudgetLimitReached,
    BudgetReset,
    ConfigurationApplied,
    Event,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RequestRejected,
)
from routeledger.events._fold import Handler

__all__ = [
    "BudgetProjection",
    "BudgetSpend",
    "BudgetState",
    "BudgetStatus",
    "period_start",
]


def period_start(period: str, ts: float) -> float:
    """Return the start (Unix seconds) of the UTC ``period`` (hour, day, month) holding ``ts``."""
    if period == "hour":
        return float(math.floor(ts / 3600.0) * 3600)
    if period == "day":
        return float(math.floor(ts / 86400.0) * 86400)
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()


class BudgetSpend(msgspec.Struct, kw_only=True):
    """One budget's fold state: its definition, its period's start and what it spent."""

    config: BudgetConfig
    start: float | None = None
    spent: float = 0.0
    exceeded_start: float | None = None
    """The period whose excess was recorded (``budget.exceeded``); ``None`` when none is."""


class BudgetState(msgspec.Struct, frozen=True, kw_only=True):
    """The spend fold's state as plain data (stored in snapshots)."""

    budgets: list[BudgetSpend] = []
    tags: dict[str, dict[str, str]] = {}
    latest_ts: float | None = None


class BudgetStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What a budget has spent and has left in the period holding ``now``."""

    name: str
    period: str
    period_start: float
    limit: float
    spent: float
    remaining: float
    exceeded: bool
    on_exceeded: str


class BudgetProjection:
    """Fold spend per configured budget and UTC period."""

    def __init__(self) -> None:
        self.budgets: dict[str, BudgetSpend] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.latest_ts: float | None = None
        """The ``ts`` of the latest event this fold read: "now" for :meth:`status`."""
        self._tagged = False
        # The composite projection calls these handlers directly, not apply(): each one
        # notes the event's time itself.
        self.handlers: dict[type[Event], Handler] = {
            event_type: self._timed(handler)
            for event_type, handler in (
                (ConfigurationApplied, self._on_config),
                (RequestReceived, self._on_received),
                (RequestCompleted, self._on_ended),
                (RequestFailed, self._on_ended),
                (RequestRejected, self._on_ended),
                (AttemptSucceeded, self._on_succeeded),
                (BudgetLimitReached, self._on_exceeded),
                (BudgetReset, self._on_reset),
            )
        }

    def _timed(self, handler: Handler) -> Handler:
        def handle(event: Any) -> None:
            self.latest_ts = event.ts
            handler(event)

        return handle

    def apply(self, position: int, event: Event) -> None:
        """Fold one event (``position`` is not needed: the order is)."""
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    # -- handlers ---------------------------------------------------------------------------

    def _on_config(self, event: ConfigurationApplied) -> None:
        raw: Any = event.summary.get("budgets") or []
        try:
            configs = msgspec.convert(raw, list[BudgetConfig])
        except msgspec.ValidationError:
            configs = []  # a summary from a newer version: count nothing rather than guess
        self.configure(configs)

    def configure(self, configs: list[BudgetConfig]) -> None:
        """Count ``configs`` from now on (unchanged budgets keep their spend)."""
        kept = {}
        for config in configs:
            old = self.budgets.get(config.name)
            kept[config.name] = (
                old if old is not None and old.config == config else BudgetSpend(config=config)
            )
        self.budgets = kept
        self._tagged = any(b.config.tag is not None for b in kept.values())
        if not self._tagged:
            self.tags.clear()

    def _on_received(self, event: RequestReceived) -> None:
        if self._tagged and event.metadata:
            self.tags[event.request_id] = dict(event.metadata)

    def _on_ended(self, event: RequestCompleted | RequestFailed | RequestRejected) -> None:
        if self.tags:
            self.tags.pop(event.request_id, None)

    def _on_succeeded(self, event: AttemptSucceeded) -> None:
        cost = event.cost
        if cost is None or not math.isfinite(cost) or not self.budgets:
            return
        metadata = self.tags.get(event.request_id, {})
        for spend in self.budgets.values():
            config = spend.config
            if config.covers(event.provider, event.model) and config.covers_request(metadata):
                start = period_start(config.period, event.ts)
                if spend.start is None or start > spend.start:
                    spend.start, spend.spent = start, 0.0
                spend.spent += cost

    def _on_exceeded(self, event: BudgetLimitReached) -> None:
        spend = self.budgets.get(event.budget)
        if spend is not None:
            spend.exceeded_start = event.period_start

    def _on_reset(self, event: BudgetReset) -> None:
        spend = self.budgets.get(event.budget)
        if spend is not None:
            spend.exceeded_start = None

    # -- reading ----------------------------------------------------------------------------

    def spent(self, name: str, now: float) -> float:
        """Return what budget ``name`` spent in the period holding ``now`` (0 in a new one)."""
        spend = self.budgets[name]
        if spend.start is None or period_start(spend.config.period, now) > spend.start:
            return 0.0
        return spend.spent

    def status(self, now: float | None = None) -> list[BudgetStatus]:
        """Return every budget's figures in the period holding ``now``, sorted by name.

        Without ``now``, as of the latest event folded (a replay shows the log's end).
        """
        if now is None:
            now = self.latest_ts if self.latest_ts is not None else 0.0
        out = []
        for name in sorted(self.budgets):
            config = self.budgets[name].config
            spent = self.spent(name, now)
            out.append(
                BudgetStatus(
                    name=name,
                    period=config.period,
                    period_start=period_start(config.period, now),
                    limit=config.limit,
                    spent=spent,
                    remaining=max(0.0, config.limit - spent),
                    exceeded=spent >= config.limit,
                    on_exceeded=config.on_exceeded,
                )
            )
        return out

    # -- state ------------------------------------------------------------------------------

    def state(self) -> BudgetState:
        """Return the fold state (a copy)."""
        return BudgetState(
            budgets=[
                BudgetSpend(
                    config=s.config, start=s.start, spent=s.spent, exceeded_start=s.exceeded_start
                )
                for s in self.budgets.values()
            ],
            tags={k: dict(v) for k, v in self.tags.items()},
            latest_ts=self.latest_ts,
        )

    def load_state(self, state: BudgetState) -> None:
        """Continue from ``state``."""
        self.budgets = {
            s.config.name: BudgetSpend(
                config=s.config, start=s.start, spent=s.spent, exceeded_start=s.exceeded_start
            )
            for s in state.budgets
        }
        self._tagged = any(b.config.tag is not None for b in self.budgets.values())
        self.tags = {k: dict(v) for k, v in state.tags.items()}
        self.latest_ts = state.latest_ts

    @classmethod
    def from_state(cls, state: BudgetState) -> BudgetProjection:
        """Return a fold continuing from ``state``."""
        fold = cls()
        fold.load_state(state)
        return fold
