"""Requests and tokens per minute: a token bucket per provider (and per model) for routing.

A provider (or one of its models) configured with ``rpm`` and/or ``tpm`` gets one bucket per
limit. A bucket holds at most the limit and refills continuously at the limit per minute, as
OpenAI and Anthropic describe their own limits, so the runtime's view and the provider's agree
on what a steady rate below the limit is. A request takes one request and its estimated
tokens (prompt estimate plus the most it may output) when its slot is reserved; when the
attempt ends with a known usage the difference to the estimate is given back.

The router consults :class:`RateLimits` as a filter: a candidate without headroom for the
request is skipped (its reason is in ``route.decided``), and when no candidate has headroom
the answer is a wait until the first one has (within the request's deadline). The providers'
own headers (``x-ratelimit-remaining-*``, ``anthropic-ratelimit-*-remaining``) correct a
bucket down to what the provider says is left: another client on the same key spends it too.

State from the log: a runtime started on an existing log refills its buckets from the
attempts recorded in the last minute (:meth:`RateLimits.resume`), so a restart does not
grant a fresh minute's burst. This is an approximation: the attempts' estimated tokens are
charged, not the corrections the headers made live.

Several runtimes on one log: the other runtimes' attempts are charged here too
(:meth:`RateLimits.charge_peers`, told by the log follower through the supervisor, off the
request path), so the limit holds in total across the runtimes, as the provider counts it.
An ``attempt.started`` says what its runtime charged (``tokens``); one from a runtime that
does not say (an older version) is charged the most the model may output (the prompt is not
recorded), and its ``attempt.succeeded`` gives back what that estimate charged over the
usage recorded. The charge is as late as the fold (a commit plus a poll, or a notification):
a burst of several runtimes within that window may pass the limit by what each took.

Only the router calls :meth:`RateLimits.headroom`, :meth:`RateLimits.take`,
:meth:`RateLimits.settle` and :meth:`RateLimits.charge_peers` (one thread at a time, under
the desk's lock); header corrections arrive from the calling threads through
:meth:`RateLimits.report`, a thread-safe append that the next decision applies.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from routeledger.events import AttemptFailed, AttemptStarted, AttemptSucceeded

if TYPE_CHECKING:
    from routeledger.events import ModelSpec, ProviderConfig

__all__ = [
    "HeaderReader",
    "Headroom",
    "RateLimits",
    "RateReport",
    "TokenBucket",
    "parse_rate_headers",
    "recent_attempts",
]

MINUTE_S = 60.0

PEER_ATTEMPTS_KEPT = 4096
"""How many other runtimes' attempts in flight are remembered (to settle their estimate):
a bound on memory when their ends are never seen (a runtime killed mid-call)."""


class TokenBucket:
    """At most ``capacity`` units, refilled at ``capacity`` per minute; starts full.

    Times are monotonic seconds. A request larger than the whole bucket may go once the
    bucket is full (it is charged the capacity), so an oversized request waits, but is never
    refused for ever.
    """

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, capacity: float, now: float) -> None:
        self.capacity = float(capacity)
        self.rate = self.capacity / MINUTE_S
        self.level = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def available(self, now: float) -> float:
        """Return the units available now."""
        self._refill(now)
        return self.level

    def wait_for(self, amount: float, now: float) -> float:
        """Return the seconds until ``amount`` units are available (0 when they are now)."""
        self._refill(now)
        need = min(amount, self.capacity) - self.level
        if need <= 1e-9:
            return 0.0
        return need / self.rate if self.rate > 0 else math.inf

    def take(self, amount: float, now: float) -> None:
        """Spend ``amount`` units (the level may go below zero: it is then owed)."""
        self._refill(now)
        self.level -= min(amount, self.capacity)

    def give(self, amount: float, now: float) -> None:
        """Give ``amount`` units back (an estimate that was too high)."""
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def cap(self, remaining: float, now: float) -> None:
        """Lower the level to ``remaining`` when the provider says that is all that is left."""
        self._refill(now)
        self.level = min(self.level, float(remaining))


class Headroom(NamedTuple):
    """Whether a provider can take a request now; else how long until it can, and why not."""

    wait_s: float
    reason: str
    share: float
    """The smallest share of any of its buckets left after the request (1.0: no limit)."""


class RateReport(NamedTuple):
    """What a provider's response headers said is left (``None``: not said)."""

    requests: int | None
    tokens: int | None


_OPENAI_HEADERS = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")
_ANTHROPIC_HEADERS = (
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-input-tokens-remaining",
)


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        return None
    return n if n >= 0 else None


def parse_rate_headers(headers: Mapping[str, str]) -> RateReport | None:
    """Return what a response's rate-limit headers say is left, or ``None`` if none do.

    OpenAI sends ``x-ratelimit-remaining-requests`` and ``-tokens``; Anthropic sends
    ``anthropic-ratelimit-requests-remaining``, ``-tokens-remaining`` and, for input tokens
    alone, ``-input-tokens-remaining`` (the smaller of the two token figures is kept).
    Values that are not whole numbers are ignored.
    """
    requests = _count(headers.get(_OPENAI_HEADERS[0]))
    tokens = _count(headers.get(_OPENAI_HEADERS[1]))
    if requests is None:
        requests = _count(headers.get(_ANTHROPIC_HEADERS[0]))
    counts = [
        c
        for c in (tokens, *(_count(headers.get(h)) for h in _ANTHROPIC_HEADERS[1:]))
        if c is not None
    ]
    tokens = min(counts) if counts else None
    if requests is None and tokens is None:
        return None
    return RateReport(requests, tokens)


class _Limits:
    """The buckets of one scope (a provider, or one model of it)."""

    __slots__ = ("label", "requests", "tokens")

    def __init__(self, label: str, rpm: int | None, tpm: int | None, now: float) -> None:
        self.label = label
        self.requests = TokenBucket(rpm, now) if rpm else None
        self.tokens = TokenBucket(tpm, now) if tpm else None

    def check(self, tokens: int, now: float) -> tuple[float, str, float]:
        wait, reason, share = 0.0, "", 1.0
        for bucket, amount, unit in ((self.requests, 1, "rpm"), (self.tokens, tokens, "tpm")):
            if bucket is None:
                continue
            w = bucket.wait_for(amount, now)
            share = min(share, max(0.0, bucket.level - amount) / bucket.capacity)
            if w > wait:
                wait = w
                reason = (
                    f"{self.label}{unit} {bucket.capacity:g} reached "
                    f"({max(0.0, bucket.level):.0f} left, {amount} needed); headroom in {w:.3g} s"
                )
        return wait, reason, share

    def take(self, tokens: int, now: float) -> None:
        if self.requests is not None:
            self.requests.take(1, now)
        if self.tokens is not None:
            self.tokens.take(tokens, now)


class RateLimits:
    """The rpm/tpm buckets of every provider and model that has limits configured.

    Args:
        providers: The configured providers.
        now: The monotonic time the buckets start (full) at.
    """

    def __init__(self, providers: Iterable[ProviderConfig], now: float) -> None:
        self._scopes: dict[str, list[_Limits]] = {}
        self._models: dict[tuple[str, str], _Limits] = {}
        for p in providers:
            scopes = []
            if p.rpm or p.tpm:
                scopes.append(_Limits("", p.rpm, p.tpm, now))
            if scopes:
                self._scopes[p.name] = scopes
            for m in p.models:
                if m.rpm or m.tpm:
                    self._models[(p.name, m.name)] = _Limits(f"model {m.name}: ", m.rpm, m.tpm, now)
        self._reports: deque[tuple[str, RateReport, float]] = deque()
        self._peer_attempts: dict[tuple[str, int], tuple[str, str, int]] = {}
        """Other runtimes' attempts charged and not ended: (provider, model, tokens)."""

    @property
    def active(self) -> bool:
        """Return whether any limit is configured (else the router never asks)."""
        return bool(self._scopes or self._models)

    def limited(self, provider: str) -> bool:
        """Return whether ``provider`` or any of its models has a limit."""
        return provider in self._scopes or any(p == provider for p, _ in self._models)

    def _limits(self, provider: str, model: ModelSpec) -> list[_Limits]:
        scopes = self._scopes.get(provider, [])
        m = self._models.get((provider, model.name))
        return [*scopes, m] if m is not None else scopes

    def headroom(self, provider: str, model: ModelSpec, tokens: int, now: float) -> Headroom:
        """Return whether ``provider`` can take a request of ``tokens`` on ``model`` now."""
        self._apply_reports(now)
        wait, reason, share = 0.0, "", 1.0
        for limits in self._limits(provider, model):
            w, why, s = limits.check(tokens, now)
            share = min(share, s)
            if w > wait:
                wait, reason = w, why
        return Headroom(wait, reason, share)

    def take(self, provider: str, model: ModelSpec, tokens: int, now: float) -> None:
        """Charge a request of ``tokens`` (its slot was just reserved)."""
        for limits in self._limits(provider, model):
            limits.take(tokens, now)

    def settle(
        self, provider: str, model: ModelSpec, estimated: int, used: int, now: float
    ) -> None:
        """Give back what a request's estimate charged over the tokens it used."""
        if used >= estimated:
            return
        for limits in self._limits(provider, model):
            if limits.tokens is not None:
                limits.tokens.give(estimated - used, now)

    def _named(self, provider: str, model: str) -> list[_Limits]:
        scopes = self._scopes.get(provider, [])
        m = self._models.get((provider, model))
        return [*scopes, m] if m is not None else scopes

    def charge_peers(
        self, events: Iterable[object], now: float, estimate: Callable[[str, str], int]
    ) -> None:
        """Charge other runtimes' attempts (their events, folded from a shared log).

        An ``attempt.started`` takes one request and its ``tokens`` (``estimate(provider,
        model)`` when it does not say: an older runtime's); its ``attempt.succeeded`` gives
        back what was charged over the usage it records, as :meth:`settle` does for this
        runtime's own attempts.
        """
        pending = self._peer_attempts
        for event in events:
            if isinstance(event, AttemptStarted):
                scopes = self._named(event.provider, event.model)
                if not scopes:
                    continue
                tokens = event.tokens or estimate(event.provider, event.model)
                for limits in scopes:
                    limits.take(tokens, now)
                if len(pending) >= PEER_ATTEMPTS_KEPT:
                    del pending[next(iter(pending))]
                pending[(event.request_id, event.attempt)] = (event.provider, event.model, tokens)
            elif isinstance(event, AttemptSucceeded | AttemptFailed):
                charged = pending.pop((event.request_id, event.attempt), None)
                if charged is None or not isinstance(event, AttemptSucceeded):
                    continue
                provider, model, tokens = charged
                used = event.input_tokens + event.output_tokens
                if used < tokens:
                    for limits in self._named(provider, model):
                        if limits.tokens is not None:
                            limits.tokens.give(tokens - used, now)

    def report(self, provider: str, report: RateReport, now: float) -> None:
        """Note what a provider's headers said is left (any thread; applied at the next
        decision)."""
        if provider in self._scopes:
            self._reports.append((provider, report, now))

    def _apply_reports(self, now: float) -> None:
        while self._reports:
            provider, report, at = self._reports.popleft()
            for limits in self._scopes.get(provider, []):
                if report.requests is not None and limits.requests is not None:
                    limits.requests.cap(report.requests, max(at, limits.requests.updated))
                if report.tokens is not None and limits.tokens is not None:
                    limits.tokens.cap(report.tokens, max(at, limits.tokens.updated))

    def resume(self, attempts: Iterable[tuple[str, str, int, float]], now: float) -> None:
        """Charge attempts recorded before a restart: (provider, model name, tokens, monotonic
        time), so that the buckets stand where the last minute's traffic left them.

        Every bucket is taken to have been full a minute before ``now``; the attempts of that
        minute are charged in time order, each after the refill up to its time.
        """
        start = now - MINUTE_S
        for limits in [*(s for v in self._scopes.values() for s in v), *self._models.values()]:
            for bucket in (limits.requests, limits.tokens):
                if bucket is not None:
                    bucket.level, bucket.updated = bucket.capacity, start
        for provider, model, tokens, at in sorted(attempts, key=lambda a: a[3]):
            if at < start:
                continue
            for limits in self._named(provider, model):
                limits.take(tokens, at)


class HeaderReader:
    """Reads one provider's rate-limit headers into its buckets (any calling thread)."""

    __slots__ = ("_limits", "_monotonic", "_provider")

    def __init__(self, limits: RateLimits, provider: str, monotonic: Callable[[], float]) -> None:
        self._limits = limits
        self._provider = provider
        self._monotonic = monotonic

    def __call__(self, headers: Mapping[str, str]) -> None:
        report = parse_rate_headers(headers)
        if report is not None:
            self._limits.report(self._provider, report, self._monotonic())


RESUME_SCAN_EVENTS = 50_000
"""How far back (in events) a start looks for the last minute's attempts: a bound on the
start's cost; traffic of more events a minute is resumed only in part."""


def recent_attempts(
    events: Iterable[object], *, wall_now: float, mono_now: float
) -> list[tuple[str, str, int, float]]:
    """Return the attempts of the last minute in ``events``, for :meth:`RateLimits.resume`.

    Each is (provider, model, tokens, monotonic time): the time is the event's wall-clock
    ``ts`` moved onto the monotonic clock; the tokens are the usage its success recorded, or
    else what its start says it charged (``tokens``; none in a log written before that field:
    such an attempt that failed, or is still in flight, counts as a request of no tokens).
    """
    horizon = wall_now - MINUTE_S
    started: dict[tuple[str, int], tuple[str, str, int, float]] = {}
    used: dict[tuple[str, int], int] = {}
    for event in events:
        if isinstance(event, AttemptStarted) and event.ts >= horizon:
            started[(event.request_id, event.attempt)] = (
                event.provider,
                event.model,
                event.tokens,
                event.ts,
            )
        elif isinstance(event, AttemptSucceeded) and event.ts >= horizon:
            used[(event.request_id, event.attempt)] = event.input_tokens + event.output_tokens
    return [
        (provider, model, used.get(key, charged), mono_now - (wall_now - ts))
        for key, (provider, model, charged, ts) in started.items()
    ]
