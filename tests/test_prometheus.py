"""The Prometheus collector: names, labels and values against a real runtime's own figures."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from routeledger import (
    FailoverConfig,
    HealthConfig,
    Requirements,
    RoutingError,
    Runtime,
    replay,
)
from routeledger.events import LatencyHistogram
from routeledger.fake_provider import Behaviour, FakeProvider
from routeledger.prometheus import DEFAULT_BUCKETS_S, LogCollector, _BucketMap, register

Samples = dict[str, list[tuple[dict[str, str], float]]]
"""Sample name -> [(labels, value)] of one scrape."""

LIVE_ONLY = {
    "routeledger_in_flight_requests",
    "routeledger_log_pending_events",
    "routeledger_log_store_failing",
}


def scrape(registry: CollectorRegistry) -> Samples:
    """Scrape ``registry`` in the text format and parse it back with the client's parser."""
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out[sample.name].append((dict(sample.labels), sample.value))
    return out


def by(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Return ``name``'s values summed by the given labels."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for sample_labels, value in samples[name]:
        out[tuple(sample_labels[k] for k in labels)] += value
    return dict(out)


@pytest.fixture
def workload(
    fakes: Callable[..., list[FakeProvider]], config_for: Any, req: Any, db: Path
) -> Iterator[tuple[Runtime, CollectorRegistry]]:
    """Run a known workload (successes, failovers, streams, failures) and register a collector."""
    (good,) = fakes(1, Behaviour(latency_ms=2))
    (bad,) = fakes(1, Behaviour(status=500))
    cfg = config_for(
        {"bad": bad, "good": good},
        per_provider={"bad": {"priority": 10}},
        failover=FailoverConfig(backoff_base_s=0.0, backoff_max_s=0.0),
        health=HealthConfig(failure_threshold=1000, error_rate_threshold=1.0, min_calls=20),
    )
    registry = CollectorRegistry()
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        collector = rt.prometheus_collector(registry)
        assert collector in registry._collector_to_names
        rt.set_concurrent_limit("good", 7)
        for _ in range(4):
            rt.complete(req())  # bad first (higher priority), then good: a failover each
        for _ in range(2):
            for _chunk in rt.stream(req()):
                pass
        with pytest.raises(RoutingError):
            rt.complete(req(), requirements=Requirements(exclude_providers=["good"]))
        rt.flush()
        yield rt, registry


def test_attempt_counters_summed_over_models_equal_get_metrics(workload: Any) -> None:
    """routeledger_attempts_total by provider and outcome equals get_metrics()'s counts."""
    rt, registry = workload
    samples = scrape(registry)
    attempts = by(samples, "routeledger_attempts_total", "provider", "outcome")
    metrics = rt.get_metrics()
    assert set(metrics) == {"bad", "good"}
    for name, m in metrics.items():
        assert attempts.get((name, "success"), 0) == m.successes
        assert attempts.get((name, "failure"), 0) == m.failures
        assert attempts.get((name, "cancelled"), 0) == m.cancelled
    assert metrics["good"].successes == 6
    assert metrics["bad"].failures == 7
    errors = by(samples, "routeledger_attempt_errors_total", "provider", "model", "error")
    assert errors == {("bad", "fake-model", "ProviderUnavailable"): 7.0}


def test_tokens_and_cost_equal_get_metrics(workload: Any) -> None:
    """routeledger_tokens_total and routeledger_cost_total equal get_metrics()'s figures."""
    rt, registry = workload
    samples = scrape(registry)
    tokens = by(samples, "routeledger_tokens_total", "provider", "type")
    cost = by(samples, "routeledger_cost_total", "provider")
    m = rt.get_metrics()["good"]
    assert tokens[("good", "input")] == m.input_tokens > 0
    assert tokens[("good", "output")] == m.output_tokens > 0
    assert cost[("good",)] == m.cost > 0
    assert ("bad", "input") not in tokens
    assert samples["routeledger_unpriced_attempts_total"] == []


def test_latency_histogram_counts_and_sum_equal_the_projection(workload: Any) -> None:
    """The attempt duration histogram has get_metrics()'s count and mean, cumulative buckets."""
    rt, registry = workload
    samples = scrape(registry)
    m = rt.get_metrics()["good"]
    count = by(samples, "routeledger_attempt_duration_seconds_count", "provider")
    total = by(samples, "routeledger_attempt_duration_seconds_sum", "provider")
    assert count[("good",)] == m.successes
    assert total[("good",)] == pytest.approx(m.latency_mean_ms * m.successes / 1000.0)
    buckets = [
        (labels["le"], value)
        for labels, value in samples["routeledger_attempt_duration_seconds_bucket"]
        if labels["provider"] == "good"
    ]
    assert [le for le, _ in buckets] == [repr(b) for b in DEFAULT_BUCKETS_S] + ["+Inf"]
    values = [v for _, v in buckets]
    assert values == sorted(values) and values[-1] == m.successes


def test_time_to_first_token_counts_each_successful_stream(workload: Any) -> None:
    """routeledger_time_to_first_token_seconds counts the two streams, with a positive sum."""
    _rt, registry = workload
    samples = scrape(registry)
    assert by(samples, "routeledger_time_to_first_token_seconds_count", "provider") == {
        ("good",): 2.0
    }
    assert by(samples, "routeledger_time_to_first_token_seconds_sum", "provider")[("good",)] > 0


def test_requests_retries_and_failovers_match_usage_and_the_log(
    workload: Any, events: Any, db: Path
) -> None:
    """Request outcomes equal get_usage('all'); retries and failovers equal the log's events."""
    rt, registry = workload
    samples = scrape(registry)
    usage = rt.get_usage("all")
    requests = by(samples, "routeledger_requests_total", "outcome")
    assert requests.get(("success",), 0) + requests.get(("error",), 0) == usage.requests
    assert requests.get(("error",), 0) == usage.errors == 1
    assert by(samples, "routeledger_request_errors_total", "error") == {("AllProvidersFailed",): 1}
    fallbacks = events(db, "fallback.succeeded")
    assert by(samples, "routeledger_fallback_successes_total", "provider") == {
        ("good",): len(fallbacks)
    }
    assert len(fallbacks) == 6
    (exhausted,) = events(db, "fallback.exhausted")
    assert by(samples, "routeledger_fallback_exhaustions_total", "error") == {
        (exhausted.last_error,): 1
    }
    retried = [e for e in events(db) if type(e).__name__.startswith("Attempt") and e.attempt > 1]
    retried = [e for e in retried if type(e).__name__ != "AttemptStarted"]
    assert sum(by(samples, "routeledger_retries_total", "provider").values()) == len(retried)


def test_gauges_equal_the_runtime_api(workload: Any, db: Path) -> None:
    """In-flight, limits and circuit state equal the runtime's API; the position equals replay."""
    rt, registry = workload
    samples = scrape(registry)
    assert by(samples, "routeledger_in_flight_requests", "provider") == {
        (n,): float(v) for n, v in rt.get_active_requests().items()
    }
    assert by(samples, "routeledger_concurrency_limit", "provider") == {
        (n,): float(rt.get_provider(n).max_concurrency) for n in rt.list_providers()
    }
    assert by(samples, "routeledger_concurrency_limit", "provider")[("good",)] == 7
    health = rt.get_provider_health()
    circuit = by(samples, "routeledger_circuit_state", "provider", "state")
    for name, h in health.items():
        assert circuit[(name, h.state)] == 1.0
        assert sum(v for (p, _), v in circuit.items() if p == name) == 1.0
    assert samples["routeledger_log_position"][0][1] == replay(db).position
    assert samples["routeledger_log_pending_events"][0][1] == 0
    assert samples["routeledger_log_store_failing"][0][1] == 0
    assert samples["routeledger_log_events_dropped_total"][0][1] == 0


def test_a_scrape_follows_new_requests(workload: Any, req: Any) -> None:
    """A later scrape includes requests made after the first one (the fold catches up)."""
    rt, registry = workload
    before = by(scrape(registry), "routeledger_attempts_total", "provider", "outcome")
    rt.complete(req(), preferred_provider="good")
    rt.flush()
    after = by(scrape(registry), "routeledger_attempts_total", "provider", "outcome")
    assert after[("good", "success")] == before[("good", "success")] + 1
    assert after[("good", "success")] == rt.get_metrics()["good"].successes


def test_the_log_collector_serves_the_live_figures(workload: Any, db: Path) -> None:
    """A LogCollector over the runtime's file reports what the live collector does."""
    rt, registry = workload
    live = scrape(registry)
    from_log = CollectorRegistry()
    collector = LogCollector(db)
    from_log.register(collector)
    try:
        logged = scrape(from_log)
    finally:
        collector.close()
    health = rt.get_provider_health()
    for name in set(live) | set(logged):
        if name in LIVE_ONLY:
            assert name not in logged
        elif name == "routeledger_circuit_state":
            # The log knows the circuit's last transition; the live runtime knows it too.
            assert logged[name] == live[name], health
        else:
            assert sorted(map(str, logged[name])) == sorted(map(str, live[name])), name


def test_registering_twice_in_one_registry_is_refused(workload: Any) -> None:
    """A second routeledger collector in the same registry is a ValueError (names collide)."""
    rt, registry = workload
    with pytest.raises(ValueError, match="Duplicated"):
        register(rt, registry=registry)


def test_a_closed_runtime_reports_nothing(workload: Any) -> None:
    """Scraping a closed runtime's collector returns no families and does not raise."""
    rt, registry = workload
    rt.close()
    assert generate_latest(registry) == b""


def test_bucket_mapping_counts_values_under_their_bound() -> None:
    """Values away from the bounds land in the cumulative bucket of every bound above them."""
    histogram = LatencyHistogram()
    samples_ms = [0.001, 3.0, 7.0, 20.0, 40.0, 90.0, 400.0, 900.0, 4000.0, 200_000.0, 9e6]
    for value in samples_ms:
        histogram.record(value)
    mapping = _BucketMap(DEFAULT_BUCKETS_S)
    cumulative = dict(mapping.cumulative(histogram.counts))
    for bound in DEFAULT_BUCKETS_S:
        assert cumulative[repr(bound)] == sum(1 for v in samples_ms if v / 1000.0 <= bound)
    assert cumulative["+Inf"] == len(samples_ms)


def test_importing_routeledger_does_not_import_prometheus_client(tmp_path: Path) -> None:
    """import routeledger (and the command line's parser) leaves prometheus_client unloaded."""
    code = (
        "import sys, routeledger, routeledger.cli; routeledger.cli.build_parser();"
        "print('prometheus_client' in sys.modules, 'routeledger.prometheus' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
