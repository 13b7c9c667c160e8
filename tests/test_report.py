"""Tests of ``routeledger report``: the HTML parsed, its figures checked, and it rendered.

The rendering test runs Debian's headless Chromium (``scripts/ensure-chromium.sh`` installs
it under CI, where its absence fails the test instead of skipping it).
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tracemalloc
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pykka
import pytest
from png_support import read_png
from support import cannot

from routeledger import replay
from routeledger._cmd_report import Progress, write_report
from routeledger._report import ReportFold
from routeledger._svg import PALETTE, STATE_COLOURS
from routeledger.cli import main
from routeledger.events import (
    AttemptFailed,
    AttemptSucceeded,
    CircuitStateChanged,
    RequestReceived,
)
from routeledger.sim import scenario_from_dict, simulate
from routeledger.store import SQLiteStore

T0 = 1_764_770_000.0
CHROMIUM = "/usr/bin/chromium"

SCENARIO = {
    "simulation": {"requests": 600, "rate_per_s": 20.0, "model": "m"},
    "health": {"cooldown_s": 5.0, "failure_threshold": 3, "window_size": 10, "min_calls": 5},
    "providers": [
        {
            "name": "steady",
            "models": [{"name": "m", "input_per_mtok": 0.5, "output_per_mtok": 1.5}],
            "sim": {"latency_ms": 80, "fail_rate": 0.01},
        },
        {
            "name": "flaky",
            "models": [{"name": "m", "input_per_mtok": 0.4, "output_per_mtok": 1.2}],
            "sim": {"latency_ms": 40, "outages": [{"start_s": 10.0, "end_s": 20.0}]},
        },
    ],
}


class Page(HTMLParser):
    """Collect a page's tags, attributes, section ids, table rows and text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: list[str] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "section":
            self.sections.append(dict(attrs).get("id") or "")
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the log of a short ``routeledger demo`` run (real runtime, loopback fakes)."""
    db = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    try:
        assert main(["demo", "--requests", "90", "--db", str(db), "--concurrency", "4"]) == 0
    finally:
        pykka.ActorRegistry.stop_all()
    return db


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a simulated log in which the provider "flaky" is down from 10 s to 20 s."""
    db = tmp_path_factory.mktemp("sim") / "sim.sqlite"
    simulate(scenario_from_dict(SCENARIO), seed=2, db=db)
    return db


def test_the_report_has_every_section_and_the_replayed_figures(
    demo_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each chart section is there, and the provider table agrees with replay's metrics."""
    out = tmp_path / "report.html"
    assert main(["report", "--db", str(demo_log), "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    page = Page(out.read_text())
    assert page.sections == ["summary", "traffic", "latency", "health", "cost", "ab"]
    classes = [attrs.get("class") or "" for tag, attrs in page.tags if tag == "svg"]
    for chart in ("traffic", "errors", "latency", "health", "cost-provider", "cost-model", "ab"):
        assert any(chart in c.split() for c in classes), chart
    metrics = replay(demo_log).metrics
    table = {row[0]: row for row in page.rows if row and row[0] in metrics}
    assert set(table) == set(metrics)
    for name, figures in metrics.items():
        assert int(table[name][1]) == figures.requests
        assert int(table[name][2]) == figures.failures
    assert "fast-vs-slow: error_rate" in "".join(page.text)


def test_the_report_is_self_contained(demo_log: Path, tmp_path: Path) -> None:
    """No script, stylesheet link, frame or image source; nothing names a URL to fetch."""
    out = write_report(demo_log, tmp_path / "report.html")
    page = Page(out.read_text())
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "img", "object", "embed", "image", "use"}
    for _, attrs in page.tags:
        for value in attrs.values():
            assert "http:" not in (value or "") and "https:" not in (value or "")
            assert not (value or "").startswith("//")
    csp = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in (csp[0].get("content") or "")


def test_provider_and_model_names_are_escaped(tmp_path: Path) -> None:
    """A provider or model named like markup stays text: no tag of theirs reaches the page."""
    db = tmp_path / "log.sqlite"
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    with SQLiteStore(db) as store:
        store.append(
            [
                RequestReceived(ts=T0, request_id="r", model=evil),
                AttemptSucceeded(
                    ts=T0 + 1,
                    request_id="r",
                    attempt=1,
                    provider=evil,
                    model=evil,
                    latency_ms=5.0,
                    cost=0.5,
                ),
                CircuitStateChanged(
                    ts=T0 + 2, provider=evil, from_state="closed", to_state="open", reason="x"
                ),
            ]
        )
    page = Page(write_report(db, tmp_path / "r.html").read_text())
    assert not {tag for tag, _ in page.tags} & {"script", "img"}
    assert evil in "".join(page.text)


def test_the_health_timeline_shows_an_outage(sim_log: Path) -> None:
    """The outage of "flaky" in a simulated log shows as open circuit buckets, closed around."""
    store = SQLiteStore(sim_log, readonly=True)
    try:
        events = list(store.read())
    finally:
        store.close()
    fold = ReportFold(events[0].event.ts, events[-1].event.ts)
    for position, event in events:
        fold.apply(position, event)
    fold.finish()
    states = fold.providers["flaky"].states
    assert "open" in states
    assert states[0] == "closed" and states[-1] == "closed"
    assert set(fold.providers["steady"].states) == {"closed"}
    opened = fold.bucket(events[0].event.ts + 12.0)
    assert states[opened] in ("open", "half_open")
    assert sum(sum(p.failures) for p in fold.providers.values()) > 0


def test_a_progress_bar_is_drawn_on_request_and_on_a_terminal_for_a_large_log(
    sim_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--progress draws the bar; by default only a terminal gets it, and only for a large log."""
    shown = io.StringIO()
    write_report(sim_log, tmp_path / "a.html", progress=True, stream=shown)
    assert "reading log [" in shown.getvalue()
    assert "] 100% (" in shown.getvalue().split("\r")[-1]
    quiet = io.StringIO()
    write_report(sim_log, tmp_path / "b.html", stream=quiet)
    assert quiet.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    small = Terminal()
    write_report(sim_log, tmp_path / "c.html", stream=small)
    assert small.getvalue() == ""  # a terminal, but the log is small
    monkeypatch.setattr("routeledger._cmd_report.LARGE_LOG", 100)
    large = Terminal()
    write_report(sim_log, tmp_path / "d.html", stream=large)
    assert "reading log [" in large.getvalue()


def test_the_progress_bar_redraws_only_when_the_percentage_changes() -> None:
    """A bar over 10,000 events writes at most 101 frames, the last at 100 %."""
    stream = io.StringIO()
    bar = Progress(10_000, stream)
    for done in range(0, 10_001, 7):
        bar.update(done)
    bar.update(10_000)
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert len(frames) <= 101
    assert frames[-1].startswith("reading log [" + "#" * Progress.WIDTH + "] 100%")


def _peak_fold_bytes(db: Path) -> int:
    tracemalloc.start()
    try:
        write_report(db, db.with_suffix(".html"), progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_report_memory_stays_flat_as_the_log_grows(tmp_path: Path) -> None:
    """A log 10x longer takes about the same memory to report on (fold into time buckets)."""
    dbs = {}
    for n in (2_000, 20_000):
        dbs[n] = db = tmp_path / f"log{n}.sqlite"
        with SQLiteStore(db) as store:
            for start in range(0, n, 1000):
                batch = []
                for i in range(start, start + 1000, 2):
                    ts = T0 + i / 10
                    batch.append(
                        AttemptSucceeded(
                            ts=ts,
                            request_id=f"r{i}",
                            attempt=1,
                            provider=f"p{i % 3}",
                            model="m",
                            latency_ms=10.0 + i % 97,
                            cost=0.001,
                        )
                    )
                    batch.append(
                        AttemptFailed(
                            ts=ts, request_id=f"q{i}", attempt=1, provider="p1", model="m",
                            error="ProviderUnavailable",
                        )
                    )  # fmt: skip
                store.append(batch)
    small, large = _peak_fold_bytes(dbs[2_000]), _peak_fold_bytes(dbs[20_000])
    assert large < small * 1.5 + 200_000, (small, large)


def _png(width: int, rows: list[tuple[int, bytes]]) -> bytes:
    """Encode RGB rows, each with its filter type byte, as a PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
    raw = b"".join(bytes([kind]) + body for kind, body in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))


def test_the_png_reader_undoes_every_filter(tmp_path: Path) -> None:
    """Rows filtered with none, sub, up, average and Paeth decode to the intended pixels."""
    path = tmp_path / "t.png"
    # Row 0 (none): (10,20,30) (40,50,60); each later row encodes the same pixels + 1 per row.
    path.write_bytes(
        _png(
            2,
            [
                (0, bytes([10, 20, 30, 40, 50, 60])),
                (1, bytes([11, 21, 31, 30, 30, 30])),  # sub: deltas to the left pixel
                (2, bytes([1, 1, 1, 1, 1, 1])),  # up: +1 on the row above
                (3, bytes([7, 12, 17, 16, 16, 16])),  # average of left and up
                (4, bytes([1, 1, 1, 1, 1, 1])),  # Paeth: predictor picks up here
            ],
        )
    )
    width, height, rows = read_png(path)
    assert (width, height) == (2, 5)
    assert rows[0] == bytes([10, 20, 30, 40, 50, 60])
    assert rows[1] == bytes([11, 21, 31, 41, 51, 61])
    assert rows[2] == bytes([12, 22, 32, 42, 52, 62])
    assert rows[3] == bytes([13, 23, 33, 43, 53, 63])
    assert rows[4] == bytes([14, 24, 34, 44, 54, 64])


def _hex(colour: str) -> bytes:
    return bytes.fromhex(colour.lstrip("#"))


def test_the_report_renders_in_headless_chromium_with_drawn_charts(
    demo_log: Path, tmp_path: Path
) -> None:
    """A screenshot of the report shows coloured chart ink down the page, not a blank page."""
    chromium = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if chromium is None:
        cannot("chromium is not installed (scripts/ensure-chromium.sh installs it)")
    page = write_report(demo_log, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    # fmt: off
    subprocess.run(
        [
            str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}", "--window-size=1200,2000", page.resolve().as_uri(),
        ],
        check=True, capture_output=True, timeout=60,
    )
    # fmt: on
    width, height, rows = read_png(shot)
    assert (width, height) == (1200, 2000)
    closed, series = _hex(STATE_COLOURS["closed"]), _hex(PALETTE[0])

    def inked(row: bytes) -> bool:
        """Coloured ink (not white, grey or the page's background) somewhere on the row."""
        return any(max(row[x : x + 3]) - min(row[x : x + 3]) > 60 for x in range(0, len(row), 24))

    # The charts fill most of the page below the summary: lines, bars, bands and legends.
    inked_rows = [y for y in range(0, height, 4) if inked(rows[y])]
    assert len(inked_rows) * 4 > height // 8, "the page is mostly blank"
    assert inked_rows[0] < height // 3 and inked_rows[-1] > height * 2 // 3
    # Exact palette colours: the health timeline's closed bands, the first series' ink.
    assert sum(row.count(closed) for row in rows) > 2000
    assert sum(row.count(series) for row in rows) > 200


def test_the_report_command_draws_the_bar_with_progress_and_not_without(
    sim_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``report --progress`` draws on stderr; ``--no-progress`` (and a pipe) draws nothing."""
    out = tmp_path / "r.html"
    assert main(["report", "--db", str(sim_log), "-o", str(out), "--progress"]) == 0
    assert "reading log [" in capsys.readouterr().err
    assert main(["report", "--db", str(sim_log), "-o", str(out), "--no-progress"]) == 0
    assert main(["report", "--db", str(sim_log), "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""
    assert not (tmp_path / "r.html.partial").exists()
