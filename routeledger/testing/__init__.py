"""Test helpers for routeledger and its users: a loopback fake provider, quick configurations.

`FakeProvider` is a loopback HTTP/1.1 server that answers like an LLM provider in both the
OpenAI and the Anthropic wire formats, shaped by a `Behaviour` (latencies, failures, broken
bodies and streams, connection resets); `FakeStats` counts what it served; `ERROR_CODES`
lists the provider errors it can imitate. `no_backoff` gives a failover policy whose retries
never sleep.

Both formats live under ``url + "/v1"``:

- ``POST /v1/chat/completions``: OpenAI chat completions (JSON, or SSE ``data:`` chunks ending
  in ``data: [DONE]``, with a final usage chunk when ``stream_options.include_usage`` is true);
- ``POST /v1/messages``: Anthropic messages (JSON, or the ``message_start`` ...
  ``message_stop`` event sequence);
- ``GET /v1/models`` (and ``GET /v1/models/{id}``): the configured models, in a shape both
  clients accept (OpenAI ``object``/``owned_by`` plus Anthropic ``type``/``display_name``).

Property-based simulation tests of your own configuration: `simulate` runs a configuration
(a ``RuntimeConfig`` or a ``routeledger.toml``) against simulated providers (`SimBehaviour`,
`Outage`, `Phase`) and a `Workload` on virtual time and returns a `SimRun`; the ``assert_*``
helpers check the invariants (no request lost, budgets held, success while a provider is
healthy, cost under a cap, live equals replay); `fault_scenarios` and its parts (`outages`,
`latency_spikes`, `rate_limits`, `flapping`, `slow_streams`, `behaviours`) are Hypothesis
strategies that draw faults (they need Hypothesis, imported only when one is used).

Modules: ``_behaviour`` (what to do), ``_answer`` (doing it for one request), ``_exchange``
(the per-request object), ``_server`` (lifecycle, connections), ``_http`` (h11 parsing, raw
response bytes, resets), ``_openai`` and ``_anthropic`` (the formats), ``_config``; ``_sim``,
``_invariants`` and ``_strategies`` for simulation tests.

Example:
    >>> with FakeProvider(Behaviour(latency_ms=5)) as fake:  # doctest: +SKIP
    ...     httpx.post(fake.url + "/v1/chat/completions", json={...})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routeledger._scenario import Arrival, Outage, Phase, PhaseError, SimBehaviour
from routeledger.testing._behaviour import ERROR_CODES, Behaviour
from routeledger.testing._config import no_backoff
from routeledger.testing._invariants import (
    InvariantViolated,
    assert_budgets_held,
    assert_cost_under,
    assert_live_equals_replay,
    assert_no_request_lost,
    assert_success_while_healthy,
)
from routeledger.testing._server import FakeProvider
from routeledger.testing._sim import SimRun, Workload, simulate
from routeledger.testing._stats import FakeStats

if TYPE_CHECKING:
    from routeledger.testing._strategies import (
        behaviours,
        fault_scenarios,
        flapping,
        latency_spikes,
        outages,
        rate_limits,
        slow_streams,
    )

__all__ = [
    "ERROR_CODES",
    "Arrival",
    "Behaviour",
    "FakeProvider",
    "FakeStats",
    "InvariantViolated",
    "Outage",
    "Phase",
    "PhaseError",
    "SimBehaviour",
    "SimRun",
    "Workload",
    "assert_budgets_held",
    "assert_cost_under",
    "assert_live_equals_replay",
    "assert_no_request_lost",
    "assert_success_while_healthy",
    "behaviours",
    "fault_scenarios",
    "flapping",
    "latency_spikes",
    "no_backoff",
    "outages",
    "rate_limits",
    "simulate",
    "slow_streams",
]

_STRATEGIES = frozenset(
    {
        "behaviours",
        "fault_scenarios",
        "flapping",
        "latency_spikes",
        "outages",
        "rate_limits",
        "slow_streams",
    }
)


def __getattr__(name: str) -> Any:
    # The strategies import Hypothesis, which a user of the fake provider may not have.
    if name in _STRATEGIES:
        from routeledger.testing import _strategies

        return getattr(_strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
