"""Routing as pure functions over an immutable snapshot of the providers.

:func:`filter_candidates` drops every provider that cannot serve a request, naming the
filter that dropped it; the ``rank_*`` functions order the rest, best first, with a score in
``[0, 1]`` for each (higher is better) and the reason the first one won. Whatever state a
strategy carries between requests (round-robin turn, smooth-weighted currents) goes in and
comes out explicitly, so the supervisor owns it and tests and simulations can replay it.

``confidence`` of a decision is the chosen provider's share of the summed scores: 1.0 when it
was the only candidate, ``1/n`` when ``n`` candidates tied.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import NamedTuple

__all__ = [
    "Candidate",
    "Ranking",
    "View",
    "confidence",
    "filter_candidates",
    "rank",
    "rank_cost",
    "rank_latency",
    "rank_least_loaded",
    "rank_round_robin",
    "rank_usage",
    "rank_weighted",
]


class View(NamedTuple):
    """What the filter needs to know of one provider for one request."""

    name: str
    down: str | None
    """Why the provider cannot take requests at all (disabled, not running), or ``None``."""
    serves_model: bool
    capabilities: frozenset[str]
    circuit: str
    """``closed``, ``open``, ``half_open`` or ``due`` (open, cooldown over: may probe)."""
    latency_ms: float | None
    cost: float | None
    """Estimated cost of the request on this provider; ``None`` when the model is unpriced."""
    context_window: int | None = None
    """The model's context window in tokens; ``None`` when not configured (not checked)."""


class Candidate(NamedTuple):
    """What a strategy needs to know of one provider that can serve the request."""

    name: str
    order: int
    """Position in the configuration: the stable tie-break."""
    priority: int
    weight: float
    in_flight: int
    limit: int
    latency_ms: float | None
    cost: float | None
    headroom: float = 1.0
    """The smallest share of its rpm/tpm buckets left after the request (1.0: no limit)."""


class Ranking(NamedTuple):
    """Candidates best first, their scores, and why the first one won."""

    order: list[str]
    scores: dict[str, float]
    reason: str


def filter_candidates(
    views: Iterable[View],
    *,
    required: frozenset[str],
    members: frozenset[str] | None = None,
    exclude: Iterable[str] = (),
    failed: Iterable[str] = (),
    max_cost: float | None = None,
    max_latency_ms: float | None = None,
    allow_open: bool = False,
    needed_tokens: int | None = None,
    context_over: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Return the providers that can serve a request, and why each other one was dropped.

    Filters apply in a fixed order and the first that drops a provider is recorded:
    down (disabled or not running), pool membership, exclusion by the caller, ruled out by
    an earlier failure of the same request (``failed``), model, capabilities, context
    window, circuit, cost, latency.
    A provider with no latency measurement is kept under a latency limit (nothing observed
    speaks against it); an unpriced provider is dropped under a cost limit (its cost is
    unknown, not zero). A model whose configured window is smaller than ``needed_tokens`` (the
    estimated prompt plus the output asked for) is dropped; one with no configured window is
    kept, except after a provider refused the prompt as too long for a window of
    ``context_over`` tokens: then only a known, larger window may take it.
    """
    excluded_names = frozenset(exclude)
    failed_names = frozenset(failed)
    kept: list[str] = []
    dropped: dict[str, str] = {}
    for v in views:
        if v.down is not None:
            dropped[v.name] = v.down
        elif members is not None and v.name not in members:
            dropped[v.name] = "not in pool"
        elif v.name in excluded_names:
            dropped[v.name] = "excluded"
        elif v.name in failed_names:
            dropped[v.name] = "failed earlier in this request"
        elif not v.serves_model:
            dropped[v.name] = "model not served"
        elif not required <= v.capabilities:
            dropped[v.name] = "lacks " + ", ".join(sorted(required - v.capabilities))
        elif context_over is not None and (
            v.context_window is None or v.context_window <= context_over
        ):
            shown = "unknown" if v.context_window is None else f"{v.context_window}"
            dropped[v.name] = (
                f"context window {shown} not larger than the {context_over} that refused the prompt"
            )
        elif (
            needed_tokens is not None
            and v.context_window is not None
            and needed_tokens > v.context_window
        ):
            dropped[v.name] = (
                f"context window {v.context_window} cannot hold ~{needed_tokens} tokens "
                "(estimated prompt + max_tokens)"
            )
        elif v.circuit == "open" and not allow_open:
            dropped[v.name] = "circuit open"
        elif v.circuit == "half_open" and not allow_open:
            dropped[v.name] = "circuit half-open, probe in flight"
        elif max_cost is not None and v.cost is None:
            dropped[v.name] = "unpriced under a cost limit"
        elif max_cost is not None and v.cost is not None and v.cost > max_cost:
            dropped[v.name] = f"estimated cost {v.cost:.6g} over {max_cost:.6g}"
        elif (
            max_latency_ms is not None
            and v.latency_ms is not None
            and v.latency_ms > max_latency_ms
        ):
            dropped[v.name] = f"observed latency {v.latency_ms:.0f} ms over {max_latency_ms:g} ms"
        else:
            kept.append(v.name)
    return kept, dropped


def confidence(ranking: Ranking) -> float:
    """Return the first candidate's share of the summed scores."""
    if not ranking.order:
        return 0.0
    total = sum(ranking.scores.values())
    if total <= 0:
        return 1.0 / len(ranking.order)
    return round(ranking.scores[ranking.order[0]] / total, 6)


def rank_round_robin(candidates: list[Candidate], turn: int) -> Ranking:
    """Rotate inside priority tiers; a higher tier always comes before a lower one.

    ``turn`` is how many decisions this rotation has made so far. Lower tiers are rotated
    too, so that failover traffic spreads over them instead of hitting one.
    """
    tiers = sorted({c.priority for c in candidates}, reverse=True)
    order: list[str] = []
    scores: dict[str, float] = {}
    for rank_index, prio in enumerate(tiers):
        tier = sorted((c for c in candidates if c.priority == prio), key=lambda c: c.order)
        k = turn % len(tier)
        for c in tier[k:] + tier[:k]:
            order.append(c.name)
            scores[c.name] = 1.0 / (1 + rank_index)
    top = [c for c in candidates if c.priority == tiers[0]] if tiers else []
    reason = (
        f"round-robin: priority tier {tiers[0]}, turn {turn % len(top) + 1} of {len(top)}"
        if top
        else "round-robin: no candidate"
    )
    return Ranking(order, scores, reason)


def rank_least_loaded(candidates: list[Candidate], rng: random.Random) -> Ranking:
    """Order by share of the concurrency budget in flight; ties are broken at random."""
    shuffled = list(candidates)
    rng.shuffle(shuffled)
    ordered = sorted(shuffled, key=lambda c: c.in_flight / max(c.limit, 1))
    scores = {c.name: round(max(0.0, 1.0 - c.in_flight / max(c.limit, 1)), 6) for c in ordered}
    if not ordered:
        return Ranking([], {}, "least-loaded: no candidate")
    best = ordered[0]
    return Ranking(
        [c.name for c in ordered],
        scores,
        f"least-loaded: {best.in_flight}/{best.limit} in flight, lowest of {len(ordered)}",
    )


def rank_latency(candidates: list[Candidate], rng: random.Random) -> Ranking:
    """Prefer the lowest expected latency; explore providers never measured.

    The expected latency is the peak EWMA times (in-flight + 1), so a fast provider that is
    already busy does not take every request. An unmeasured provider with nothing in flight
    comes first (one exploring request at a time), so new providers get measured.
    """
    explore = [c for c in candidates if c.latency_ms is None and c.in_flight == 0]
    rng.shuffle(explore)
    rest = [c for c in candidates if c not in explore]
    measured = [c for c in rest if c.latency_ms is not None]
    worst = max((c.latency_ms or 0.0 for c in measured), default=0.0)

    def expected(c: Candidate) -> float:
        base = c.latency_ms if c.latency_ms is not None else worst
        return base * (c.in_flight + 1)

    rest.sort(key=lambda c: (expected(c), c.order))
    scores = {c.name: 1.0 for c in explore}
    for c in rest:
        scores[c.name] = round(100.0 / (100.0 + expected(c)), 6)
    order = [c.name for c in explore] + [c.name for c in rest]
    if not order:
        return Ranking([], {}, "latency: no candidate")
    if explore:
        reason = f"latency: exploring unmeasured provider ({len(explore)} unmeasured)"
    else:
        best = rest[0]
        reason = (
            f"latency: expected {expected(best):.1f} ms (EWMA {best.latency_ms or 0.0:.1f} ms, "
            f"{best.in_flight} in flight), fastest of {len(rest)}"
        )
    return Ranking(order, scores, reason)


def rank_cost(candidates: list[Candidate], rng: random.Random) -> Ranking:
    """Order by estimated cost, cheapest first; unpriced providers come last.

    Ties go to the higher priority, then the lower load.
    """
    del rng  # the order is fully determined
    priced = sorted(
        (c for c in candidates if c.cost is not None),
        key=lambda c: (c.cost, -c.priority, c.in_flight / max(c.limit, 1), c.order),
    )
    unpriced = sorted((c for c in candidates if c.cost is None), key=lambda c: c.order)
    cheapest = priced[0].cost if priced else None
    scores: dict[str, float] = {}
    for c in priced:
        assert c.cost is not None
        scores[c.name] = 1.0 if c.cost <= 0 or cheapest is None else round(cheapest / c.cost, 6)
    for c in unpriced:
        scores[c.name] = 0.0
    order = [c.name for c in priced] + [c.name for c in unpriced]
    if not order:
        return Ranking([], {}, "cost: no candidate")
    if priced:
        reason = f"cost: estimated {priced[0].cost:.6g}, cheapest of {len(priced)} priced"
    else:
        reason = f"cost: no candidate is priced, first of {len(unpriced)} by configuration"
    return Ranking(order, scores, reason)


def rank_weighted(
    candidates: list[Candidate],
    current: Mapping[str, float],
    weights: Mapping[str, float] | None = None,
) -> tuple[Ranking, dict[str, float]]:
    """Pick by smooth weighted round-robin; return the ranking and the new current weights.

    Each pick adds every candidate's weight to its current value, takes the largest, and
    subtracts the total from the winner: over any window the picks follow the weights
    closely and evenly (no bursts). ``weights`` overrides the candidates' own weights (a
    pool's weights). Candidates of weight zero are only used after all others.
    """
    if weights is None:
        w = {c.name: c.weight for c in candidates}
    else:
        w = {c.name: weights.get(c.name, 0.0) for c in candidates}
    live = [c for c in candidates if w[c.name] > 0]
    new_current = {name: value for name, value in current.items() if name in w}
    if not live:
        ordered = sorted(candidates, key=lambda c: c.order)
        return Ranking([c.name for c in ordered], dict.fromkeys(w, 0.0), "weighted: no weight"), (
            new_current
        )
    total = sum(w[c.name] for c in live)
    for c in live:
        new_current[c.name] = new_current.get(c.name, 0.0) + w[c.name]
    chosen = max(live, key=lambda c: (new_current[c.name], -c.order))
    new_current[chosen.name] -= total
    rest = sorted((c for c in candidates if c is not chosen), key=lambda c: (-w[c.name], c.order))
    scores = {c.name: round(w[c.name] / total, 6) for c in candidates}
    reason = f"weighted: weight {w[chosen.name]:g} of {total:g}"
    return Ranking([chosen.name] + [c.name for c in rest], scores, reason), new_current


def rank_usage(candidates: list[Candidate]) -> Ranking:
    """Prefer the most rate-limit headroom: the largest share of rpm/tpm left after the
    request (a provider without limits counts as all headroom); ties go to the higher
    priority, then the lower load, then configuration order."""
    ordered = sorted(
        candidates,
        key=lambda c: (-c.headroom, -c.priority, c.in_flight / max(c.limit, 1), c.order),
    )
    if not ordered:
        return Ranking([], {}, "usage: no candidate")
    scores = {c.name: round(c.headroom, 6) for c in ordered}
    best = ordered[0]
    return Ranking(
        [c.name for c in ordered],
        scores,
        f"usage: {best.headroom:.0%} of its rate limit left after this request, "
        f"most of {len(ordered)}",
    )


def rank(
    strategy: str,
    candidates: list[Candidate],
    *,
    rng: random.Random,
    turn: int = 0,
    current: Mapping[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
) -> tuple[Ranking, dict[str, float] | None]:
    """Rank with ``strategy``; return the ranking and, for ``weighted``, the new currents."""
    if strategy == "round-robin":
        return rank_round_robin(candidates, turn), None
    if strategy == "least-loaded":
        return rank_least_loaded(candidates, rng), None
    if strategy == "latency":
        return rank_latency(candidates, rng), None
    if strategy == "cost":
        return rank_cost(candidates, rng), None
    if strategy == "weighted":
        return rank_weighted(candidates, current or {}, weights)
    if strategy == "usage":
        return rank_usage(candidates), None
    raise ValueError(f"unknown strategy {strategy!r}")
