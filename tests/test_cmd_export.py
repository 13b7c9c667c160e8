"""Tests of ``routeledger export``: JSON lines and CSV streamed from a real SQLite log."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from routeledger._cmd_export import CSV_COLUMNS, export_events, parse_time
from routeledger.cli import main
from routeledger.events import (
    AnyEvent,
    AttemptFailed,
    AttemptSucceeded,
    Event,
    RequestCompleted,
    RequestReceived,
    event_tag,
)
from routeledger.sim import scenario_from_dict, simulate
from routeledger.store import SQLiteStore

T0 = 1_764_770_000.0  # 2025-12-03T13:53:20Z

SCENARIO = {
    "simulation": {"requests": 200, "rate_per_s": 50.0, "model": "m"},
    "providers": [
        {
            "name": "steady",
            "models": [{"name": "m", "input_per_mtok": 0.5, "output_per_mtok": 1.5}],
            "sim": {"latency_ms": 50, "fail_rate": 0.05},
        },
        {
            "name": "flaky",
            "models": [{"name": "m", "input_per_mtok": 0.4, "output_per_mtok": 1.2}],
            "sim": {"latency_ms": 30, "fail_rate": 0.3},
        },
    ],
}


def stored(path: Path) -> list[tuple[int, Event]]:
    """Return every (position, event) of the log at ``path``."""
    store = SQLiteStore(path, readonly=True)
    try:
        return [(position, event) for position, event in store.read()]
    finally:
        store.close()


def hand_log(path: Path, *, message: str = "upstream said no", provider: str = "flaky") -> None:
    """Write a small log with a request that failed over and one that succeeded at once."""
    store = SQLiteStore(path)
    try:
        store.append(
            [
                RequestReceived(ts=T0, request_id="r1", model="m", metadata={"team": "a"}),
                AttemptFailed(
                    ts=T0 + 1,
                    request_id="r1",
                    attempt=1,
                    provider=provider,
                    model="m",
                    error="ProviderUnavailable",
                    message=message,
                    status=503,
                ),
                AttemptSucceeded(
                    ts=T0 + 2,
                    request_id="r1",
                    attempt=2,
                    provider="steady",
                    model="m",
                    latency_ms=12.5,
                    cost=0.25,
                    input_tokens=3,
                    output_tokens=4,
                ),
                RequestCompleted(
                    ts=T0 + 2,
                    request_id="r1",
                    provider="steady",
                    model="m",
                    attempts=2,
                    latency_ms=20.0,
                    cost=0.25,
                ),
            ]
        )
    finally:
        store.close()


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a simulated log of 200 requests over two providers."""
    path = tmp_path_factory.mktemp("sim") / "sim.sqlite"
    simulate(scenario_from_dict(SCENARIO), seed=3, db=path)
    return path


def test_jsonl_holds_every_event_as_stored_with_its_position(sim_log: Path, tmp_path: Path) -> None:
    """Each JSON line decodes to the stored event at the position it names."""
    out = tmp_path / "events.jsonl"
    assert main(["export", "--db", str(sim_log), "--format", "jsonl", "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    expected = stored(sim_log)
    assert len(lines) == len(expected)
    for line, (position, event) in zip(lines, expected, strict=True):
        doc = json.loads(line)
        assert doc.pop("position") == position
        assert msgspec.convert(doc, AnyEvent) == event


def test_csv_columns_and_data_rebuild_each_event(sim_log: Path, tmp_path: Path) -> None:
    """The CSV header is CSV_COLUMNS, and each row's columns plus data give the event back."""
    out = tmp_path / "events.csv"
    assert main(["export", "--db", str(sim_log), "--format", "csv", "-o", str(out)]) == 0
    with out.open(newline="") as f:
        reader = csv.reader(f)
        assert tuple(next(reader)) == CSV_COLUMNS
        rows = list(reader)
    expected = stored(sim_log)
    assert len(rows) == len(expected)
    numbers = {"attempt": int, "latency_ms": float, "cost": float}
    numbers |= {"input_tokens": int, "output_tokens": int}
    for row, (position, event) in zip(rows, expected, strict=True):
        cells = dict(zip(CSV_COLUMNS, row, strict=True))
        assert int(cells["position"]) == position
        fields = json.loads(cells["data"]) if cells["data"] else {}
        fields["type"] = cells["type"]
        fields["ts"] = float(cells["ts"])
        for name in CSV_COLUMNS[4:-1]:
            if cells[name]:
                fields[name] = numbers.get(name, str)(cells[name])
        assert msgspec.convert(fields, AnyEvent) == event
        assert cells["recorded_at"].endswith("Z")


def test_type_accepts_tags_and_families(sim_log: Path) -> None:
    """--type attempt request.completed keeps attempt.* and request.completed events only."""
    out = io.StringIO()
    count = export_events(str(sim_log), out, format="jsonl", types=["attempt", "request.completed"])
    tags = Counter(json.loads(line)["type"] for line in out.getvalue().splitlines())
    every = Counter(event_tag(e) for _, e in stored(sim_log))
    wanted = {t: n for t, n in every.items() if t.startswith("attempt.")}
    wanted["request.completed"] = every["request.completed"]
    assert tags == wanted
    assert count == sum(wanted.values())


def test_from_and_to_select_a_window_given_as_iso_or_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from (inclusive) and --to (exclusive) take Unix seconds or ISO 8601 in UTC."""
    db = tmp_path / "log.sqlite"
    hand_log(db)
    assert parse_time("2025-12-03T13:53:21") == T0 + 1
    assert parse_time("2025-12-03T14:53:21+01:00") == T0 + 1
    args = ["export", "--db", str(db), "--format", "jsonl"]
    assert main([*args, "--from", "2025-12-03T13:53:21", "--to", str(T0 + 2)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["attempt.failed"]


def test_text_printed_to_the_terminal_is_escaped_but_a_file_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On stdout, controls and bidi overrides are escaped; with -o the stored text is kept."""
    db = tmp_path / "log.sqlite"
    hostile = "no\x1b]0;pwned\x07 \u202eevil\x9b"
    hand_log(db, message=hostile, provider=hostile)
    for fmt in ("jsonl", "csv"):
        assert main(["export", "--db", str(db), "--format", fmt, "--type", "attempt.failed"]) == 0
        out = capsys.readouterr().out
        assert not any(ch in out for ch in "\x1b\x07\u202e\x9b")
        if fmt == "jsonl":
            assert json.loads(out)["message"] == hostile  # same value, JSON escapes
        else:
            (row,) = list(csv.DictReader(io.StringIO(out)))
            assert json.loads(row["data"])["message"] == hostile
            assert row["provider"] == "no\\x1b]0;pwned\\x07 \\u202eevil\\x9b"
    target = tmp_path / "out.csv"
    main(
        [
            "export",
            "--db",
            str(db),
            "--format",
            "csv",
            "--type",
            "attempt.failed",
            "-o",
            str(target),
        ]
    )
    with target.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert json.loads(row["data"])["message"] == hostile
    assert row["provider"] == hostile


def test_bad_arguments_fail_before_an_output_file_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown type, a bad time or a missing log exit 2 and write no file."""
    db = tmp_path / "log.sqlite"
    hand_log(db)
    target = tmp_path / "out.jsonl"
    base = ["export", "--format", "jsonl", "-o", str(target)]
    assert main([*base, "--db", str(db), "--type", "nope"]) == 2
    assert main([*base, "--db", str(db), "--from", "yesterday"]) == 2
    assert main([*base, "--db", str(tmp_path / "missing.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "unknown event type 'nope'" in err
    assert "not a time: 'yesterday'" in err
    assert "no event log" in err
    assert not target.exists()


class _Discard(io.TextIOBase):
    """A text sink that keeps nothing, so only the export's own memory is measured."""

    def write(self, text: str) -> int:
        return len(text)


def _peak_bytes(db: Path, fmt: str) -> int:
    tracemalloc.start()
    try:
        export_events(str(db), _Discard(), format=fmt)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_memory_stays_flat_as_the_log_grows(tmp_path: Path) -> None:
    """Exporting 10x more events does not take noticeably more memory (streaming)."""
    dbs = {}
    for n in (2_000, 20_000):
        dbs[n] = db = tmp_path / f"log{n}.sqlite"
        store = SQLiteStore(db)
        try:
            for start in range(0, n, 1000):
                store.append(
                    [
                        RequestReceived(ts=T0 + i, request_id=f"r{i}", model="m")
                        for i in range(start, start + 1000)
                    ]
                )
        finally:
            store.close()
    for fmt in ("jsonl", "csv"):
        small, large = _peak_bytes(dbs[2_000], fmt), _peak_bytes(dbs[20_000], fmt)
        assert large < small * 1.5 + 200_000, (fmt, small, large)
