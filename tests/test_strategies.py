"""Tests of the pure routing functions: the filter, every ranking strategy and confidence."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeledger.actors._strategies import (
    Candidate,
    Ranking,
    View,
    confidence,
    filter_candidates,
    rank,
    rank_cost,
    rank_latency,
    rank_least_loaded,
    rank_round_robin,
    rank_weighted,
)

FAST = settings(max_examples=60, deadline=None)


def cand(
    name: str,
    order: int = 0,
    *,
    priority: int = 0,
    weight: float = 1.0,
    in_flight: int = 0,
    limit: int = 10,
    latency_ms: float | None = None,
    cost: float | None = None,
) -> Candidate:
    """Return a candidate with sensible defaults."""
    return Candidate(name, order, priority, weight, in_flight, limit, latency_ms, cost)


def view(name: str, **kw: object) -> View:
    """Return a view of a healthy provider that serves the model, overridden by ``kw``."""
    base: dict[str, object] = {
        "name": name,
        "down": None,
        "serves_model": True,
        "capabilities": frozenset({"streaming", "tools"}),
        "circuit": "closed",
        "latency_ms": None,
        "cost": 0.01,
    }
    base.update(kw)
    return View(**base)  # type: ignore[arg-type]  # fields vary by test: a dict of Any


# --- filter ---------------------------------------------------------------------------------


def test_filter_keeps_a_healthy_capable_provider() -> None:
    """A provider that passes every filter is kept, in input order, with nothing dropped."""
    kept, dropped = filter_candidates([view("a"), view("b")], required=frozenset({"tools"}))
    assert kept == ["a", "b"]
    assert dropped == {}


def test_filter_names_each_filter() -> None:
    """Each filter drops its provider and says which filter it was."""
    views = [
        view("down", down="disabled"),
        view("outside"),
        view("excl"),
        view("nomodel", serves_model=False),
        view("notools", capabilities=frozenset({"streaming"})),
        view("open", circuit="open"),
        view("half", circuit="half_open"),
        view("pricey", cost=5.0),
        view("unpriced", cost=None),
        view("slow", latency_ms=900.0),
        view("ok", latency_ms=100.0),
        view("unmeasured", latency_ms=None),
    ]
    members = frozenset(v.name for v in views) - {"outside"}
    kept, dropped = filter_candidates(
        views,
        required=frozenset({"tools"}),
        members=members,
        exclude=["excl"],
        max_cost=1.0,
        max_latency_ms=500.0,
    )
    assert kept == ["ok", "unmeasured"]
    assert dropped["notools"] == "lacks tools"
    assert dropped["down"] == "disabled"
    assert dropped["outside"] == "not in pool"
    assert dropped["excl"] == "excluded"
    assert dropped["nomodel"] == "model not served"
    assert dropped["open"] == "circuit open"
    assert dropped["half"].startswith("circuit half-open")
    assert dropped["pricey"].startswith("estimated cost")
    assert dropped["unpriced"] == "unpriced under a cost limit"
    assert dropped["slow"].startswith("observed latency")


def test_filter_reports_missing_capabilities() -> None:
    """A provider lacking a required capability is dropped and the missing ones are named."""
    kept, dropped = filter_candidates(
        [view("a", capabilities=frozenset({"streaming"}))],
        required=frozenset({"vision", "tools", "streaming"}),
    )
    assert kept == []
    assert dropped == {"a": "lacks tools, vision"}


FILTER_ORDER = ["down", "pool", "excluded", "model", "capabilities", "circuit", "cost", "latency"]


def _reason_kind(reason: str) -> str:
    if reason == "gone":
        return "down"
    if reason == "not in pool":
        return "pool"
    if reason == "excluded":
        return "excluded"
    if reason == "model not served":
        return "model"
    if reason.startswith("lacks"):
        return "capabilities"
    if reason.startswith("circuit"):
        return "circuit"
    if reason.startswith(("unpriced", "estimated cost")):
        return "cost"
    if reason.startswith("observed latency"):
        return "latency"
    raise AssertionError(reason)


@FAST
@given(faults=st.sets(st.sampled_from(FILTER_ORDER)))
def test_filter_records_the_first_failing_filter(faults: set[str]) -> None:
    """With any set of faults, the reason recorded is the first filter in documented order."""
    v = view(
        "p",
        down="gone" if "down" in faults else None,
        serves_model="model" not in faults,
        capabilities=frozenset() if "capabilities" in faults else frozenset({"tools"}),
        circuit="open" if "circuit" in faults else "closed",
        cost=2.0 if "cost" in faults else 0.5,
        latency_ms=900.0 if "latency" in faults else 10.0,
    )
    kept, dropped = filter_candidates(
        [v],
        required=frozenset({"tools"}),
        members=frozenset() if "pool" in faults else None,
        exclude=["p"] if "excluded" in faults else [],
        max_cost=1.0,
        max_latency_ms=100.0,
    )
    if not faults:
        assert kept == ["p"]
        assert dropped == {}
    else:
        first = min(faults, key=FILTER_ORDER.index)
        assert kept == []
        assert _reason_kind(dropped["p"]) == first


def test_filter_unpriced_kept_without_cost_limit() -> None:
    """An unpriced provider is only dropped when a cost limit applies."""
    kept, _ = filter_candidates([view("u", cost=None)], required=frozenset())
    assert kept == ["u"]


def test_filter_allow_open_and_due() -> None:
    """A ``due`` circuit may take a probe; ``allow_open`` lets open circuits through (panic)."""
    views = [view("o", circuit="open"), view("d", circuit="due"), view("h", circuit="half_open")]
    kept, _ = filter_candidates(views, required=frozenset())
    assert kept == ["d"]
    kept, _ = filter_candidates(views, required=frozenset(), allow_open=True)
    assert kept == ["o", "d", "h"]


# --- round-robin ----------------------------------------------------------------------------


def test_round_robin_prefers_higher_priority_number() -> None:
    """A higher ``priority`` number forms the top tier, whatever the configuration order."""
    cs = [cand("low", 0, priority=1), cand("high", 1, priority=100)]
    for turn in range(5):
        assert rank_round_robin(cs, turn).order == ["high", "low"]


@FAST
@given(
    top=st.integers(1, 5),
    low=st.integers(0, 4),
    k=st.integers(1, 4),
    data=st.data(),
)
def test_round_robin_rotates_top_tier_evenly(
    top: int, low: int, k: int, data: st.DataObject
) -> None:
    """Over k*n turns each of the n top-tier members is first exactly k times; lower tiers last."""
    prio = data.draw(st.integers(-5, 5))
    cs = [cand(f"t{i}", i, priority=prio + 10) for i in range(top)]
    cs += [cand(f"l{i}", top + i, priority=prio) for i in range(low)]
    order = data.draw(st.permutations(cs))
    firsts: Counter[str] = Counter()
    for turn in range(k * top):
        ranking = rank_round_robin(list(order), turn)
        firsts[ranking.order[0]] += 1
        # The whole top tier comes before any lower-tier member.
        assert {n for n in ranking.order[:top]} == {f"t{i}" for i in range(top)}
        assert set(ranking.order[top:]) == {f"l{i}" for i in range(low)}
    assert firsts == {f"t{i}": k for i in range(top)}


def test_round_robin_consecutive_turns_differ() -> None:
    """Consecutive turns pick consecutive members of the tier (rotation, not a fixed start)."""
    cs = [cand("a", 0), cand("b", 1), cand("c", 2)]
    assert [rank_round_robin(cs, t).order[0] for t in range(6)] == list("abcabc")
    assert "turn 2 of 3" in rank_round_robin(cs, 1).reason


def test_round_robin_empty() -> None:
    """No candidate gives an empty ranking and confidence 0."""
    r = rank_round_robin([], 3)
    assert r.order == []
    assert confidence(r) == 0.0


# --- least-loaded ---------------------------------------------------------------------------


def test_least_loaded_orders_by_share_in_flight() -> None:
    """Least-loaded compares in_flight/limit, not absolute counts."""
    cs = [
        cand("big", 0, in_flight=5, limit=100),
        cand("small", 1, in_flight=1, limit=2),
        cand("idle", 2, in_flight=0, limit=1),
    ]
    r = rank_least_loaded(cs, random.Random(0))
    assert r.order == ["idle", "big", "small"]
    assert r.scores["idle"] == 1.0
    assert r.scores["small"] == 0.5


@FAST
@given(loads=st.lists(st.tuples(st.integers(0, 9), st.integers(1, 10)), min_size=1, max_size=6))
def test_least_loaded_is_sorted_and_seed_reproducible(loads: list[tuple[int, int]]) -> None:
    """The ranking never puts a busier share first, and one seed always gives the same order."""
    cs = [cand(f"p{i}", i, in_flight=f, limit=lim) for i, (f, lim) in enumerate(loads)]
    r = rank_least_loaded(cs, random.Random(42))
    shares = {c.name: c.in_flight / c.limit for c in cs}
    seq = [shares[n] for n in r.order]
    assert seq == sorted(seq)
    assert rank_least_loaded(cs, random.Random(42)).order == r.order


def test_least_loaded_breaks_ties_both_ways() -> None:
    """Ties are broken at random: across seeds each tied provider comes first sometimes."""
    cs = [cand("a", 0, in_flight=1, limit=4), cand("b", 1, in_flight=2, limit=8)]
    firsts = {rank_least_loaded(cs, random.Random(seed)).order[0] for seed in range(40)}
    assert firsts == {"a", "b"}


# --- latency --------------------------------------------------------------------------------


def test_latency_explores_unmeasured_idle_first() -> None:
    """An unmeasured provider with nothing in flight is tried before any measured one."""
    cs = [cand("fast", 0, latency_ms=10.0), cand("new", 1)]
    r = rank_latency(cs, random.Random(0))
    assert r.order == ["new", "fast"]
    assert "exploring" in r.reason


def test_latency_unmeasured_busy_is_not_explored_again() -> None:
    """An unmeasured provider already exploring ranks as if it were the slowest measured."""
    cs = [
        cand("fast", 0, latency_ms=10.0),
        cand("slow", 1, latency_ms=300.0),
        cand("new", 2, in_flight=1),
    ]
    r = rank_latency(cs, random.Random(0))
    # new: 300 * 2 = 600 expected; slow: 300; fast: 10.
    assert r.order == ["fast", "slow", "new"]


def test_latency_expected_is_ewma_times_in_flight_plus_one() -> None:
    """A fast but busy provider loses to a slower idle one once EWMA*(in_flight+1) is larger."""
    cs = [cand("fast", 0, latency_ms=100.0, in_flight=3), cand("slow", 1, latency_ms=250.0)]
    r = rank_latency(cs, random.Random(0))
    assert r.order == ["slow", "fast"]  # 400 > 250
    cs = [cand("fast", 0, latency_ms=100.0, in_flight=1), cand("slow", 1, latency_ms=250.0)]
    assert rank_latency(cs, random.Random(0)).order == ["fast", "slow"]  # 200 < 250
    assert "expected 200.0 ms" in rank_latency(cs, random.Random(0)).reason


@FAST
@given(
    lat=st.lists(
        st.tuples(st.floats(1, 5000), st.integers(0, 5)),
        min_size=1,
        max_size=6,
    )
)
def test_latency_sorted_by_expected(lat: list[tuple[float, int]]) -> None:
    """Among measured providers, the order follows EWMA*(in_flight+1) ascending."""
    cs = [cand(f"p{i}", i, latency_ms=m, in_flight=f) for i, (m, f) in enumerate(lat)]
    r = rank_latency(cs, random.Random(0))
    exp = {c.name: c.latency_ms * (c.in_flight + 1) for c in cs if c.latency_ms}
    seq = [exp[n] for n in r.order]
    assert seq == sorted(seq)
    assert all(0 < s <= 1 for s in r.scores.values())


# --- cost -----------------------------------------------------------------------------------


def test_cost_cheapest_first_unpriced_last() -> None:
    """Cost ranks cheapest first and unpriced providers last, never as if they cost 0."""
    cs = [
        cand("unpriced", 0, cost=None),
        cand("dear", 1, cost=0.02),
        cand("cheap", 2, cost=0.001),
    ]
    r = rank_cost(cs, random.Random(0))
    assert r.order == ["cheap", "dear", "unpriced"]
    assert r.scores["unpriced"] == 0.0
    assert r.scores["cheap"] == 1.0
    assert r.scores["dear"] == pytest.approx(0.05)


def test_cost_ties_go_to_higher_priority() -> None:
    """Equal costs are ordered by the higher priority first."""
    cs = [cand("a", 0, cost=0.01, priority=1), cand("b", 1, cost=0.01, priority=9)]
    assert rank_cost(cs, random.Random(0)).order == ["b", "a"]


def test_cost_all_unpriced_keeps_configuration_order() -> None:
    """With no priced candidate the order is the configuration's, and the reason says so."""
    cs = [cand("b", 1), cand("a", 0)]
    r = rank_cost(cs, random.Random(0))
    assert r.order == ["a", "b"]
    assert "no candidate is priced" in r.reason


@FAST
@given(costs=st.lists(st.one_of(st.none(), st.floats(0, 10)), min_size=1, max_size=6))
def test_cost_priced_always_before_unpriced(costs: list[float | None]) -> None:
    """Every priced provider comes before every unpriced one, priced ones in cost order."""
    cs = [cand(f"p{i}", i, cost=c) for i, c in enumerate(costs)]
    r = rank_cost(cs, random.Random(0))
    by = {c.name: c.cost for c in cs}
    seq = [by[n] for n in r.order]
    priced = [c for c in seq if c is not None]
    assert seq[: len(priced)] == sorted(priced)
    assert all(c is None for c in seq[len(priced) :])


# --- weighted -------------------------------------------------------------------------------


def _run_weighted(cs: list[Candidate], picks: int) -> list[str]:
    current: dict[str, float] = {}
    out = []
    for _ in range(picks):
        ranking, current = rank_weighted(cs, current)
        out.append(ranking.order[0])
    return out


@FAST
@given(weights=st.lists(st.integers(1, 12), min_size=1, max_size=6))
def test_weighted_picks_follow_integer_weights_exactly(weights: list[int]) -> None:
    """Over sum(weights) picks each provider is chosen exactly its weight times, evenly spread."""
    cs = [cand(f"p{i}", i, weight=float(w)) for i, w in enumerate(weights)]
    total = sum(weights)
    picks = _run_weighted(cs, 2 * total)
    for cycle in (picks[:total], picks[total:]):
        assert Counter(cycle) == {f"p{i}": w for i, w in enumerate(weights)}
    for i, w in enumerate(weights):
        name = f"p{i}"
        longest = run = 0
        for p in picks:
            run = run + 1 if p == name else 0
            longest = max(longest, run)
        others = total - w
        # Smooth WRR interleaves: a provider runs at most about w/others times in a row (twice
        # that across a cycle boundary); a plain WRR would run all w picks at once.
        bound = 2 * math.ceil(w / others) if others else len(picks)
        assert longest <= bound


@FAST
@given(weights=st.lists(st.floats(0.01, 100), min_size=2, max_size=5))
def test_weighted_shares_track_real_weights(weights: list[float]) -> None:
    """With real weights, every prefix of picks stays within n-1 picks of its weighted share."""
    cs = [cand(f"p{i}", i, weight=w) for i, w in enumerate(weights)]
    total = sum(weights)
    counts: Counter[str] = Counter()
    for t, p in enumerate(_run_weighted(cs, 60), 1):
        counts[p] += 1
        for i, w in enumerate(weights):
            # A bursty WRR would drift by up to a whole weight; smooth WRR stays close.
            assert abs(counts[f"p{i}"] - t * w / total) <= len(weights) - 1 + 1e-6


def test_weighted_zero_weights_come_last() -> None:
    """A zero-weight candidate is never picked while a positive one exists, and ranks last."""
    cs = [cand("zero", 0, weight=0.0), cand("a", 1, weight=1.0), cand("b", 2, weight=3.0)]
    current: dict[str, float] = {}
    for _ in range(8):
        ranking, current = rank_weighted(cs, current)
        assert ranking.order[0] != "zero"
        assert ranking.order[-1] == "zero"
    ranking, _ = rank_weighted([cand("z1", 1, weight=0), cand("z0", 0, weight=0)], {})
    assert ranking.order == ["z0", "z1"]
    assert ranking.reason == "weighted: no weight"


def test_weighted_pool_weights_override() -> None:
    """Pool weights replace the candidates' own weights; unnamed members weigh zero."""
    cs = [cand("a", 0, weight=100.0), cand("b", 1, weight=1.0), cand("c", 2, weight=5.0)]
    current: dict[str, float] = {}
    picks = []
    for _ in range(4):
        ranking, current = rank_weighted(cs, current, {"a": 1.0, "b": 3.0})
        picks.append(ranking.order[0])
    assert Counter(picks) == {"a": 1, "b": 3}


# --- rank and confidence --------------------------------------------------------------------


def test_rank_dispatches_and_rejects_unknown() -> None:
    """``rank`` runs the named strategy; only weighted returns new currents; unknown raises."""
    cs = [cand("a", 0, weight=1.0, cost=0.1), cand("b", 1, weight=2.0, cost=0.01)]
    for strategy in ("round-robin", "least-loaded", "latency", "cost"):
        ranking, cur = rank(strategy, cs, rng=random.Random(0))
        assert sorted(ranking.order) == ["a", "b"]
        assert cur is None
        assert ranking.reason.startswith(strategy.split("-")[0])
    assert rank("cost", cs, rng=random.Random(0))[0].order == ["b", "a"]
    ranking, cur = rank("weighted", cs, rng=random.Random(0))
    assert ranking.order[0] == "b"
    assert cur is not None
    with pytest.raises(ValueError, match="unknown strategy"):
        rank("random", cs, rng=random.Random(0))


def test_confidence_alone_and_ties() -> None:
    """Confidence is 1.0 for a lone candidate and 1/n for n tied ones."""
    assert confidence(Ranking(["a"], {"a": 0.3}, "")) == 1.0
    for n in range(2, 7):
        names = [f"p{i}" for i in range(n)]
        r = Ranking(names, dict.fromkeys(names, 0.5), "")
        assert confidence(r) == pytest.approx(1 / n, abs=1e-6)
    zero = Ranking(["a", "b"], {"a": 0.0, "b": 0.0}, "")
    assert confidence(zero) == 0.5


@FAST
@given(
    strategy=st.sampled_from(["round-robin", "least-loaded", "latency", "cost", "weighted"]),
    specs=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.floats(0, 5),
            st.integers(0, 5),
            st.one_of(st.none(), st.floats(1, 1000)),
            st.one_of(st.none(), st.floats(0, 1)),
        ),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 100),
)
def test_confidence_always_in_unit_interval(
    strategy: str,
    specs: list[tuple[int, float, int, float | None, float | None]],
    seed: int,
) -> None:
    """Every strategy's ranking covers every candidate once and its confidence is in [0, 1]."""
    cs = [
        cand(f"p{i}", i, priority=p, weight=w, in_flight=f, limit=5, latency_ms=lat, cost=c)
        for i, (p, w, f, lat, c) in enumerate(specs)
    ]
    ranking, _ = rank(strategy, cs, rng=random.Random(seed), turn=seed)
    assert sorted(ranking.order) == sorted(c.name for c in cs)
    assert 0.0 <= confidence(ranking) <= 1.0
    if len(cs) == 1:
        assert confidence(ranking) == 1.0
