"""Provider-wide rate limits: which provider asked to be left alone, and until when.

A ``Retry-After`` (or a rate-limit reset header standing in for one) speaks for the whole
provider, not for the one request that received it: every request sent to that provider
before the time it names would be refused too, and each refusal counts towards opening its
circuit. So a rate-limited attempt marks its provider *rate-limited until T* with one
``provider.rate_limited`` event, and the router then leaves the provider out of every
decision until T (``route.decided`` says why), or, when no other provider can take a
request, has the request wait for it within its deadline (a :class:`Backoff`).

The state is folded from those events only (:meth:`RateLimitMarks.apply`), so the live router,
a runtime restarted on the log (:func:`~routeledger.actors._resume.plan_resume` hands over
the events :class:`~routeledger.events.RoutingProjection` kept) and the simulation agree.
Times are wall-clock Unix seconds (the events' clock): the only time several runtimes
sharing a log have in common.

The provider's *own* word is kept here; the runtime's pacing lives beside it: the rpm/tpm
buckets (:mod:`~routeledger.actors._buckets`, which the same answers' ``remaining`` headers
correct) and the rest of each key of a provider with several
(:mod:`~routeledger.actors._keys`: there a 429 rests its key, not the provider, so no mark is
made). Another source of "not before T" for a whole provider builds the event here and keeps
:meth:`RateLimitMarks.wait` as the one question the router asks. The requests that waited
for a mark are not paced: they all ask again when it ends, and those the provider still
refuses mark it again (configured ``rpm``/``tpm`` buckets admit them one by one).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from routeledger.events import ProviderRateLimited, ProviderUnavailable, RateLimited

if TYPE_CHECKING:
    from routeledger.actors._messages import Outcome

__all__ = ["MAX_MARK_S", "RateLimitMarks"]

MAX_MARK_S = 3600.0
"""The longest a provider is marked rate-limited by one answer: a header asking for days
(a bug or a hostile proxy) must not take a provider out of service for days."""


class RateLimitMarks:
    """Each provider's "rate-limited until" time, folded from ``provider.rate_limited``.

    Owned by one :class:`~routeledger.actors.Router` (called from one thread at a time), so
    it takes no lock.
    """

    __slots__ = ("_until", "latest")

    def __init__(self, events: Iterable[ProviderRateLimited] = ()) -> None:
        self._until: dict[str, float] = {}
        self.latest = float("-inf")
        """The latest time any provider is marked until: past it, no provider is marked
        (the router's check of every candidate is skipped)."""
        for event in events:
            self.apply(event)

    def apply(self, event: ProviderRateLimited) -> None:
        """Fold one event: the later of the two times wins (so order does not matter)."""
        if event.until > self._until.get(event.provider, float("-inf")):
            self._until[event.provider] = event.until
            self.latest = max(self.latest, event.until)

    def until(self, provider: str) -> float | None:
        """Return the wall-clock time ``provider`` is rate-limited until, if ever marked."""
        return self._until.get(provider)

    def wait(self, provider: str, now: float) -> float:
        """Return how many seconds ``provider`` is still rate-limited at wall time ``now``."""
        until = self._until.get(provider)
        return 0.0 if until is None or until <= now else until - now

    @staticmethod
    def marked(outcome: Outcome, now: float) -> ProviderRateLimited | None:
        """Return the event an attempt's outcome calls for (a refusal that says how long).

        A 429, and a 503 with ``Retry-After`` (RFC 9110: how long the service expects to be
        unavailable), speak for the whole provider. The wait is taken from the error's
        ``retry_after_s`` (``Retry-After``, ``retry-after-ms`` or a reset header), capped at
        :data:`MAX_MARK_S`.
        """
        error = outcome.error
        says_wait = isinstance(error, RateLimited) or (
            isinstance(error, ProviderUnavailable) and error.status == 503
        )
        if not says_wait or error is None or error.retry_after_s is None:
            return None
        wait = min(max(0.0, error.retry_after_s), MAX_MARK_S)
        if wait <= 0:
            return None
        return ProviderRateLimited(
            provider=outcome.provider,
            until=now + wait,
            retry_after_s=wait,
            request_id=outcome.request_id,
            ts=now,
        )
