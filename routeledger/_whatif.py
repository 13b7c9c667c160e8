"""What-if: the recorded requests replayed through the simulation under other settings.

:func:`whatif` reads a log twice, streaming (:mod:`routeledger._trace`): once for each
provider's behaviour over time and the recorded figures, once more for the arrivals, which
the simulation consumes as it goes. The simulated run's events are folded into figures as the
log writer commits them and then dropped, so memory stays flat whatever the log's length.

The method is trace-driven: a simulated call to a provider at simulated time ``t`` answers as
that provider was observed to answer at ``t`` in the log (latency, errors with their statuses
and ``Retry-After``); a provider the log never tried has no trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from routeledger._scenario import Scenario, SimBehaviour, scenario_from_dict
from routeledger._toml import read_toml
from routeledger._trace import (
    DEFAULT_BUCKET_S,
    Figures,
    FigureSet,
    Trace,
    Window,
    read_arrivals,
    read_trace,
)
from routeledger.events import ConfigError, Event, RuntimeConfig
from routeledger.sim import Simulation

if TYPE_CHECKING:
    from routeledger.store import Projection, StoredEvent

P = TypeVar("P", bound="Projection")

__all__ = [
    "SECRET_FIELDS",
    "WhatIf",
    "config_data",
    "scenario_config",
    "whatif",
    "whatif_lines",
    "whatif_scenario",
]


class WhatIf(msgspec.Struct, frozen=True, kw_only=True):
    """Recorded figures next to those of the same requests simulated under other settings."""

    recorded: FigureSet
    whatif: FigureSet
    recorded_strategy: str
    strategy: str
    config: str
    """Where the what-if configuration came from: ``"recorded"`` or a file's path."""
    seed: int
    bucket_s: float
    window_s: float
    traced: list[str]
    """Providers with a recorded trace (the simulation replays their behaviour)."""
    untraced: list[str]
    """Providers of the what-if configuration the log never tried: they have no trace."""
    method: str
    limits: list[str]
    baseline: str = "recorded"
    """What ``recorded`` holds: ``"recorded"`` (a log's figures) or ``"scenario"``."""


SECRET_FIELDS = ("api_key", "api_key_env", "api_keys", "api_key_envs", "headers")


def scenario_config(
    data: Mapping[str, Any], *, simulation: Mapping[str, Any] | None = None
) -> Scenario:
    """Return a scenario for a configuration given as plain data.

    Secrets and the names of their environment variables are dropped (simulated providers
    need none), and so is a ``[simulation]`` table, replaced by ``simulation`` if given; each
    provider's ``sim`` table, if any, stays: it describes a provider that has no trace.
    """
    data = dict(data)
    data.pop("simulation", None)
    if simulation is not None:
        data["simulation"] = dict(simulation)
    providers = []
    for raw in data.get("providers", []):
        raw = dict(raw) if isinstance(raw, Mapping) else raw
        if isinstance(raw, dict):
            for key in SECRET_FIELDS:
                raw.pop(key, None)
        providers.append(raw)
    data["providers"] = providers
    # The simulated log is folded and dropped: it has nothing to snapshot.
    log = data.get("log")
    data["log"] = {**(dict(log) if isinstance(log, Mapping) else {}), "snapshot_every": 0}
    return scenario_from_dict(data)


class _FoldingStore:
    """An event store that folds what is appended into figures and keeps nothing."""

    skipped_unknown = 0

    def __init__(self, figures: Figures) -> None:
        self.figures = figures
        self.position = 0

    def append(self, events: Sequence[Event]) -> list[int]:
        for event in events:
            self.figures.apply(event)
        first = self.position + 1
        self.position += len(events)
        return list(range(first, self.position + 1))

    def read(
        self, from_position: int = 1, *, limit: int | None = None, strict: bool = True
    ) -> Iterator[StoredEvent]:
        return iter(())

    def read_request(self, request_id: str, *, strict: bool = True) -> Iterator[StoredEvent]:
        return iter(())

    def replay(self, projection: P, *, from_position: int = 1, strict: bool = True) -> P:
        return projection

    def last_position(self) -> int:
        return self.position

    def close(self) -> None:
        pass


def config_data(
    trace: Trace, config: str | os.PathLike[str] | RuntimeConfig | None
) -> tuple[dict[str, Any], str]:
    """Return the configuration to simulate as plain data, and where it came from."""
    if config is None:
        if trace.summary is None:
            raise ConfigError(
                [
                    "the log does not record its configuration (a simulated log, or one "
                    "written before config.applied carried it): pass a configuration"
                ]
            )
        return dict(trace.summary), "recorded"
    if isinstance(config, RuntimeConfig):
        from routeledger._startup import config_summary

        return config_summary(config), "given"
    return dict(read_toml(config)), os.fspath(config)


def whatif(
    db: str | os.PathLike[str],
    *,
    strategy: str | None = None,
    config: str | os.PathLike[str] | RuntimeConfig | None = None,
    seed: int = 0,
    bucket_s: float = DEFAULT_BUCKET_S,
    window: Window | None = None,
) -> WhatIf:
    """Replay the requests of the log at ``db`` under another strategy or configuration.

    Args:
        db: the event log (read-only).
        strategy: simulate with this routing strategy.
        config: simulate with this configuration (a TOML file or a ``RuntimeConfig``); by
            default the one the log recorded last. A provider of it that the log never tried
            has no trace: it answers as its ``[providers.sim]`` table says, else as a
            default simulated provider (100 ms, no errors), and the result says so.
        seed: seeds the simulation; the same seed gives the same answer.
        bucket_s: the resolution of the providers' traces, in seconds.
        window: replay only this part of the log (Unix times).

    Raises:
        ConfigError: neither ``strategy`` nor ``config`` given, the log has no recorded
            configuration to start from, or the configuration is invalid.
        StoreError: ``db`` is not a readable event log.
    """
    from routeledger._replay import open_readonly

    if strategy is None and config is None:
        raise ConfigError(["give a strategy or a configuration to compare with"])
    store = open_readonly(db)
    try:
        trace = read_trace(store, window=window, bucket_s=bucket_s)
        data, source = config_data(trace, config)
        if strategy is not None:
            data["strategy"] = strategy
        scenario = scenario_config(data)
        behaviours = trace.behaviours()
        names = [p.name for p in scenario.config.providers]
        untraced = [n for n in names if n not in behaviours]
        explicit = {n for n, b in scenario.behaviours.items() if b != SimBehaviour()}
        for name in names:
            if name in behaviours:
                scenario.behaviours[name] = behaviours[name]
        figures = Figures()
        sim = Simulation(scenario, seed=seed, store=_FoldingStore(figures))
        origin = trace.origin or 0.0
        sim.schedule_trace(read_arrivals(store, origin=origin, window=window))
        sim.run()
    finally:
        store.close()
    limits = [
        "trace-driven: a provider answers a simulated call as it was observed to answer at that "
        "moment of the log; where it got no call (its circuit open, say) its last observed "
        "behaviour (or its health probes) carries on",
        "requests are replayed by arrival time, model, size, max_tokens, stream, capabilities, "
        "deadline and preferred provider; pools and A/B tests of a request are not replayed",
        "a timeout is replayed as a 504 that took as long as the recorded one",
    ]
    for name in untraced:
        how = "its [providers.sim] table" if name in explicit else "a default (100 ms, no errors)"
        limits.append(f"provider {name!r} was never tried in the log: it has no trace ({how})")
    return WhatIf(
        recorded=trace.figures.result(),
        whatif=figures.result(),
        recorded_strategy=trace.strategy,
        strategy=scenario.config.strategy,
        config=source,
        seed=seed,
        bucket_s=bucket_s,
        window_s=round(trace.duration_s, 3),
        traced=sorted(behaviours),
        untraced=untraced,
        method=(
            f"trace-driven simulation of {trace.arrivals} recorded request(s) over "
            f"{trace.duration_s:.1f} s, providers' behaviour in {bucket_s:g} s buckets"
        ),
        limits=limits,
    )


def whatif_scenario(
    path: str | os.PathLike[str],
    *,
    strategy: str | None = None,
    config: str | os.PathLike[str] | RuntimeConfig | None = None,
    seed: int = 0,
) -> WhatIf:
    """Compare a scenario file (an extracted incident, say) with itself under other settings.

    The scenario as written is the baseline ("recorded" in the result); the what-if keeps
    its workload and its providers' behaviours and changes the strategy or configuration.
    """
    from routeledger._startup import config_summary
    from routeledger.sim import load_scenario

    if strategy is None and config is None:
        raise ConfigError(["give a strategy or a configuration to compare with"])
    base = load_scenario(path)
    if isinstance(config, RuntimeConfig):
        data, source = config_summary(config), "given"
    elif config is not None:
        data, source = dict(read_toml(config)), os.fspath(config)
    else:
        data, source = config_summary(base.config), "recorded"
    if strategy is not None:
        data["strategy"] = strategy
    other = scenario_config(data)
    names = [p.name for p in other.config.providers]
    explicit = {n for n, b in other.behaviours.items() if b != SimBehaviour()}
    behaviours = {n: base.behaviours[n] for n in names if n in base.behaviours}
    untraced = [n for n in names if n not in base.behaviours]
    other = msgspec.structs.replace(
        base, config=other.config, behaviours={**other.behaviours, **behaviours}
    )
    figures = []
    for scenario in (base, other):
        fold = Figures()
        Simulation(scenario, seed=seed, store=_FoldingStore(fold)).run()
        figures.append(fold.result())
    limits = ["the baseline is the scenario simulated as written, not a recorded log"]
    for name in untraced:
        how = "its [providers.sim] table" if name in explicit else "a default (100 ms, no errors)"
        limits.append(f"provider {name!r} has no behaviour in the scenario ({how})")
    n = len(base.arrivals) or base.requests
    return WhatIf(
        recorded=figures[0],
        whatif=figures[1],
        recorded_strategy=base.config.strategy,
        strategy=other.config.strategy,
        config=source,
        seed=seed,
        bucket_s=0.0,
        window_s=base.arrivals[-1].at_s if base.arrivals else 0.0,
        traced=sorted(behaviours),
        untraced=untraced,
        method=f"the scenario {os.fspath(path)} ({n} request(s)) simulated under both settings",
        limits=limits,
        baseline="scenario",
    )


def whatif_lines(result: WhatIf) -> list[str]:
    """Return the what-if as text: recorded and simulated figures side by side."""
    r, w = result.recorded, result.whatif
    header = f"what-if: strategy {result.strategy}"
    if result.config != "recorded":
        header += f", configuration {result.config}"
    header += f" ({result.baseline}: {result.recorded_strategy or '?'}), seed {result.seed}"
    rows: list[tuple[str, str, str]] = [
        ("requests", str(r.requests), str(w.requests)),
        ("success rate", _pct(r.success_rate), _pct(w.success_rate)),
        ("attempts/request", f"{r.attempts_per_request:.2f}", f"{w.attempts_per_request:.2f}"),
        ("latency p50 ms", f"{r.latency_p50_ms:.1f}", f"{w.latency_p50_ms:.1f}"),
        ("latency p95 ms", f"{r.latency_p95_ms:.1f}", f"{w.latency_p95_ms:.1f}"),
        ("latency p99 ms", f"{r.latency_p99_ms:.1f}", f"{w.latency_p99_ms:.1f}"),
        ("cost", f"{r.cost:.6f}", f"{w.cost:.6f}"),
    ]
    for name in sorted(set(r.share) | set(w.share)):
        rows.append((f"share {name}", _pct(r.share.get(name, 0.0)), _pct(w.share.get(name, 0.0))))
    width = max(len(label) for label, _, _ in rows)
    lines = [header, f"method: {result.method}", ""]
    lines.append(f"{'':<{width}}  {result.baseline:>10}  {'what-if':>10}")
    lines.extend(f"{label:<{width}}  {a:>10}  {b:>10}" for label, a, b in rows)
    lines.append("")
    lines.append("limits:")
    lines.extend(f"- {limit}" for limit in result.limits)
    return lines


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"
