"""The A/B fold: outcomes per variant of each test."""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

from routeledger.events._errors import RequestError
from routeledger.events._events import (
    ABMetricsRecorded,
    ABTestCreated,
    Event,
)
from routeledger.events._fold import Handler, _cost, _latency
from routeledger.events._types import ABVariantResult

__all__ = ["AB_SEED_KEYS", "ABProjection", "ABState"]


# --- A/B tests -------------------------------------------------------------------------------

AB_SEED_KEYS: dict[str, tuple[str, ...]] = {
    "requests": ("requests",),
    "errors": ("errors",),
    "error_rate": ("error_rate", "errorRate"),
    "latency": ("mean_latency_ms", "avg_latency_ms", "avg_latency", "avgLatency", "latency_ms"),
    "cost": ("mean_cost", "avg_cost", "avgCost", "cost"),
}
"""Keys accepted in the seed ``metrics`` of :class:`ABTestCreated`, per figure, in order of
preference. Variants are keyed ``"A"``/``"B"`` (``"variantA"``/``"variantB"`` also work).

A seed stands for ``requests`` outcomes recorded before the test was set up: they count as
that many requests with the given mean latency, ``errors`` (or ``round(error_rate *
requests)``) errors and, when a cost key is present, that many known costs with the given mean.
A seed without a positive ``requests`` cannot be weighed and is ignored."""

_VARIANT_ALIASES = {"A": "A", "B": "B", "variantA": "A", "variantB": "B"}


def _seed_value(seed: Mapping[str, float], figure: str) -> float | None:
    for key in AB_SEED_KEYS[figure]:
        value = seed.get(key)
        if value is not None and math.isfinite(value):
            return float(value)
    return None


class _VariantState:
    __slots__ = ("cost_count", "cost_sum", "errors", "latency_sum", "provider", "requests")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.requests = 0
        self.errors = 0
        self.latency_sum = 0.0
        self.cost_sum = 0.0
        self.cost_count = 0

    def result(self, variant: str) -> ABVariantResult:
        return ABVariantResult(
            variant=variant,
            provider=self.provider,
            requests=self.requests,
            errors=self.errors,
            mean_latency_ms=self.latency_sum / self.requests if self.requests else 0.0,
            mean_cost=self.cost_sum / self.cost_count if self.cost_count else 0.0,
            error_rate=self.errors / self.requests if self.requests else 0.0,
        )


class ABVariantState(msgspec.Struct, frozen=True, array_like=True):
    """One variant's fold state as plain data (the fields of ``_VariantState``)."""

    provider: str
    requests: int
    errors: int
    latency_sum: float
    cost_sum: float
    cost_count: int


class ABState(msgspec.Struct, frozen=True):
    """An :class:`ABProjection`'s state as plain data, in fold (insertion) order."""

    tests: dict[str, dict[str, ABVariantState]]
    definitions: dict[str, ABTestCreated]


class ABProjection:
    """Fold A/B test events into per-variant outcomes.

    ``ABTestCreated`` defines a test and folds in its seed metrics (see :data:`AB_SEED_KEYS`).
    Creating a test again with the same definition (as a restarted runtime does) keeps its
    figures; a different definition starts the test afresh. ``ABMetricsRecorded`` counts one
    outcome: its latency, its cost when known (``None`` is left out of the cost mean) and
    whether it was an error. Outcomes for a test never created are kept under an unknown
    (empty) provider rather than dropped.
    """

    def __init__(self) -> None:
        self._tests: dict[str, dict[str, _VariantState]] = {}
        self._definitions: dict[str, ABTestCreated] = {}
        self.handlers: dict[type[Event], Handler] = {
            ABTestCreated: self._on_created,
            ABMetricsRecorded: self._on_recorded,
        }

    def apply(self, position: int, event: Event) -> None:
        """Fold one event; events other than A/B definitions and outcomes are ignored."""
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_created(self, event: ABTestCreated) -> None:
        previous = self._definitions.get(event.name)
        # ts differs between runs of the same configuration; the definition is the rest.
        if previous is not None and msgspec.structs.replace(previous, ts=event.ts) == event:
            return
        self._definitions[event.name] = event
        variants = {"A": _VariantState(event.variant_a), "B": _VariantState(event.variant_b)}
        self._tests[event.name] = variants
        for key, seed in event.metrics.items():
            variant = variants.get(_VARIANT_ALIASES.get(key, ""))
            requests = _seed_value(seed, "requests")
            if variant is None or requests is None or requests < 1:
                continue
            n = int(requests)
            errors = _seed_value(seed, "errors")
            if errors is None:
                rate = _seed_value(seed, "error_rate") or 0.0
                errors = float(round(rate * n))
            variant.requests += n
            variant.errors += min(max(int(errors), 0), n)
            latency = _seed_value(seed, "latency")
            if latency is not None:
                variant.latency_sum += _latency(latency) * n
            cost = _seed_value(seed, "cost")
            if cost is not None:
                variant.cost_sum += cost * n
                variant.cost_count += n

    def _on_recorded(self, event: ABMetricsRecorded) -> None:
        variants = self._tests.get(event.test)
        if variants is None:
            variants = self._tests[event.test] = {}
        state = variants.get(event.variant)
        if state is None:
            state = variants[event.variant] = _VariantState("")
        state.requests += 1
        if event.error:
            state.errors += 1
        state.latency_sum += _latency(event.latency_ms)
        cost = _cost(event.cost)
        if cost is not None:
            state.cost_sum += cost
            state.cost_count += 1

    def state(self) -> ABState:
        """Return the fold state as plain data: what a snapshot needs to continue the fold."""
        return ABState(
            tests={
                test: {
                    name: ABVariantState(
                        provider=v.provider,
                        requests=v.requests,
                        errors=v.errors,
                        latency_sum=v.latency_sum,
                        cost_sum=v.cost_sum,
                        cost_count=v.cost_count,
                    )
                    for name, v in variants.items()
                }
                for test, variants in self._tests.items()
            },
            definitions=dict(self._definitions),
        )

    def load_state(self, state: ABState) -> None:
        """Replace the fold state with ``state`` (as :meth:`state` returned it)."""
        tests: dict[str, dict[str, _VariantState]] = {}
        for test, variants in state.tests.items():
            loaded = tests[test] = {}
            for name, saved in variants.items():
                v = loaded[name] = _VariantState(saved.provider)
                v.requests = saved.requests
                v.errors = saved.errors
                v.latency_sum = saved.latency_sum
                v.cost_sum = saved.cost_sum
                v.cost_count = saved.cost_count
        self._tests = tests
        self._definitions = dict(state.definitions)

    def results(self, test: str) -> dict[str, ABVariantResult]:
        """Return the outcomes of each variant of ``test`` (``"A"`` and ``"B"``).

        Raises:
            RequestError: no such test was created or recorded.
        """
        variants = self._tests.get(test)
        if variants is None:
            raise RequestError(f"unknown A/B test {test!r}")
        return {name: variants[name].result(name) for name in sorted(variants)}

    def all_results(self) -> dict[str, dict[str, ABVariantResult]]:
        """Return the outcomes of every test, sorted by test name."""
        return {test: self.results(test) for test in sorted(self._tests)}

    def tests(self) -> list[str]:
        """Return the names of the tests seen, sorted."""
        return sorted(self._tests)
