"""Tests of replay() and the ``replay`` and ``tail`` commands on a real SQLite event log."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from routeledger._replay import replay
from routeledger.cli import main
from routeledger.events import (
    ABMetricsRecorded,
    ABTestCreated,
    AttemptFailed,
    AttemptSucceeded,
    Event,
    Projections,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    StoreError,
    UnknownEventType,
)
from routeledger.store import SQLiteStore

CONSOLE_SCRIPT = Path(sys.executable).parent / "routeledger"
T0 = datetime(2024, 3, 6, 10, 30, tzinfo=UTC).timestamp()


def workload() -> list[Event]:
    return [
        RequestReceived(ts=T0, request_id="r1", model="m1", prompt="secret prompt text"),
        AttemptFailed(
            ts=T0 + 1, request_id="r1", attempt=1, provider="flaky", model="m1", error="Timeout"
        ),
        AttemptSucceeded(
            ts=T0 + 2,
            request_id="r1",
            attempt=2,
            provider="healthy",
            model="m1",
            latency_ms=120.5,
            input_tokens=10,
            output_tokens=20,
            cost=0.002,
        ),
        RequestCompleted(
            ts=T0 + 2,
            request_id="r1",
            provider="healthy",
            model="m1",
            attempts=2,
            latency_ms=130.0,
            input_tokens=10,
            output_tokens=20,
            cost=0.002,
        ),
        AttemptSucceeded(
            ts=T0 + 3,
            request_id="r2",
            attempt=1,
            provider="slow",
            model="m2",
            latency_ms=2500.0,
            input_tokens=5,
            output_tokens=5,
        ),
        RequestFailed(ts=T0 + 4, request_id="r3", model="m1", error="AllProvidersFailed"),
        ABTestCreated(
            ts=T0 + 5,
            name="speed",
            variant_a="healthy",
            variant_b="slow",
            split_ratio=0.5,
            metrics={"A": {"requests": 2, "avg_latency": 100.0}},
        ),
        ABMetricsRecorded(ts=T0 + 6, test="speed", variant="B", latency_ms=2500.0, cost=None),
    ]


def write_log(path: Path, events: list[Event]) -> list[int]:
    store = SQLiteStore(path)
    try:
        return store.append(events)
    finally:
        store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "log.sqlite"
    write_log(path, workload())
    return path


# --- replay() --------------------------------------------------------------------------------


def test_replay_equals_live_projections(tmp_path: Path) -> None:
    """replay(path) gives exactly the figures of projections fed live with the same events."""
    path = tmp_path / "log.sqlite"
    live = Projections()
    events = workload()
    for position, event in zip(write_log(path, events), events, strict=True):
        live.apply(position, event)
    replayed = replay(path)
    assert replayed.snapshot() == live.snapshot()
    assert replayed.metrics == live.metrics.snapshot()
    assert replayed.usage("day") == live.usage.report("day")
    assert replayed.ab_results == live.ab.all_results()
    assert (replayed.position, replayed.events) == (8, 8)


def test_replay_missing_file_raises_store_error(tmp_path: Path) -> None:
    """A missing log file raises StoreError naming the file, and creates nothing."""
    path = tmp_path / "nope.sqlite"
    with pytest.raises(StoreError, match="no event log"):
        replay(path)
    assert not path.exists()


def test_replay_empty_log_gives_empty_projections(tmp_path: Path) -> None:
    """An empty log replays to empty projections at position 0."""
    path = tmp_path / "empty.sqlite"
    write_log(path, [])
    p = replay(path)
    assert (p.position, p.events, dict(p.metrics)) == (0, 0, {})


# --- routeledger replay ----------------------------------------------------------------------


def test_replay_command_prints_aligned_tables(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The text output shows each section as a table whose columns line up."""
    assert main(["replay", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "8 event(s), last position 8" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("PROVIDER"))
    table = lines[header : header + 4]
    assert [line.split()[0] for line in table] == ["PROVIDER", "flaky", "healthy", "slow"]
    # Numbers are right-aligned: each row's REQS ends where the header's does.
    reqs_end = table[0].index("REQS") + len("REQS")
    assert all(line[reqs_end - 1].isdigit() for line in table[1:])
    assert "usage (day, starting 2024-03-06T00:00:00.000Z)" in out
    assert "requests 2  errors 1" in out
    assert "speed" in out and "A/B tests:" in out


def test_replay_command_json_matches_projections(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one document holding the replayed figures."""
    assert main(["replay", "--db", str(db), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    expected = replay(db)
    assert document["position"] == 8
    assert document["metrics"] == msgspec.to_builtins(expected.metrics.snapshot())
    assert document["usage"] == msgspec.to_builtins(expected.usage.report("day"))
    assert document["ab"]["speed"]["A"]["requests"] == 2
    assert document["metrics"]["healthy"]["cost"] == 0.002


def test_replay_command_one_section_and_period(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A section argument limits the output; --period picks the usage bucket."""
    assert main(["replay", "--db", str(db), "usage", "--period", "month", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert "metrics" not in document and "ab" not in document
    assert document["usage"]["period"] == "month"
    assert document["usage"]["start"] == datetime(2024, 3, 1, tzinfo=UTC).timestamp()
    assert main(["replay", "--db", str(db), "ab"]) == 0
    out = capsys.readouterr().out
    assert "A/B tests:" in out and "metrics (per provider" not in out


def test_replay_command_missing_db_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file gives exit status 2 and a one-line error, not a traceback."""
    assert main(["replay", "--db", str(tmp_path / "missing.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "no event log" in err and "Traceback" not in err


# --- routeledger tail ------------------------------------------------------------------------


def test_tail_no_follow_prints_one_line_per_event(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each event is one line: position, ISO time, tag and key fields; prompts stay out."""
    assert main(["tail", "--db", str(db), "--no-follow"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8
    first = lines[2].split()
    assert first[:3] == ["3", "2024-03-06T10:30:02.000Z", "attempt.succeeded"]
    assert "provider=healthy" in first and "latency_ms=120.5" in first
    assert "secret" not in "\n".join(lines)


def test_tail_from_position_and_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--from N starts at N (negative: the last N) and --json prints one object a line."""
    assert main(["tail", "--db", str(db), "--from", "7", "--no-follow", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["position"], r["type"]) for r in rows] == [
        (7, "ab.test_created"),
        (8, "ab.metrics_recorded"),
    ]
    assert main(["tail", "--db", str(db), "--from", "-1", "--no-follow"]) == 0
    assert capsys.readouterr().out.split()[0] == "8"


def test_tail_missing_db_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tail on a missing file exits with status 2 and a clear message."""
    assert main(["tail", "--db", str(tmp_path / "missing.sqlite"), "--no-follow"]) == 2
    assert "no event log" in capsys.readouterr().err


def test_tail_console_script_no_follow(db: Path) -> None:
    """The installed ``routeledger tail --no-follow`` prints the log and exits 0."""
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "tail", "--db", str(db), "--no-follow"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 8
    assert proc.stdout.splitlines()[-1].split()[2] == "ab.metrics_recorded"


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_tail_follow_prints_new_events_and_stops_on_ctrl_c(db: Path) -> None:
    """Following, tail prints events committed later, and Ctrl-C ends it cleanly."""
    proc = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "tail", "--db", str(db), "--from", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert lines.get(timeout=30).split()[0] == "8"
        write_log(
            db, [RequestFailed(ts=T0 + 9, request_id="r9", model="m1", error="DeadlineExceeded")]
        )
        new = lines.get(timeout=30).split()
        assert new[0] == "9" and new[2] == "request.failed"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert "Traceback" not in err


def add_future_event(path: Path) -> None:
    """Append a row with a tag this version does not know, as a newer routeledger would."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        position = connection.execute("SELECT MAX(position) FROM events").fetchone()[0] + 1
        connection.execute(
            "INSERT INTO events (position, type, ts, request_id, data) VALUES (?, ?, ?, ?, ?)",
            (position, "future.thing", T0 + 7, None, b'{"type":"future.thing","ts":1.0}'),
        )


def test_replay_unknown_event_type_strict_fails_non_strict_skips(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown event type stops a strict replay; --no-strict skips and reports it."""
    add_future_event(db)
    with pytest.raises(UnknownEventType):
        replay(db)
    assert replay(db, strict=False).skipped_unknown == 1
    assert main(["replay", "--db", str(db), "metrics"]) == 2
    assert "future.thing" in capsys.readouterr().err
    assert main(["replay", "--db", str(db), "--no-strict"]) == 0
    assert "skipped 1 event(s) of unknown type" in capsys.readouterr().out


def test_tail_skips_unknown_event_types_and_says_so(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tail prints the events it knows and reports the unknown ones it skipped on stderr."""
    add_future_event(db)
    assert main(["tail", "--db", str(db), "--no-follow"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 8
    assert "skipped 1 event(s) of unknown type" in captured.err


def test_replay_of_a_file_that_is_not_a_log_is_a_store_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not an event log gives a StoreError, not a sqlite3 traceback."""
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    with pytest.raises(StoreError):
        replay(path)
    assert main(["tail", "--db", str(path), "--no-follow"]) == 2
    assert "Traceback" not in capsys.readouterr().err
