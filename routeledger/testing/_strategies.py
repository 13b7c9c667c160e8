"""Hypothesis strategies that generate fault scenarios for simulated providers.

Each strategy draws :class:`~routeledger.sim.SimBehaviour` values (or parts of them) on a
simulated timeline of ``duration_s`` seconds:

- :func:`outages`: windows in which every call fails (a 5xx, or cannot connect);
- :func:`latency_spikes`: windows in which answers are many times slower;
- :func:`rate_limits`: a calls-per-second limit, beyond which calls get 429 with Retry-After;
- :func:`flapping`: short outages that come and go;
- :func:`slow_streams`: a late first chunk, and streams that break after it;
- :func:`behaviours`: one provider combining any of these (or none);
- :func:`fault_scenarios`: a behaviour for each of the named providers, optionally keeping
  one of them healthy throughout.

Needs Hypothesis (``pip install hypothesis``); the rest of ``routeledger.testing`` does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from routeledger._scenario import Outage, Phase, SimBehaviour

__all__ = [
    "behaviours",
    "fault_scenarios",
    "flapping",
    "latency_spikes",
    "outages",
    "rate_limits",
    "slow_streams",
]

_STATUSES = st.sampled_from([0, 500, 502, 503, 529])


def _windows(
    duration_s: float, *, max_windows: int, max_len_s: float
) -> st.SearchStrategy[list[tuple[float, float]]]:
    """Draw non-overlapping ``(start, end)`` windows inside ``[0, duration_s)``, in order."""

    @st.composite
    def draw(data: st.DrawFn) -> list[tuple[float, float]]:
        n = data(st.integers(0, max_windows))
        starts = sorted(data(st.lists(st.floats(0, duration_s * 0.95), min_size=n, max_size=n)))
        out: list[tuple[float, float]] = []
        for start in starts:
            start = max(start, out[-1][1] + 0.5 if out else 0.0)
            length = data(st.floats(0.5, max_len_s))
            end = min(start + length, duration_s)
            if end > start:
                out.append((round(start, 3), round(end, 3)))
        return out

    return draw()


def outages(
    duration_s: float = 60.0, *, max_outages: int = 2, max_len_s: float | None = None
) -> st.SearchStrategy[list[Outage]]:
    """Draw outages: windows in which every call fails with one status (0: cannot connect)."""
    longest = max_len_s if max_len_s is not None else duration_s / 2

    @st.composite
    def draw(data: st.DrawFn) -> list[Outage]:
        windows = data(_windows(duration_s, max_windows=max_outages, max_len_s=longest))
        return [Outage(start_s=a, end_s=b, status=data(_STATUSES)) for a, b in windows]

    return draw()


def flapping(duration_s: float = 60.0) -> st.SearchStrategy[list[Outage]]:
    """Draw a flapping provider: many short outages (0.5 to 3 s) with short gaps."""
    return outages(duration_s, max_outages=max(2, int(duration_s // 4)), max_len_s=3.0)


def latency_spikes(
    duration_s: float = 60.0, *, base_ms: float = 100.0, max_factor: float = 20.0
) -> st.SearchStrategy[list[Phase]]:
    """Draw phases in which answers are 2 to ``max_factor`` times slower than ``base_ms``."""

    @st.composite
    def draw(data: st.DrawFn) -> list[Phase]:
        windows = data(_windows(duration_s, max_windows=2, max_len_s=duration_s / 3))
        phases = [Phase(start_s=0.0, latency_ms=base_ms, latency_sigma=0.25)]
        for start, end in windows:
            factor = data(st.floats(2.0, max_factor))
            if start > 0:
                phases.append(Phase(start_s=start, latency_ms=base_ms * factor, latency_sigma=0.3))
            else:
                phases[0] = Phase(start_s=0.0, latency_ms=base_ms * factor, latency_sigma=0.3)
            phases.append(Phase(start_s=end, latency_ms=base_ms, latency_sigma=0.25))
        return phases

    return draw()


def rate_limits() -> st.SearchStrategy[dict[str, float]]:
    """Draw a rate limit: ``rate_limit_per_s`` (2 to 50) and ``retry_after_s`` (0.1 to 5)."""
    return st.fixed_dictionaries(
        {
            "rate_limit_per_s": st.floats(2.0, 50.0).map(lambda x: round(x, 1)),
            "retry_after_s": st.floats(0.1, 5.0).map(lambda x: round(x, 2)),
        }
    )


def slow_streams() -> st.SearchStrategy[dict[str, float]]:
    """Draw slow streams: a first chunk after 0.2 to 10 s, and up to half of them breaking."""
    return st.fixed_dictionaries(
        {
            "ttft_ms": st.floats(200.0, 10_000.0).map(lambda x: round(x, 1)),
            "stream_break_rate": st.floats(0.0, 0.5).map(lambda x: round(x, 3)),
        }
    )


def behaviours(
    duration_s: float = 60.0, *, base_ms: float = 100.0
) -> st.SearchStrategy[SimBehaviour]:
    """Draw one provider's behaviour: healthy, or with any mix of the faults above."""

    @st.composite
    def draw(data: st.DrawFn) -> SimBehaviour:
        fields: dict[str, Any] = {"latency_ms": base_ms, "latency_sigma": 0.25}
        kinds = data(
            st.sets(st.sampled_from(["outage", "flapping", "spike", "rate", "stream", "errors"]))
        )
        down: list[Outage] = []
        if "outage" in kinds:
            down.extend(data(outages(duration_s)))
        if "flapping" in kinds:
            down.extend(data(flapping(duration_s)))
        # Outages may not overlap in the drawn order; keep the first of overlapping ones.
        kept: list[Outage] = []
        for o in sorted(down, key=lambda o: o.start_s):
            if not kept or o.start_s >= kept[-1].end_s:
                kept.append(o)
        fields["outages"] = kept
        if "rate" in kinds:
            fields.update(data(rate_limits()))
        if "stream" in kinds:
            fields.update(data(slow_streams()))
        if "errors" in kinds:
            fields["fail_rate"] = data(st.floats(0.0, 0.3).map(lambda x: round(x, 3)))
            fields["fail_status"] = data(st.sampled_from([500, 502, 503]))
        behaviour = SimBehaviour(**fields)
        if "spike" in kinds:
            phases = data(latency_spikes(duration_s, base_ms=base_ms))
            if behaviour.fail_rate or behaviour.rate_limit_per_s is not None:
                from routeledger._scenario import PhaseError

                # A phase replaces the behaviour's failures and limit: carry them over.
                errors = (
                    [PhaseError(status=behaviour.fail_status, rate=behaviour.fail_rate)]
                    if behaviour.fail_rate
                    else []
                )
                phases = [
                    Phase(
                        start_s=p.start_s,
                        latency_ms=p.latency_ms,
                        latency_sigma=p.latency_sigma,
                        errors=errors,
                        rate_limit_per_s=behaviour.rate_limit_per_s,
                        retry_after_s=behaviour.retry_after_s,
                    )
                    for p in phases
                ]
            behaviour = SimBehaviour(**{**fields, "phases": phases})
        return behaviour

    return draw()


def fault_scenarios(
    providers: Sequence[str],
    duration_s: float = 60.0,
    *,
    keep_one_healthy: bool = False,
    base_ms: float = 100.0,
) -> st.SearchStrategy[dict[str, SimBehaviour]]:
    """Draw a behaviour for each of ``providers``.

    Args:
        providers: the provider names of the configuration under test.
        duration_s: the simulated timeline the faults fall in (about the workload's length).
        keep_one_healthy: one provider (drawn) answers every call throughout.
        base_ms: the providers' usual latency.
    """
    names = list(providers)
    if not names:
        raise ValueError("fault_scenarios needs at least one provider name")

    @st.composite
    def draw(data: st.DrawFn) -> dict[str, SimBehaviour]:
        drawn = {n: data(behaviours(duration_s, base_ms=base_ms)) for n in names}
        if keep_one_healthy:
            healthy = data(st.sampled_from(names))
            drawn[healthy] = SimBehaviour(latency_ms=base_ms, latency_sigma=0.25)
        return drawn

    return draw()
