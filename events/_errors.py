"""The error hierarchy of routeledger.

Every error routeledger raises derives from :class:`RouteledgerError`. Lower-level exceptions
(httpx, sqlite3, msgspec, tomllib) are mapped at the boundary where they occur and chained with
``raise ... from exc``; none of them reaches a caller unwrapped.

::

    RouteledgerError
    ├── ConfigError                     invalid configuration; lists every problem at once
    ├── RequestError                    the caller's request is invalid (never sent anywhere)
    ├── ProviderError                   one attempt against one provider failed
    │   ├── RateLimited                 429; .retry_after_s            retryable
    │   ├── QuotaExceeded               429 quota / spend limit        failover only
    │   ├── AuthenticationError         401 / 403                      failover only
    │   ├── BadRequest                  400 / 404 / 413 / 422          final everywhere
    │   │   ├── ContextLengthExceeded   over-long prompt               failover only (larger window)
    │   │   └── UnsupportedByProvider   400 unsupported parameter or value, 404 model not
    │   │                               found: this provider only      failover only
    │   ├── ProviderUnavailable         408 / 409 / 5xx / 529          retryable
    │   ├── ProviderConnectError        never sent: free to retry      retryable
    │   ├── ProviderTimeout             sent, no answer: maybe billed  retryable
    │   ├── ProtocolError               answer is not the expected shape   failover only
    │   ├── ProviderSaturated           the provider's budget is full  failover only
    │   ├── StreamInterrupted           a stream broke after its first chunk reached the caller
    │   │   └── StreamCancelled         the caller stopped reading (not the provider's fault)
    │   └── AttemptCancelled            stopped by a cancel or shutdown (not the provider's fault)
    ├── RoutingError                    no provider could serve the request
    │   ├── NoCapableProvider           every candidate was filtered out
    │   │   └── PromptTooLong           no configured model's context window holds the request
    │   ├── AllProvidersUnhealthy       every candidate's circuit is open
    │   ├── AllProvidersFailed          the attempts ran out; .attempts lists each failure
    │   ├── AllProvidersSaturated       every candidate's budget stayed full past the wait
    │   ├── BudgetExceeded              a spend budget covering the request is used up
    │   ├── DeadlineExceeded            the request's deadline passed
    │   ├── RequestCancelled            the caller cancelled the request (an asyncio task)
    │   └── RuntimeClosed               the runtime is closed, or closed before the request ended
    └── StoreError                      the event log failed
        ├── StoreLocked                 another writer held the database past the busy timeout
        ├── StoreFull                   the disk or the database size limit is full
        ├── StoreCorrupted              a stored row or the file cannot be read
        ├── SchemaVersionError          the file was written by a newer routeledger
        └── UnknownEventType            a stored event has a tag this version does not know

``retryable`` says whether the same provider may be tried again for the same request;
``failover`` says whether another provider may be tried. Both are properties of the type.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AllProvidersFailed",
    "AllProvidersSaturated",
    "AllProvidersUnhealthy",
    "AttemptCancelled",
    "AuthenticationError",
    "BadRequest",
    "BudgetExceeded",
    "ConfigError",
    "ContextLengthExceeded",
    "DeadlineExceeded",
    "NoCapableProvider",
    "PromptTooLong",
    "ProtocolError",
    "ProviderConnectError",
    "ProviderError",
    "ProviderSaturated",
    "ProviderTimeout",
    "ProviderUnavailable",
    "QuotaExceeded",
    "RateLimited",
    "RequestCancelled",
    "RequestError",
    "RouteledgerError",
    "RoutingError",
    "RuntimeClosed",
    "SchemaVersionError",
    "StoreCorrupted",
    "StoreError",
    "StoreFull",
    "StoreLocked",
    "StreamCancelled",
    "StreamInterrupted",
    "UnknownEventType",
    "UnsupportedByProvider",
]


class RouteledgerError(Exception):
    """Base of every error routeledger raises."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.request_id = request_id

    def __str__(self) -> str:
        where = []
        if self.provider:
            where.append(f"provider={self.provider}")
        if self.request_id:
            where.append(f"request_id={self.request_id}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class ConfigError(RouteledgerError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class RequestError(RouteledgerError):
    """The request is invalid; it was not sent to any provider."""


class ProviderError(RouteledgerError):
    """One attempt against one provider failed."""

    retryable: bool = False
    """The same provider may be tried again for this request."""
    failover: bool = True
    """Another provider may be tried for this request."""
    maybe_billed: bool = False
    """The request reached the provider and may have been charged."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        request_id: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, request_id=request_id)
        self.status = status
        self.retry_after_s = retry_after_s


class RateLimited(ProviderError):
    """The provider asked us to slow down (429), possibly saying for how long."""

    retryable = True


class QuotaExceeded(ProviderError):
    """The account's quota or spend limit is exhausted: waiting will not help."""


class AuthenticationError(ProviderError):
    """The provider refused the credentials (401/403)."""


class BadRequest(ProviderError):
    """The provider rejected the request itself; no provider will accept it."""

    failover = False


class ContextLengthExceeded(BadRequest):
    """The prompt does not fit the model's context window.

    Unlike other bad requests it allows failover, but only to a model with a larger known
    context window (the router's filter sees to that); with none, the request ends with it.
    """

    failover = True


class UnsupportedByProvider(BadRequest):
    """This provider rejected something the request asks for (a parameter or value it does
    not support, a model it does not serve); another provider may accept it.

    A ``BadRequest`` that allows failover: like every bad request it says nothing against the
    provider's health, and the same provider is not asked again.
    """

    failover = True


class ProviderUnavailable(ProviderError):
    """A transient server-side failure (408, 409, 5xx, 529)."""

    retryable = True
    maybe_billed = True


class ProviderConnectError(ProviderError):
    """The request could not be sent (connection refused, DNS, TLS): nothing was billed."""

    retryable = True


class ProviderTimeout(ProviderError):
    """The request was sent but no complete answer came in time: it may have been billed."""

    retryable = True
    maybe_billed = True


class ProtocolError(ProviderError):
    """The provider answered with something that is not the expected wire format."""

    maybe_billed = True


class ProviderSaturated(ProviderError):
    """The provider's concurrency budget is full."""


class StreamInterrupted(ProviderError):
    """A stream ended or failed before its terminator; its usage is unknown."""

    failover = False
    maybe_billed = True


class StreamCancelled(StreamInterrupted):
    """The caller closed a stream before its end; this says nothing about the provider."""


class AttemptCancelled(ProviderError):
    """An attempt stopped because its request was cancelled or the runtime shut down.

    Its HTTP exchange was closed by us: this says nothing about the provider (its circuit and
    failure counts ignore it), and no other provider is tried.
    """

    failover = False
    maybe_billed = True
    reason: str = "cancelled"
    """``"cancelled"`` (by the caller) or ``"shutdown"`` (the runtime closed)."""


class RoutingError(RouteledgerError):
    """No provider could serve the request."""


class RequestCancelled(RoutingError):
    """The caller cancelled the request (its asyncio task was cancelled).

    Recorded as the request's end; the caller itself sees ``asyncio.CancelledError``.
    """


class RuntimeClosed(RoutingError):
    """The runtime is closed (or closing), or it closed before this request could end.

    A graceful :meth:`~routeledger.Runtime.close` refuses new requests with this error, lets
    requests in flight finish within its grace period, and ends the rest with it (recorded as
    the request's end, with reason ``shutdown``). It never blames a provider.
    """


class NoCapableProvider(RoutingError):
    """Every configured provider was filtered out; ``excluded`` says why for each."""

    def __init__(
        self,
        message: str,
        *,
        excluded: dict[str, str] | None = None,
        request_id: str | None = None,
    ) -> None:
        self.excluded = dict(excluded or {})
        detail = "; ".join(f"{p}: {why}" for p, why in sorted(self.excluded.items()))
        super().__init__(f"{message}: {detail}" if detail else message, request_id=request_id)


class PromptTooLong(NoCapableProvider):
    """No configured model serving the request has a context window that can hold it: the
    estimated prompt plus ``max_tokens`` (the request was sent nowhere)."""


class BudgetExceeded(RoutingError):
    """A spend budget covering the request is used up; ``budgets`` names each one."""

    def __init__(
        self, message: str, *, budgets: list[str] | None = None, request_id: str | None = None
    ) -> None:
        self.budgets = list(budgets or [])
        super().__init__(message, request_id=request_id)


class AllProvidersUnhealthy(RoutingError):
    """Every candidate's circuit is open; ``states`` gives each provider's state."""

    def __init__(self, states: dict[str, str], *, request_id: str | None = None) -> None:
        self.states = dict(states)
        detail = ", ".join(f"{p}={s}" for p, s in sorted(self.states.items()))
        super().__init__(f"every candidate provider is unhealthy: {detail}", request_id=request_id)


class AllProvidersFailed(RoutingError):
    """The attempt budget ran out; ``attempts`` holds each attempt's error in order."""

    def __init__(
        self,
        attempts: list[ProviderError],
        *,
        request_id: str | None = None,
        message: str | None = None,
    ) -> None:
        self.attempts = list(attempts)
        detail = "; ".join(f"{e.provider}: {type(e).__name__}" for e in self.attempts)
        super().__init__(
            message or f"all {len(self.attempts)} attempt(s) failed: {detail}",
            request_id=request_id,
        )

    @property
    def last_error(self) -> ProviderError | None:
        """Return the last attempt's error, if any attempt was made."""
        return self.attempts[-1] if self.attempts else None


class AllProvidersSaturated(RoutingError):
    """Every candidate's concurrency budget stayed full for as long as the request could wait."""


class DeadlineExceeded(RoutingError):
    """The request's deadline passed before a provider answered."""


class StoreError(RouteledgerError):
    """The event log failed."""

    def __init__(self, message: str, *, path: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.path = path


class StoreLocked(StoreError):
    """Another writer held the database longer than the busy timeout."""


class StoreFull(StoreError):
    """The disk or the database's size limit is full."""


class StoreCorrupted(StoreError):
    """The database file or one of its rows cannot be read (``position``: which row)."""

    def __init__(
        self, message: str, *, position: int | None = None, path: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, path=path, **kwargs)
        self.position = position


class SchemaVersionError(StoreError):
    """The database was written by a newer version of routeledger."""


class UnknownEventType(StoreError):
    """A stored event has a type tag this version of routeledger does not know."""

    def __init__(self, tag: str, *, position: int | None = None) -> None:
        self.tag = tag
        self.position = position
        super().__init__(
            f"stored event at position {position} has unknown type {tag!r}; "
            "it was written by a newer routeledger (upgrade to read it, or replay non-strictly)"
        )
