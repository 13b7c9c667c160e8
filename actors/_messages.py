"""Tiny immutable values that travel between the caller, the actors and the simulation."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

# Folded from the log as well as live, so defined with the events; re-exported here.
from routeledger.events import ProviderStats

if TYPE_CHECKING:
    from routeledger.actors._budget import Budget
    from routeledger.events import (
        ModelSpec,
        ProviderError,
        Request,
        Requirements,
        Response,
        RouteResult,
        Usage,
    )

__all__ = ["Backoff", "Decision", "Outcome", "ProviderStats", "RequestEnded", "RouteQuery"]


class RouteQuery(NamedTuple):
    """Everything about one request that routing depends on, fixed for all its attempts."""

    request: Request
    requirements: Requirements | None = None
    preferred_provider: str | None = None
    pool: str | None = None
    ab_test: str | None = None


class RequestEnded(NamedTuple):
    """How a whole request ended; recorded with its last attempt (or alone).

    Exactly one of ``response`` and ``error`` is set. ``failed_providers`` lists, in order,
    the provider of every attempt that failed.
    """

    response: Response | None
    error: Exception | None
    attempts: int
    latency_ms: float
    failed_providers: tuple[str, ...] = ()


class Outcome(NamedTuple):
    """How one attempt ended, reported by the thread that made the call."""

    request_id: str
    attempt: int
    provider: str
    model: str
    latency_ms: float
    ts: float
    error: ProviderError | None = None
    usage: Usage | None = None
    cost: float | None = None
    ttft_ms: float | None = None
    stream: bool = False
    probe: bool = False
    """The attempt was a half-open probe of an open circuit."""
    key: int = 0
    """Which of the provider's API keys the attempt used (see ``actors._keys``)."""

    @property
    def ok(self) -> bool:
        """Return whether the attempt succeeded."""
        return self.error is None


class Backoff(NamedTuple):
    """The supervisor's answer when every candidate is waiting out a backoff or Retry-After:
    sleep ``seconds`` (holding no slot), then ask again."""

    seconds: float
    provider: str
    rate_limited: bool = False
    """Every candidate is at its rpm/tpm limit: the wait must fit the request's deadline."""


class Decision(NamedTuple):
    """The supervisor's answer to "where should this attempt go?": a reserved slot."""

    route: RouteResult
    model: ModelSpec
    budget: Budget
    attempt: int
    probe: bool = False
    key: int = 0
    """Which of the provider's API keys to send with (index; 0 with one key)."""
    spare_keys: int = 0
    """How many other keys of the provider were usable: a 429 or 401 retries with one."""
