"""`routeledger demo` and `routeledger audit`, run in-process as a user would run them."""

from __future__ import annotations

import re
from pathlib import Path

import pykka
import pytest

from routeledger import replay
from routeledger.cli import main


@pytest.fixture(autouse=True)
def _stop_actors() -> object:
    yield
    pykka.ActorRegistry.stop_all()


def test_demo_routes_a_workload_and_prints_replayed_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo serves every request, writes the log, and prints metrics and A/B results."""
    db = tmp_path / "demo.sqlite"
    assert main(["demo", "--requests", "60", "--db", str(db), "--concurrency", "4"]) == 0
    out = capsys.readouterr().out
    assert "metrics (per provider, attempts):" in out
    assert "fast-vs-slow" in out
    assert str(db.resolve()) in out
    figures = replay(db)
    assert figures.usage.report("all").requests == 60
    assert set(figures.ab.results("fast-vs-slow")) == {"A", "B"}
    match = re.search(r"routeledger audit --db \S+ (\w+)", out)
    assert match is not None
    report = db.with_suffix(".html")
    assert out.rstrip().endswith(f"report (charts, open in a browser): {report.resolve()}")
    assert report.read_text().startswith("<!DOCTYPE html>")


def test_audit_prints_a_requests_decision_trail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """audit shows the candidates, the choice and its reason, each attempt and the outcome."""
    db = tmp_path / "demo.sqlite"
    assert main(["demo", "--requests", "40", "--db", str(db), "--concurrency", "2"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"routeledger audit --db \S+ (\w+)", out)
    assert match is not None
    request_id = match.group(1)
    if request_id == "REQUEST_ID":  # no request needed a failover in this run: take any
        from routeledger.store import SQLiteStore

        with SQLiteStore(db, readonly=True) as store:
            request_id = next(
                s.event.request_id  # type: ignore[attr-defined]  # filtered below
                for s in store.read()
                if type(s.event).__name__ == "RequestCompleted"
            )
    assert main(["audit", "--db", str(db), request_id]) == 0
    trail = capsys.readouterr().out
    assert "request.received" in trail
    assert "route.decided" in trail and "reason:" in trail and "candidates:" in trail
    assert "attempt.started" in trail
    assert "request.completed" in trail


def test_audit_of_an_unknown_request_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown request id is reported as an error with status 2, not a traceback."""
    db = tmp_path / "demo.sqlite"
    assert main(["demo", "--requests", "8", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["audit", "--db", str(db), "no-such-request"]) == 2
    assert "no events for request 'no-such-request'" in capsys.readouterr().err
