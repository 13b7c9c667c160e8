"""A/B tests: assigning variants, remembering each request's variant, recording outcomes.

Part of the supervisor's logic (the :class:`~routeledger.actors._router.Router` owns one);
every assignment and every outcome is an event.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from routeledger.events import (
    ABAssignment,
    ABMetricsRecorded,
    ABTestConfig,
    ABTestCreated,
    ABVariantAssigned,
    ConfigError,
    Event,
    RequestError,
    check_ab_test,
)

if TYPE_CHECKING:
    from routeledger.actors._clock import Clock
    from routeledger.events import Request

__all__ = ["ABTests", "same_definition"]


class ABTests:
    """The A/B tests of one runtime, and the variant of each request routed under one."""

    def __init__(
        self,
        *,
        providers: Callable[[], set[str]],
        clock: Clock,
        rng: random.Random,
        emit: Callable[[list[Event]], None],
    ) -> None:
        self._providers = providers
        self._clock = clock
        self._rng = rng
        self._emit = emit
        self.tests: dict[str, ABTestConfig] = {}
        self.assigned: dict[str, str] = {}
        """Variant of each request routed under a test, until the request ends."""

    def setup(self, test: ABTestConfig, *, replace: bool = False) -> bool:
        """Add a test (its seed metrics count in its results); return whether it was added.

        The same test again (a restarted runtime's caller repeating itself) changes nothing
        and keeps its results; another test under a taken name is a ``ConfigError`` unless
        ``replace`` is set (the replacement starts with fresh results).
        """
        if same_definition(self.tests.get(test.name), test):
            return False
        taken = set(self.tests) - {test.name} if replace else set(self.tests)
        problems = check_ab_test(test, self._providers(), taken=taken)
        if problems:
            raise ConfigError(problems)
        self.tests[test.name] = test
        self._emit(
            [
                ABTestCreated(
                    ts=self._clock.time(),
                    name=test.name,
                    variant_a=test.variant_a,
                    variant_b=test.variant_b,
                    split_ratio=test.split_ratio,
                    sticky_key=test.sticky_key,
                    metrics={k: dict(v) for k, v in (test.metrics or {}).items()},
                )
            ]
        )
        return True

    def resume(self, test: ABTestConfig) -> None:
        """Continue a test defined in the log (nothing is recorded: it already was)."""
        if not check_ab_test(test, self._providers(), taken=set(self.tests)):
            self.tests[test.name] = test

    def get(self, name: str) -> ABTestConfig:
        """Return the test called ``name``; raise :class:`RequestError` if unknown."""
        try:
            return self.tests[name]
        except KeyError:
            raise RequestError(f"unknown A/B test {name!r}") from None

    def assign(
        self, name: str, *, request: Request | None = None, key: str | None = None
    ) -> ABAssignment:
        """Assign a variant: by a stable hash of the sticky key, else by the seeded RNG."""
        test = self.get(name)
        if key is None and request is not None and test.sticky_key is not None:
            key = request.metadata.get(test.sticky_key)
        if key is not None:
            digest = hashlib.blake2b(f"{name}\0{key}".encode(), digest_size=8).digest()
            u = int.from_bytes(digest, "big") / 2**64
        else:
            u = self._rng.random()
        variant: Literal["A", "B"] = "A" if u < test.split_ratio else "B"
        provider = test.variant_a if variant == "A" else test.variant_b
        probability = test.split_ratio if variant == "A" else 1.0 - test.split_ratio
        request_id = request.request_id if request is not None else None
        if request is not None:
            self.assigned[request.request_id] = variant
        self._emit(
            [
                ABVariantAssigned(
                    ts=self._clock.time(),
                    test=name,
                    variant=variant,
                    provider=provider,
                    probability=probability,
                    request_id=request_id,
                    sticky=key is not None,
                )
            ]
        )
        return ABAssignment(
            test=name,
            variant=variant,
            provider=provider,
            probability=probability,
            request_id=request_id,
        )

    def provider_for(self, name: str, request: Request) -> str:
        """Return the provider of the request's variant, assigning one on first use.

        A request that waits for capacity asks again for its first attempt: it keeps its
        variant, and one assignment is logged.
        """
        variant = self.assigned.get(request.request_id)
        if variant is None:
            return self.assign(name, request=request).provider
        test = self.get(name)
        return test.variant_a if variant == "A" else test.variant_b

    def outcome(
        self,
        name: str,
        request_id: str,
        *,
        ts: float,
        latency_ms: float,
        cost: float | None,
        error: bool,
    ) -> ABMetricsRecorded | None:
        """Return the automatic outcome event of a finished request, forgetting its variant.

        ``None`` when the request got no variant (a cached answer, an unknown test).
        """
        variant = self.assigned.pop(request_id, None)
        if variant is None or name not in self.tests:
            return None
        return ABMetricsRecorded(
            ts=ts,
            test=name,
            variant=variant,
            latency_ms=latency_ms,
            cost=cost,
            error=error,
            request_id=request_id,
            source="auto",
        )

    def record(
        self, name: str, variant: str, *, latency_ms: float, cost: float | None, error: bool
    ) -> None:
        """Record a manual outcome."""
        self.get(name)
        if variant not in ("A", "B"):
            raise RequestError(f"A/B variant must be 'A' or 'B', got {variant!r}")
        # Checked here, not left to the writer: NaN or infinity cannot be stored, and the
        # caller must hear about a bad figure instead of it vanishing as a gap in the log.
        if not _finite(latency_ms) or latency_ms < 0:
            raise RequestError(f"A/B latency_ms must be a finite number >= 0, got {latency_ms!r}")
        if cost is not None and (not _finite(cost) or cost < 0):
            raise RequestError(f"A/B cost must be None or a finite number >= 0, got {cost!r}")
        self._emit(
            [
                ABMetricsRecorded(
                    ts=self._clock.time(),
                    test=name,
                    variant=variant,
                    latency_ms=float(latency_ms),
                    cost=cost,
                    error=bool(error),
                    source="manual",
                )
            ]
        )


def same_definition(existing: ABTestConfig | None, test: ABTestConfig) -> bool:
    """Return whether ``test`` defines ``existing`` again (seed metrics count once: ignored)."""
    return (
        existing is not None
        and existing.variant_a == test.variant_a
        and existing.variant_b == test.variant_b
        and existing.split_ratio == test.split_ratio
        and existing.sticky_key == test.sticky_key
    )


def _finite(value: object) -> bool:
    """Return whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
