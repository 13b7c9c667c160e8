"""Reading a log as a trace: bucketed provider behaviour, arrivals, recorded figures."""

from __future__ import annotations

from pathlib import Path

from routeledger._replay import open_readonly
from routeledger._scenario import SimBehaviour, behaviour_at
from routeledger._trace import ProviderTrace, Window, read_arrivals, read_trace, status_of
from routeledger.events import AttemptFailed
from routeledger.sim import load_scenario, simulate

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "scenario.toml"


def test_a_bucket_where_every_call_failed_is_an_outage_phase_that_carries_on() -> None:
    """Failures only, then silence: the failing phase lasts until a success is seen."""
    trace = ProviderTrace("p", 10.0)
    for i in range(20):
        trace.succeeded(i * 0.5, 100.0, 30)
    for i in range(5):
        trace.failed(20.0 + i, 503, 2.0, None)
    trace.succeeded(65.0, 110.0, 30)
    phases = trace.phases()
    assert [p.start_s for p in phases] == [0.0, 20.0, 60.0]
    assert [(e.status, e.rate) for e in phases[1].errors] == [(503, 1.0)]
    assert phases[1].fail_latency_ms == 2.0
    assert phases[2].errors == [] and phases[2].latency_ms == 110.0


def test_health_probes_fill_buckets_that_got_no_call() -> None:
    """A good probe after an outage ends it; a bad one in a silent bucket starts one."""
    trace = ProviderTrace("p", 10.0)
    trace.succeeded(1.0, 50.0, 10)
    trace.failed(12.0, 0, 1.0, None)
    trace.probed(25.0, True)
    trace.probed(35.0, False)
    phases = trace.phases()
    assert [(p.start_s, [e.status for e in p.errors]) for p in phases] == [
        (0.0, []),
        (10.0, [0]),
        (20.0, []),
        (30.0, [503]),
    ]


def test_429s_become_a_rate_limit_with_the_recorded_retry_after() -> None:
    """The most calls admitted in a second while 429s were sent is the phase's limit."""
    trace = ProviderTrace("p", 10.0)
    for second in range(10):
        for k in range(4):
            trace.succeeded(second + k * 0.2, 80.0, 10)
        trace.failed(second + 0.9, 429, 1.0, 2.0)
    (phase,) = trace.phases()
    assert phase.rate_limit_per_s == 4.0 and phase.retry_after_s == 2.0
    assert phase.errors == []


def test_a_phase_draws_its_errors_by_their_rates() -> None:
    """behaviour_at picks the phase in force and the error the draw falls in."""
    trace = ProviderTrace("p", 10.0)
    for i in range(6):
        trace.succeeded(i, 100.0, 10)
    for i in range(2):
        trace.failed(i, 500, 5.0, None)
    for i in range(2):
        trace.failed(i, 503, 5.0, None)
    behaviour = SimBehaviour(phases=trace.phases())
    assert behaviour_at(behaviour, 3.0, 0.1).fail_status == 500
    assert behaviour_at(behaviour, 3.0, 0.3).fail_status == 503
    assert behaviour_at(behaviour, 3.0, 0.5).fail_rate == 0.0


def test_statuses_stand_for_what_failed() -> None:
    """No status: a connect error is 0, a timeout 504, a 429 without status still 429."""

    def failed(error: str, status: int | None = None) -> AttemptFailed:
        return AttemptFailed(
            ts=0.0, request_id="r", attempt=1, provider="p", model="m", error=error, status=status
        )

    assert status_of(failed("ProviderConnectError")) == 0
    assert status_of(failed("ProviderTimeout")) == 504
    assert status_of(failed("RateLimited")) == 429
    assert status_of(failed("ProviderUnavailable", 529)) == 529


def test_a_simulated_log_reads_back_as_its_workload_and_figures(tmp_path: Path) -> None:
    """The trace of a simulated log has its arrivals, its figures and its rate limit."""
    db = tmp_path / "sim.sqlite"
    scenario = load_scenario(EXAMPLE)
    scenario.requests = 500
    result = simulate(scenario, seed=2, db=db)
    with open_readonly(db) as store:
        trace = read_trace(store)
        arrivals = list(read_arrivals(store, origin=trace.origin or 0.0))
        window = Window(start=(trace.origin or 0.0) + 5.0, end=(trace.origin or 0.0) + 10.0)
        some = list(read_arrivals(store, origin=window.start or 0.0, window=window))
    assert trace.figures.result().completed == result.completed == 500
    assert len(arrivals) == trace.arrivals == 500
    assert arrivals[0].model == "chat" and arrivals[0].input_tokens == 101
    assert all(0 <= a.at_s < 5 for a in some) and 0 < len(some) < 500
    capped = trace.providers["capped"].phases()
    assert capped[0].rate_limit_per_s is not None and capped[0].rate_limit_per_s <= 10
