"""Smoke test of ``scripts/bench.py``: it runs end to end and writes every section.

Timings are never asserted here (they belong to the benchmark's own table); the test only
proves that the script starts its fake providers, runs each section, stops by itself and
writes a well-formed report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
SECTIONS = ("overhead", "throughput", "streaming", "failover", "event_log", "footprint", "shared")


def test_bench_quick_tiny_writes_every_section(tmp_path: Path) -> None:
    """`bench.py --quick --tiny` exits 0 and its JSON holds every section and the table."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--tiny", "--json-out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["failed_sections"] == []
    for section in SECTIONS:
        assert section in report, section
        assert "error" not in report[section], report[section]
    assert report["meta"]["scale"]["name"] == "tiny"
    assert report["meta"]["machine"]["nproc"] >= 1
    assert {"overhead_p50_ms", "overhead_p99_ms", "route_p50_ms"} <= set(report["overhead"])
    assert {"rps_ratio", "async_rps_ratio", "cpu_ratio"} <= set(report["throughput"])
    assert {"every_request", "defaults"} <= set(report["failover"])
    assert {"writer_events_per_s", "raw_append_events_per_s", "replay_small", "replay_large"} <= (
        set(report["event_log"])
    )
    assert {"import_s", "start_10_providers_s", "rss", "idle_cpu_pct"} <= set(report["footprint"])
    assert {"steer_ms", "agree_ms"} <= set(report["shared"])
    figures = {row["figure"] for row in report["table"]}
    assert "overhead p50" in figures
    assert all({"value", "spread", "target", "passed"} <= set(row) for row in report["table"])
    assert "figure" in proc.stdout


def test_bench_products_section_runs_every_replay_product(tmp_path: Path) -> None:
    """`--only products_1m --tiny` runs ab, report and both exports on two logs, each exit 0."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--tiny", "--only", "products_1m", "--json-out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    section = json.loads(out.read_text())["products_1m"]
    for size in ("small", "large"):
        runs = section[size]
        assert runs["events"] > 0
        for product in ("ab", "report", "export csv", "export jsonl"):
            assert runs[product]["status"] == 0, (size, product)
            assert runs[product]["peak_kib"] > 0
