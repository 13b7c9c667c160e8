"""Run a user's own configuration against simulated providers and a workload in one call.

:func:`simulate` takes a configuration (a ``RuntimeConfig``, a TOML file such as a
``routeledger.toml``, or plain data), a description of how each provider behaves and a
workload, runs the deterministic simulation (the runtime's own routing, failover, health and
log-writer code on virtual time) and returns a :class:`SimRun`: the events written, the live
figures, and what the invariant helpers of :mod:`routeledger.testing._invariants` check.

API keys and the names of their environment variables are dropped from the configuration:
simulated providers need none, so a production configuration runs as it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

from routeledger._scenario import Arrival, Scenario, SimBehaviour, behaviour_at
from routeledger._toml import read_toml
from routeledger._trace import Figures, FigureSet
from routeledger._whatif import scenario_config
from routeledger.events import ConfigError, Event, Projections, RuntimeConfig
from routeledger.sim import SimResult, Simulation
from routeledger.store import MemoryStore

__all__ = ["SimRun", "Workload", "simulate"]


class Workload(msgspec.Struct, frozen=True, kw_only=True):
    """The requests of a simulated run: Poisson arrivals of alike requests, or given ones."""

    requests: int = 200
    rate_per_s: float = 20.0
    model: str = ""
    """The model asked for (default: the first provider's first model)."""
    max_tokens: int = 64
    prompt_chars: int = 400
    stream_share: float = 0.0
    """The share of requests that stream."""
    deadline_s: float | None = None
    arrivals: list[Arrival] = []
    """Recorded arrivals; when given, ``requests`` and ``rate_per_s`` are unused."""


class SimRun:
    """What one simulated run did: its events, figures and ground truth.

    Attributes:
        scenario: the scenario that ran (configuration, behaviours, workload).
        result: the simulation's counts and its live projections.
        events: every stored event, in log order.
        figures: success rate, attempts per request, latency percentiles, cost, shares.
        max_in_flight: the most calls each provider had in flight at once.
        origin: the Unix time of simulated second 0 (events' ``ts`` minus this is the
            simulated time).
    """

    def __init__(self, scenario: Scenario, sim: Simulation, result: SimResult) -> None:
        self.scenario = scenario
        self.result = result
        store = sim.store
        self.events: list[Event] = [event for _, event in store.read()]
        figures = Figures()
        for event in self.events:
            figures.apply(event)
        self.figures: FigureSet = figures.result()
        self.max_in_flight = dict(sim.max_in_flight)
        self.origin = sim.clock.time() - sim.clock.monotonic()

    @property
    def live(self) -> Projections:
        """Return the projections the log writer folded as the run went."""
        assert self.result.projections is not None
        return self.result.projections

    def replayed(self) -> Projections:
        """Return fresh projections folded from the stored events."""
        projections = Projections()
        for position, event in enumerate(self.events, start=1):
            projections.apply(position, event)
        return projections

    def healthy_at(self, provider: str, t: float) -> bool:
        """Return whether ``provider`` answered every call at simulated time ``t``.

        That is the ground truth the run was given, not what routeledger concluded: no
        outage, no failures, no rate limit.
        """
        behaviour = self.scenario.behaviours.get(provider, SimBehaviour())
        if any(o.start_s <= t < o.end_s for o in behaviour.outages):
            return False
        # A draw of 0 fails the call if the phase in force fails any share of calls.
        now = behaviour_at(behaviour, t, 0.0)
        return now.fail_rate == 0 and now.rate_limit_per_s is None


def _config_data(
    config: RuntimeConfig | str | os.PathLike[str] | Mapping[str, Any],
) -> dict[str, Any]:
    if isinstance(config, RuntimeConfig):
        from routeledger._startup import config_summary

        return config_summary(config)
    if isinstance(config, Mapping):
        return dict(config)
    return dict(read_toml(config))


def simulate(
    config: RuntimeConfig | str | os.PathLike[str] | Mapping[str, Any],
    behaviours: Mapping[str, SimBehaviour] | None = None,
    workload: Workload | None = None,
    *,
    seed: int = 0,
    strategy: str | None = None,
) -> SimRun:
    """Run ``config`` against simulated providers on virtual time and return the run.

    Args:
        config: the configuration to test (a ``RuntimeConfig``, a TOML file or its data);
            a provider's ``[providers.sim]`` table, if any, gives its behaviour.
        behaviours: how each provider answers, by name (overrides the file's); a provider
            missing here answers as a default simulated one (100 ms, no errors).
        workload: the requests (default: 200 at 20 a second).
        seed: seeds every random choice; the same seed gives the same run.
        strategy: replace the configuration's routing strategy.

    Raises:
        ConfigError: the configuration, a behaviour or the workload is invalid.
    """
    data = _config_data(config)
    if strategy is not None:
        data["strategy"] = strategy
    workload = workload or Workload()
    given = dict(behaviours or {})
    providers = [dict(p) for p in data.get("providers", [])]
    unknown = sorted(set(given) - {p.get("name") for p in providers})
    if unknown:
        raise ConfigError([f"behaviours: no provider named {name!r}" for name in unknown])
    for p in providers:
        if p.get("name") in given:
            p["sim"] = msgspec.to_builtins(given[p["name"]])
    data["providers"] = providers
    # One validation for all of it: configuration, behaviours and workload.
    workload_data = {k: v for k, v in msgspec.to_builtins(workload).items() if v is not None}
    scenario = scenario_config(data, simulation=workload_data)
    sim = Simulation(scenario, seed=seed, store=MemoryStore())
    result = sim.run()
    return SimRun(scenario, sim, result)
