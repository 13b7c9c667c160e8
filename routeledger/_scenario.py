"""Simulation scenarios: simulated providers' behaviours and a workload, from TOML or data.

See :mod:`routeledger.sim` for the file format; every problem in a scenario is reported at
once in one ``ConfigError``, and unknown keys are refused.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Mapping
from typing import Any

import msgspec

from routeledger._toml import read_toml
from routeledger.events import ConfigError, RuntimeConfig

__all__ = [
    "Arrival",
    "Outage",
    "Phase",
    "PhaseError",
    "Scenario",
    "SimBehaviour",
    "behaviour_at",
    "load_scenario",
    "scenario_from_dict",
]


class Outage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """From ``start_s`` to ``end_s`` (simulated seconds) every call fails with ``status``
    (or, with status 0, cannot connect)."""

    start_s: float
    end_s: float
    status: int = 503


class PhaseError(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A share of a phase's calls that fail with ``status`` (0: cannot connect)."""

    status: int
    rate: float
    retry_after_s: float | None = None
    """Sent as ``Retry-After`` (a 429's, say): what the log recorded."""


class Phase(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a provider answered from ``start_s`` on, until the next phase (a recorded trace).

    A phase replaces the behaviour's latency, failures and output size; a call's error is
    drawn from ``errors`` (their rates add up to at most 1).
    """

    start_s: float
    latency_ms: float
    latency_sigma: float = 0.0
    fail_latency_ms: float = 20.0
    output_tokens: int = 32
    errors: list[PhaseError] = []
    rate_limit_per_s: float | None = None
    """Calls admitted per second; beyond, 429 with the phase's ``retry_after_s``."""
    retry_after_s: float = 1.0


class Arrival(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One recorded request: when it arrived (simulated seconds) and what it asked for."""

    at_s: float
    model: str
    input_tokens: int = 100
    max_tokens: int | None = None
    stream: bool = False
    capabilities: list[str] = []
    deadline_s: float | None = None
    preferred_provider: str | None = None
    session_id: str | None = None
    metadata: dict[str, str] | None = None
    """The request's tags (``None`` when it had none), for budgets scoped by a tag."""


class SimBehaviour(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a simulated provider answers."""

    latency_ms: float = 100.0
    """Median latency of a success (log-normal)."""
    latency_sigma: float = 0.25
    """Log-normal shape: 0 for a fixed latency."""
    fail_rate: float = 0.0
    fail_status: int = 500
    fail_latency_ms: float = 20.0
    rate_limit_per_s: float | None = None
    """Calls admitted per sliding second; beyond it, 429 with ``Retry-After: retry_after_s``."""
    retry_after_s: float = 1.0
    output_tokens: int = 32
    outages: list[Outage] = []
    ttft_ms: float | None = None
    """When a stream's first chunk arrives (``None``: after a fifth of its latency)."""
    stream_break_rate: float = 0.0
    """The share of streams that break after their first chunk."""
    fail_retry_after_s: float | None = None
    """``Retry-After`` of a ``fail_status`` failure (a 429's or a 5xx's)."""
    phases: list[Phase] = []
    """A recorded trace: piecewise behaviour over time (see :func:`behaviour_at`)."""
    rpm: int | None = None
    """The provider's own requests-per-minute limit (a token bucket, refilled continuously,
    as real providers state theirs); beyond it, 429 with ``Retry-After: retry_after_s``."""
    tpm: int | None = None
    """The provider's own tokens-per-minute limit (prompt estimate plus ``max_tokens``)."""
    key_statuses: list[int] = []
    """The status each of the provider's API keys is answered with, in the order the runtime
    rotates them (``api_key``, ``api_keys``, ``api_key_envs``); 0 (or a key past the list's
    end) is served normally. ``[401, 0]``: the first key is revoked."""


def behaviour_at(behaviour: SimBehaviour, t: float, draw: float) -> SimBehaviour:
    """Return how ``behaviour`` answers a call at ``t`` (simulated seconds).

    Without phases that is ``behaviour`` itself. With phases, the one in force at ``t`` (the
    first before it starts) gives the latency and output size, and ``draw`` (uniform in
    [0, 1)) picks the call's error, if any, from the phase's error rates. Outages still apply.
    """
    if not behaviour.phases:
        return behaviour
    # A long trace has thousands of phases: find the one in force by bisection.
    index = bisect.bisect_right(behaviour.phases, t, key=_phase_start)
    phase = behaviour.phases[max(0, index - 1)]
    failing: PhaseError | None = None
    edge = 0.0
    for error in phase.errors:
        edge += error.rate
        if draw < edge:
            failing = error
            break
    return msgspec.structs.replace(
        behaviour,
        latency_ms=phase.latency_ms,
        latency_sigma=phase.latency_sigma,
        fail_latency_ms=phase.fail_latency_ms,
        output_tokens=phase.output_tokens,
        rate_limit_per_s=phase.rate_limit_per_s,
        retry_after_s=phase.retry_after_s,
        fail_rate=1.0 if failing is not None else 0.0,
        fail_status=failing.status if failing is not None else behaviour.fail_status,
        fail_retry_after_s=failing.retry_after_s if failing is not None else None,
        phases=[],
    )


def _phase_start(phase: Phase) -> float:
    return phase.start_s


class Scenario(msgspec.Struct, kw_only=True):
    """A simulated workload against a configuration."""

    config: RuntimeConfig
    behaviours: dict[str, SimBehaviour]
    requests: int = 1000
    rate_per_s: float = 20.0
    model: str = ""
    max_tokens: int = 64
    prompt_chars: int = 400
    deadline_s: float | None = None
    stream_share: float = 0.0
    """The share of requests that stream."""
    arrivals: list[Arrival] = []
    """A recorded arrival process; when given, ``requests`` and ``rate_per_s`` are unused."""
    sessions: int = 0
    """How many sessions the requests belong to (request ``i`` is in session ``i % n``,
    ``Request.session_id`` ``"session-<k>"``); 0: none has a session."""
    metadata: dict[str, str] = {}
    """Tags (metadata) every request carries, for budgets scoped by a tag."""


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read a scenario TOML file (see the module docstring)."""
    return scenario_from_dict(read_toml(path))


def scenario_from_dict(data: Mapping[str, Any]) -> Scenario:
    """Build a scenario from plain data (the parsed TOML).

    Raises:
        ConfigError: a field is unknown, of the wrong type or out of range (a typo must not
            silently simulate something else than what was meant).
    """
    data = dict(data)
    sim = data.pop("simulation", {})
    if not isinstance(sim, Mapping):
        raise ConfigError(["[simulation] must be a table"])
    sim = dict(sim)
    unknown = sorted(set(sim) - _SIMULATION_FIELDS)
    if unknown:
        raise ConfigError(
            [f"[simulation]: unknown field(s) {unknown} (known: {sorted(_SIMULATION_FIELDS)})"]
        )
    raw_providers = data.pop("providers", [])
    if not isinstance(raw_providers, list):
        raise ConfigError(["providers must be an array of tables ([[providers]])"])
    behaviours: dict[str, SimBehaviour] = {}
    providers = []
    problems: list[str] = []
    for i, raw in enumerate(raw_providers):
        if not isinstance(raw, Mapping):
            problems.append(f"providers[{i}] must be a table")
            continue
        raw = dict(raw)
        behaviour = raw.pop("sim", {})
        raw.setdefault("kind", "openai")
        raw.setdefault("base_url", f"http://127.0.0.1/sim/{raw.get('name', i)}")
        try:
            converted = msgspec.convert(behaviour, SimBehaviour)
        except msgspec.ValidationError as exc:
            problems.append(f"providers[{i}].sim: {exc}")
        else:
            problems.extend(f"providers[{i}].sim: {p}" for p in _check_behaviour(converted))
            behaviours[str(raw.get("name"))] = converted
        providers.append(raw)
    data["providers"] = providers
    if problems:
        raise ConfigError(problems)
    config = RuntimeConfig.from_dict(data)
    try:
        scenario = msgspec.convert(
            {"config": config, "behaviours": behaviours, **sim},
            Scenario,
            from_attributes=True,
        )
    except msgspec.ValidationError as exc:
        raise ConfigError([f"[simulation]: {exc}"]) from None
    if not scenario.model:
        scenario.model = config.providers[0].models[0].name
    if not any(p.model(scenario.model) is not None for p in config.providers):
        problems.append(f"[simulation]: no provider serves model {scenario.model!r}")
    if scenario.requests < 0:
        problems.append("[simulation]: requests must be >= 0")
    if not (scenario.rate_per_s > 0 and math.isfinite(scenario.rate_per_s)):
        problems.append("[simulation]: rate_per_s must be a finite number > 0")
    if scenario.deadline_s is not None and not scenario.deadline_s > 0:
        problems.append("[simulation]: deadline_s must be > 0")
    for i, a in enumerate(scenario.arrivals):
        if not (a.at_s >= 0 and math.isfinite(a.at_s)) or a.input_tokens < 1:
            problems.append(f"[simulation]: arrivals[{i}]: need at_s >= 0 and input_tokens >= 1")
        if i and a.at_s < scenario.arrivals[i - 1].at_s:
            problems.append(f"[simulation]: arrivals[{i}]: arrivals must be in time order")
    if not 0.0 <= scenario.stream_share <= 1.0:
        problems.append("[simulation]: stream_share must be between 0 and 1")
    if scenario.sessions < 0:
        problems.append("[simulation]: sessions must be >= 0")
    if scenario.prompt_chars < 0 or scenario.max_tokens < 1:
        problems.append("[simulation]: prompt_chars must be >= 0 and max_tokens >= 1")
    if problems:
        raise ConfigError(problems)
    return scenario


_SIMULATION_FIELDS = frozenset(Scenario.__struct_fields__) - {"config", "behaviours"}


def _check_behaviour(b: SimBehaviour) -> list[str]:
    """Return what is out of range in a simulated provider's behaviour."""
    problems = []
    for field in ("latency_ms", "latency_sigma", "fail_latency_ms", "retry_after_s"):
        value = getattr(b, field)
        if not (value >= 0 and math.isfinite(value)):
            problems.append(f"{field} must be a finite number >= 0")
    if not 0.0 <= b.fail_rate <= 1.0:
        problems.append("fail_rate must be between 0 and 1")
    if not 0.0 <= b.stream_break_rate <= 1.0:
        problems.append("stream_break_rate must be between 0 and 1")
    if b.ttft_ms is not None and not (b.ttft_ms >= 0 and math.isfinite(b.ttft_ms)):
        problems.append("ttft_ms must be a finite number >= 0")
    if b.rate_limit_per_s is not None and not b.rate_limit_per_s > 0:
        problems.append("rate_limit_per_s must be > 0")
    if b.output_tokens < 0:
        problems.append("output_tokens must be >= 0")
    if not (b.fail_status == 0 or 400 <= b.fail_status <= 599):
        problems.append("fail_status must be 0 (cannot connect) or an HTTP error status")
    if not all(s == 0 or 400 <= s <= 599 for s in b.key_statuses):
        problems.append("key_statuses must hold 0 (served) or HTTP error statuses")
    for j, ph in enumerate(b.phases):
        if not (ph.start_s >= 0 and ph.latency_ms >= 0 and ph.latency_sigma >= 0):
            problems.append(f"phases[{j}]: need start_s, latency_ms and latency_sigma >= 0")
        if j and ph.start_s < b.phases[j - 1].start_s:
            problems.append(f"phases[{j}]: phases must be in time order")
        rates = [e.rate for e in ph.errors]
        if not (all(r >= 0 for r in rates) and sum(rates) <= 1.0 + 1e-9):
            problems.append(f"phases[{j}]: error rates must be >= 0 and add up to at most 1")
        for e in ph.errors:
            if not (e.status == 0 or 400 <= e.status <= 599):
                problems.append(f"phases[{j}]: status must be 0 (cannot connect) or 400-599")
    for j, o in enumerate(b.outages):
        if not 0 <= o.start_s < o.end_s:
            problems.append(f"outages[{j}]: need 0 <= start_s < end_s")
        if not (o.status == 0 or 400 <= o.status <= 599):
            problems.append(f"outages[{j}]: status must be 0 (cannot connect) or 400-599")
    return problems
