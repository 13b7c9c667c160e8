"""The ``routeledger ab`` command: A/B statistics read from an event log.

``routeledger ab --db FILE [--test NAME] [--metric NAME] [--json]`` streams the log once and
folds every A/B outcome (``ab.metrics_recorded``) into :class:`~routeledger._abstats.ABTestStats`:
intervals per variant, the difference with its always-valid interval and a verdict only when
the sequential test supports one. The time to first token and the output tokens of a request
come from its successful attempt, matched by request id while the request is in flight.

Seed figures given when a test was set up are aggregates without a spread: the statistics
leave them out (``replay`` still shows them).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

from routeledger._abstats import METRICS, ABComparison, ABTestStats, Observation

if TYPE_CHECKING:
    from routeledger.events import Event

__all__ = ["ABStatsFold", "comparison_lines", "register", "run", "verdict_text"]

_MAX_PENDING = 65_536
"""Requests assigned a variant whose outcome is not logged yet, at most (the oldest is
forgotten first), so a log of requests that never finished cannot grow memory."""


class ABStatsFold:
    """Fold an event log into :class:`ABTestStats` per A/B test, in flat memory.

    A test created again with a different definition starts afresh, as in the A/B
    projection; outcomes of a test never created are kept with unknown providers.

    Args:
        metric: the metric compared (a key of :data:`~routeledger._abstats.METRICS`).
        peek_every: how often the sequential test looks (1: after every outcome).
    """

    def __init__(self, *, metric: str = "error_rate", peek_every: int = 1) -> None:
        from routeledger.events import (
            ABMetricsRecorded,
            ABTestCreated,
            ABVariantAssigned,
            AttemptSucceeded,
        )

        self.metric = metric
        self.peek_every = peek_every
        self.tests: dict[str, ABTestStats] = {}
        self._definitions: dict[str, tuple[str, str, float, str | None]] = {}
        self._pending: dict[str, tuple[float | None, int | None]] = {}
        self._handlers: dict[type[Any], Any] = {
            ABTestCreated: self._on_created,
            ABVariantAssigned: self._on_assigned,
            AttemptSucceeded: self._on_attempt,
            ABMetricsRecorded: self._on_recorded,
        }

    def apply(self, position: int, event: Event) -> None:
        """Fold one event (others than A/B events and successful attempts are ignored)."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_created(self, event: Any) -> None:
        definition = (event.variant_a, event.variant_b, event.split_ratio, event.sticky_key)
        if self._definitions.get(event.name) == definition:
            return  # a restarted runtime set up the same test: it continues
        self._definitions[event.name] = definition
        self.tests[event.name] = self._new(event.name, {"A": event.variant_a, "B": event.variant_b})

    def _new(self, name: str, providers: dict[str, str]) -> ABTestStats:
        return ABTestStats(name, providers, metric=self.metric, peek_every=self.peek_every)

    def _on_assigned(self, event: Any) -> None:
        if event.request_id is None:
            return
        if len(self._pending) >= _MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        self._pending[event.request_id] = (None, None)

    def _on_attempt(self, event: Any) -> None:
        if event.request_id in self._pending:
            self._pending[event.request_id] = (event.ttft_ms, event.output_tokens)

    def _on_recorded(self, event: Any) -> None:
        ttft, tokens = (None, None)
        if event.request_id is not None:
            ttft, tokens = self._pending.pop(event.request_id, (None, None))
        stats = self.tests.get(event.test)
        if stats is None:
            stats = self.tests[event.test] = self._new(event.test, {})
        stats.add(
            event.variant,
            Observation(
                latency_ms=event.latency_ms,
                cost=event.cost,
                error=event.error,
                ttft_ms=ttft,
                output_tokens=tokens,
            ),
        )

    def comparisons(self, test: str | None = None) -> list[ABComparison]:
        """Return the comparison of ``test`` (every test, sorted by name, when ``None``)."""
        from routeledger.events import RequestError

        if test is not None and test not in self.tests:
            known = ", ".join(sorted(self.tests)) or "none"
            raise RequestError(f"unknown A/B test {test!r} (tests in the log: {known})")
        names = [test] if test is not None else sorted(self.tests)
        return [self.tests[name].comparison() for name in names]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ab`` sub-command."""
    metrics = "; ".join(f"{m.name}: {m.description}" for m in METRICS.values())
    p = subparsers.add_parser(
        "ab",
        help="A/B test statistics with intervals and an always-valid verdict",
        description=(
            "Read every A/B outcome of an event log and print, per variant, requests, error "
            "rate, latency mean, p50 and p95 and cost mean with 95%% intervals, the "
            "difference of the chosen metric with its always-valid interval, and a verdict "
            "only when a sequential test (mSPRT) supports one."
        ),
        epilog=f"metrics: {metrics}".replace("%", "%%"),
    )
    p.add_argument(
        "--db", required=True, metavar="FILE", help="the SQLite event log or a postgresql:// URL"
    )
    p.add_argument("--test", metavar="NAME", help="only this test (default: every test)")
    p.add_argument(
        "--metric",
        default="error_rate",
        choices=sorted(METRICS),
        metavar="NAME",
        help=f"metric to compare: {', '.join(METRICS)} (default: error_rate)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the statistics; return the exit status."""
    import msgspec

    from routeledger._replay import open_readonly

    fold = ABStatsFold(metric=args.metric)
    store = open_readonly(args.db)
    try:
        store.replay(fold, strict=False)
    finally:
        store.close()
    comparisons = fold.comparisons(args.test)
    if args.json:
        sys.stdout.write(msgspec.json.encode(comparisons).decode() + "\n")
        return 0
    if not comparisons:
        print("no A/B tests in the log")
    for i, comparison in enumerate(comparisons):
        if i:
            print()
        print("\n".join(comparison_lines(comparison)))
    return 0


def _num(value: float | None, unit: str = "", digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    text = f"{value:.{digits}g}"
    return f"{text} {unit}" if unit else text


def _ci(ci: tuple[float, float] | None, unit: str = "", digits: int = 4) -> str:
    if ci is None:
        return ""
    return f" [{_num(ci[0], digits=digits)}, {_num(ci[1], unit, digits)}]"


def comparison_lines(c: ABComparison) -> list[str]:
    """Return the text lines of one comparison (provider names escaped for a terminal)."""
    from routeledger.events import escape_controls

    unit = METRICS[c.metric].unit
    lines = [f"A/B test {escape_controls(c.test)}: metric {c.metric} ({c.metric_description})"]
    for v in c.variants:
        lines.append(
            f"  {v.variant} {escape_controls(v.provider) or '?'}: {v.requests} requests, "
            f"error rate {v.error_rate:.1%}"
            f" [{v.error_rate_ci[0]:.1%}, {v.error_rate_ci[1]:.1%}]"
        )
        lines.append(
            f"      latency mean {_num(v.latency_mean_ms, 'ms')}{_ci(v.latency_mean_ci, 'ms')}"
            f", p50 {_num(v.latency_p50_ms, 'ms')}{_ci(v.latency_p50_ci, 'ms')}"
            f", p95 {_num(v.latency_p95_ms, 'ms')}{_ci(v.latency_p95_ci, 'ms')}"
        )
        lines.append(
            f"      cost mean {_num(v.cost_mean)}{_ci(v.cost_mean_ci)}; "
            f"{c.metric} {_num(v.metric, unit)}{_ci(v.metric_ci, unit)} "
            f"({v.metric_requests} measured)"
        )
    lines.append(
        f"  difference B - A: {_num(c.difference, unit)}{_ci(c.difference_ci, unit)} "
        f"(always-valid {1 - c.alpha:.0%} interval)"
    )
    lines.append(f"  verdict: {verdict_text(c)}")
    lines.append(f"  method: {c.method}")
    return lines


def verdict_text(c: ABComparison) -> str:
    """Return the verdict of ``c`` as a sentence, with the evidence it rests on."""
    if c.winner is not None:
        return f"{c.verdict} on {c.metric} (always-valid p {_p(c.p_value)})"
    if not c.judged:
        more = f"each variant needs {c.min_requests} measured requests first"
        if c.requests_needed is not None:
            more += f" (about {c.requests_needed} more at the current split)"
    elif c.requests_needed is not None:
        more = f"about {c.requests_needed} more requests if the difference holds"
    else:
        more = "no difference seen yet to estimate the requests needed"
    return f"not yet significant (always-valid p {_p(c.p_value)}); {more}"


def _p(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"= {p:.2g}"
