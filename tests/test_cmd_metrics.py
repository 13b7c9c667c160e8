"""The ``routeledger metrics`` command: Prometheus metrics served from an event log file."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from routeledger import FailoverConfig, Runtime, replay
from routeledger.cli import main
from routeledger.events import AttemptSucceeded, Projections
from routeledger.fake_provider import Behaviour, FakeProvider
from routeledger.store import SQLiteStore

CONSOLE_SCRIPT = Path(sys.executable).parent / "routeledger"


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of a scrape, keyed by name and sorted labels."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def per_provider(samples: dict[Any, float], name: str, outcome: str) -> dict[str, float]:
    """Return ``name``'s values with the given outcome, summed by provider."""
    out: dict[str, float] = defaultdict(float)
    for (sample, labels), value in samples.items():
        labels_d = dict(labels)
        if sample == name and labels_d.get("outcome") == outcome:
            out[labels_d["provider"]] += value
    return dict(out)


def assert_equal_to_replay(samples: dict[Any, float], projections: Projections) -> None:
    """The scraped figures equal the replayed projections'."""
    metrics = projections.metrics.snapshot()
    assert samples["routeledger_log_position", ()] == projections.position
    for outcome, field in (("success", "successes"), ("failure", "failures")):
        scraped = per_provider(samples, "routeledger_attempts_total", outcome)
        expected = {n: float(getattr(m, field)) for n, m in metrics.items() if getattr(m, field)}
        assert scraped == expected
    for name, m in metrics.items():
        count = samples["routeledger_attempt_duration_seconds_count", (("provider", name),)]
        assert count == m.successes
        for kind, field in (("input", "input_tokens"), ("output", "output_tokens")):
            tokens = sum(
                v
                for (sample, labels), v in samples.items()
                if sample == "routeledger_tokens_total"
                and dict(labels)["provider"] == name
                and dict(labels)["type"] == kind
            )
            assert tokens == getattr(m, field)


@pytest.fixture
def logged(fakes: Callable[..., list[FakeProvider]], config_for: Any, req: Any, db: Path) -> Path:
    """Write a log: failovers from a failing provider to a healthy one, and a stream."""
    (good,) = fakes(1, Behaviour(latency_ms=1))
    (bad,) = fakes(1, Behaviour(status=500))
    cfg = config_for(
        {"bad": bad, "good": good},
        per_provider={"bad": {"priority": 10}},
        failover=FailoverConfig(backoff_base_s=0.0, backoff_max_s=0.0),
    )
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        for _ in range(3):
            rt.complete(req())
        for _chunk in rt.stream(req(), preferred_provider="good"):
            pass
    return db


@pytest.fixture
def served(logged: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``routeledger metrics --db FILE --port 0`` and yield it with its metrics URL."""
    proc = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "metrics", "--db", str(logged), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # printed once the server is listening
        prefix = f"serving {logged} on "
        assert line.startswith(prefix + "http://127.0.0.1:"), (line, proc.stderr)
        yield proc, line.removeprefix(prefix)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=10)


def test_the_served_figures_equal_replay_of_the_log(
    served: tuple[subprocess.Popen[str], str], logged: Path
) -> None:
    """A scrape of the command, parsed by the client's parser, equals replay(db)."""
    _proc, url = served
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    samples = values(response.text)
    projections = replay(logged)
    assert_equal_to_replay(samples, projections)
    assert projections.metrics.snapshot()["bad"].failures == 3
    ttft = samples["routeledger_time_to_first_token_seconds_count", (("provider", "good"),)]
    assert ttft == 1
    assert ("routeledger_in_flight_requests", (("provider", "good"),)) not in samples


def test_a_scrape_follows_events_appended_to_the_log(
    served: tuple[subprocess.Popen[str], str], logged: Path
) -> None:
    """Events committed after a scrape are in the next one, which still equals replay(db)."""
    _proc, url = served
    before = values(httpx.get(url, timeout=10).text)
    store = SQLiteStore(logged)
    try:
        store.append(
            [
                AttemptSucceeded(
                    ts=1.0,
                    request_id="late",
                    attempt=1,
                    provider="good",
                    model="fake-model",
                    latency_ms=42.0,
                    input_tokens=3,
                    output_tokens=4,
                )
            ]
        )
    finally:
        store.close()
    after = values(httpx.get(url, timeout=10).text)
    labels = (("model", "fake-model"), ("outcome", "success"), ("provider", "good"))
    key = ("routeledger_attempts_total", labels)
    assert after[key] == before[key] + 1
    assert_equal_to_replay(after, replay(logged))


def test_the_command_stops_cleanly_on_sigterm(served: tuple[subprocess.Popen[str], str]) -> None:
    """SIGTERM stops the server with exit status 0 and frees the port."""
    proc, url = served
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)


def test_a_missing_log_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``metrics --db`` on a missing file exits with status 2 and says which file."""
    missing = tmp_path / "nope.sqlite"
    assert main(["metrics", "--db", str(missing), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "no event log" in err and "nope.sqlite" in err
