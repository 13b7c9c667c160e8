"""The HTML report: one self-contained page of charts folded from an event log.

:class:`ReportFold` streams the log once into a fixed number of time buckets (the span comes
from the first and last events), so memory stays flat whatever the log's length: per bucket
and provider the attempts and failures, per bucket a latency histogram, per provider the
circuit state seen in each bucket; per provider and model the cost; the A/B statistics of
:mod:`routeledger._cmd_ab`. :func:`render_html` turns it into one HTML5 file with inline SVG
(see :mod:`routeledger._svg`) and inline CSS: nothing is fetched, so it opens offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from routeledger._cmd_ab import ABStatsFold, verdict_text
from routeledger._estimates import QuantileHistogram
from routeledger._svg import bar_chart, interval_chart, line_chart, timeline

if TYPE_CHECKING:
    from routeledger.events import Event

__all__ = ["BUCKETS", "ReportFold", "render_html"]

BUCKETS = 60
"""Time buckets across the log's span."""

_SEVERITY = {"": 0, "closed": 1, "half_open": 2, "open": 3, "failed": 4}


class _Provider:
    __slots__ = ("attempts", "cost", "failures", "state", "states", "transitions")

    def __init__(self) -> None:
        self.attempts = [0] * BUCKETS
        self.failures = [0] * BUCKETS
        self.states = [""] * BUCKETS
        """The worst circuit state seen in each bucket."""
        self.state = ""
        self.transitions = 0
        self.cost = 0.0


class ReportFold:
    """Fold an event log into the report's figures (a projection: ``apply(position, event)``).

    Args:
        start: the time of the first bucket's start (Unix seconds).
        end: the time of the last bucket's end (the last event's time).
    """

    def __init__(self, start: float, end: float) -> None:
        from routeledger.events import (
            AttemptFailed,
            AttemptSucceeded,
            CircuitStateChanged,
            ProviderFailed,
            RequestCompleted,
            RequestFailed,
            RequestReceived,
            RequestRejected,
        )

        self.start = start
        self.width = max((end - start) / BUCKETS, 1e-6)
        self.events = 0
        self.requests = 0
        self.completed = 0
        self.failed = 0
        self.rejected = 0
        self.providers: dict[str, _Provider] = {}
        self.latency = [QuantileHistogram() for _ in range(BUCKETS)]
        self.model_cost: dict[str, float] = {}
        self.unpriced = 0
        self.ab = ABStatsFold()
        self._handlers: dict[type[Any], Callable[[Any, int], None]] = {
            AttemptSucceeded: self._on_success,
            AttemptFailed: self._on_failure,
            CircuitStateChanged: self._on_circuit,
            ProviderFailed: self._on_provider_failed,
            RequestReceived: self._count("requests"),
            RequestCompleted: self._count("completed"),
            RequestFailed: self._count("failed"),
            RequestRejected: self._count("rejected"),
        }

    def _count(self, name: str) -> Callable[[Any, int], None]:
        def count(event: Any, bucket: int) -> None:
            setattr(self, name, getattr(self, name) + 1)

        return count

    def bucket(self, ts: float) -> int:
        """Return the bucket of time ``ts`` (clamped to the span)."""
        return min(max(int((ts - self.start) / self.width), 0), BUCKETS - 1)

    def apply(self, position: int, event: Event) -> None:
        """Fold one event."""
        self.events += 1
        self.ab.apply(position, event)
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event, self.bucket(event.ts))

    def _provider(self, name: str) -> _Provider:
        provider = self.providers.get(name)
        if provider is None:
            provider = self.providers[name] = _Provider()
        return provider

    def _on_success(self, event: Any, bucket: int) -> None:
        p = self._provider(event.provider)
        p.attempts[bucket] += 1
        if math.isfinite(event.latency_ms):
            self.latency[bucket].add(event.latency_ms)
        if event.cost is None or not math.isfinite(event.cost):
            self.unpriced += 1
            return
        p.cost += event.cost
        self.model_cost[event.model] = self.model_cost.get(event.model, 0.0) + event.cost

    def _on_failure(self, event: Any, bucket: int) -> None:
        from routeledger.events import CANCELLATIONS

        p = self._provider(event.provider)
        p.attempts[bucket] += 1
        if event.error not in CANCELLATIONS:  # the caller stopped it: not the provider's fault
            p.failures[bucket] += 1

    def _mark(self, p: _Provider, bucket: int, state: str) -> None:
        if _SEVERITY.get(state, 0) > _SEVERITY.get(p.states[bucket], 0):
            p.states[bucket] = state

    def _on_circuit(self, event: Any, bucket: int) -> None:
        p = self._provider(event.provider)
        self._fill(p, bucket)
        self._mark(p, bucket, event.from_state)
        self._mark(p, bucket, event.to_state)
        p.state = event.to_state
        p.transitions += 1

    def _on_provider_failed(self, event: Any, bucket: int) -> None:
        p = self._provider(event.provider)
        self._fill(p, bucket)
        self._mark(p, bucket, "failed")

    def _fill(self, p: _Provider, bucket: int) -> None:
        """Carry the last known state into the buckets since it was seen."""
        for i in range(bucket, -1, -1):
            if p.states[i]:
                break
        else:
            return
        for j in range(i + 1, bucket + 1):
            p.states[j] = p.state

    def finish(self) -> None:
        """Carry every provider's last state to the end of the span."""
        for p in self.providers.values():
            if p.state:
                self._fill(p, BUCKETS - 1)
            if any(p.attempts):
                # Circuits start closed: before the first transition (or without any), the
                # provider that was tried was closed.
                for i, state in enumerate(p.states):
                    if state:
                        break
                    p.states[i] = "closed"

    def labels(self) -> list[str]:
        """Return each bucket's start time, as UTC clock time (with the date over a day)."""
        span = self.width * BUCKETS
        form = "%H:%M:%S.%f" if span < 60 else "%H:%M:%S" if span < 86_400 else "%m-%d %H:%M"
        labels = [
            datetime.fromtimestamp(self.start + i * self.width, UTC).strftime(form)
            for i in range(BUCKETS)
        ]
        return [label[:-3] for label in labels] if span < 60 else labels


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #111827; background: #f9fafb; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; } h3 { font-size: 14px; }
section { background: #fff; border: 1px solid #e5e7eb; border-radius: 6px; padding: 12px;
          margin-bottom: 16px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
td, th { border-bottom: 1px solid #e5e7eb; padding: 3px 10px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.row { display: flex; flex-wrap: wrap; gap: 16px; }
.muted { color: #6b7280; font-size: 12px; }
.verdict { font-weight: bold; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f" [{_num(ci[0])}, {_num(ci[1])}]"


def render_html(fold: ReportFold, *, source: str) -> str:
    """Return the report page of ``fold`` (``source`` names the log in the title)."""
    labels = fold.labels()
    names = sorted(fold.providers)
    attempts = {n: [float(v) for v in fold.providers[n].attempts] for n in names}
    failures = {n: [float(v) for v in fold.providers[n].failures] for n in names}
    percentiles: dict[str, list[float | None]] = {}
    for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        percentiles[label] = [h.quantile(q) if h.n else None for h in fold.latency]
    first = datetime.fromtimestamp(fold.start, UTC).isoformat(timespec="seconds")
    last = datetime.fromtimestamp(fold.start + fold.width * BUCKETS, UTC).isoformat(
        timespec="seconds"
    )
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # No fetch of any kind: a strict policy makes the page provably offline.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        f"<title>routeledger report: {_e(source)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>routeledger report: {_e(source)}</h1>",
        f'<p class="muted">{fold.events} events from {_e(first)} to {_e(last)} (UTC), '
        f"in {BUCKETS} buckets of {_num(fold.width, 3)} s.</p>",
        '<section id="summary"><h2>Summary</h2><table>',
        "<tr><th>requests</th><th>completed</th><th>failed</th><th>rejected</th>"
        "<th>providers</th></tr>",
        f"<tr><td>{fold.requests}</td><td>{fold.completed}</td><td>{fold.failed}</td>"
        f"<td>{fold.rejected}</td><td>{len(names)}</td></tr></table>",
        "<table><tr><th>provider</th><th>attempts</th><th>failed</th><th>failure rate</th>"
        "<th>circuit changes</th><th>last state</th><th>cost</th></tr>",
    ]
    for n in names:
        p = fold.providers[n]
        total, failed = sum(p.attempts), sum(p.failures)
        rate = f"{failed / total:.1%}" if total else "-"
        out.append(
            f"<tr><td>{_e(n)}</td><td>{total}</td><td>{failed}</td><td>{rate}</td>"
            f"<td>{p.transitions}</td><td>{_e(p.state or 'closed')}</td>"
            f"<td>{_num(p.cost)}</td></tr>"
        )
    out.append("</table></section>")
    out += [
        '<section id="traffic"><h2>Requests and errors per provider over time</h2>',
        line_chart(attempts, labels, title="attempts per bucket", css_class="chart traffic"),
        line_chart(failures, labels, title="failed attempts per bucket", css_class="chart errors"),
        "</section>",
        '<section id="latency"><h2>Latency percentiles over time</h2>',
        line_chart(
            percentiles,
            labels,
            title="latency of successful attempts",
            unit="ms",
            css_class="chart latency",
        ),
        "</section>",
        '<section id="health"><h2>Health and circuit timeline</h2>',
        timeline(
            {n: fold.providers[n].states for n in names},
            labels,
            title="circuit state per provider",
            css_class="chart health",
        ),
        "</section>",
        '<section id="cost"><h2>Cost per provider and per model</h2><div class="row">',
        bar_chart(
            [(n, fold.providers[n].cost) for n in names],
            title="cost per provider",
            unit="$",
            css_class="chart cost-provider",
        ),
        bar_chart(
            sorted(fold.model_cost.items()),
            title="cost per model",
            unit="$",
            css_class="chart cost-model",
        ),
        f'</div><p class="muted">{fold.unpriced} successful attempts had no known cost '
        "(unpriced models) and are left out.</p></section>",
        '<section id="ab"><h2>A/B tests</h2>',
    ]
    comparisons = fold.ab.comparisons()
    if not comparisons:
        out.append('<p class="muted">No A/B tests in this log.</p>')
    for c in comparisons:
        out.append(f"<h3>{_e(c.test)}: {_e(c.metric)} ({_e(c.metric_description)})</h3>")
        out.append(
            "<table><tr><th>variant</th><th>provider</th><th>requests</th><th>error rate</th>"
            "<th>latency mean (ms)</th><th>p50</th><th>p95</th><th>cost mean</th></tr>"
        )
        for v in c.variants:
            out.append(
                f"<tr><td>{_e(v.variant)}</td><td>{_e(v.provider)}</td><td>{v.requests}</td>"
                f"<td>{v.error_rate:.1%} [{v.error_rate_ci[0]:.1%}, {v.error_rate_ci[1]:.1%}]"
                f"</td><td>{_num(v.latency_mean_ms)}{_ci(v.latency_mean_ci)}</td>"
                f"<td>{_num(v.latency_p50_ms)}{_ci(v.latency_p50_ci)}</td>"
                f"<td>{_num(v.latency_p95_ms)}{_ci(v.latency_p95_ci)}</td>"
                f"<td>{_num(v.cost_mean)}{_ci(v.cost_mean_ci)}</td></tr>"
            )
        out.append('</table><div class="row">')
        out.append(
            interval_chart(
                [(f"{v.variant} {v.provider}", v.error_rate, v.error_rate_ci) for v in c.variants]
                + [("B - A", c.difference, c.difference_ci)],
                title="error rate, 95% intervals; B - A always-valid",
                css_class="chart ab",
            )
        )
        out.append(
            interval_chart(
                [
                    (f"{v.variant} {v.provider}", v.latency_mean_ms, v.latency_mean_ci)
                    for v in c.variants
                ],
                title="latency mean, 95% intervals",
                unit="ms",
                css_class="chart ab",
            )
        )
        out.append("</div>")
        verdict = verdict_text(c)
        out.append(f'<p class="verdict">verdict: {_e(verdict)}</p>')
        out.append(f'<p class="muted">{_e(c.method)}</p>')
    out.append("</section></body></html>")
    return "\n".join(out) + "\n"
