"""Measure routeledger's client-side cost, side by side with direct httpx, in one run.

Every HTTP figure is taken against loopback fake providers (``routeledger fake-provider``
with 0 ms latency) running in separate processes, so what is measured is the cost on the
caller's side: the runtime's routing, actor round trips, event recording and the HTTP client.
Figures that compare the runtime with direct httpx are taken in the same process, interleaved
or alternated round by round, so that both see the same machine state.

Sections (each one a key of the JSON written to ``--json-out``):

- ``overhead``: ``Runtime.complete`` versus ``httpx.Client.post`` of the same payload,
  interleaved at concurrency 1 (p50, p99, differences, the p50 difference as a share of the
  direct p50), and ``route_request`` alone.
- ``overhead_5ms``: the same against a provider that takes 5 ms to answer, to see whether
  the overhead grows with the provider's latency (background work the caller waits for).
- ``throughput``: 50 caller threads (``complete`` versus a shared ``httpx.Client`` with the
  same limits) and 50 asyncio tasks (``acomplete`` versus ``httpx.AsyncClient``): requests/s,
  process CPU per request, and the ratios.
- ``streaming``: time to the first chunk through ``Runtime.stream`` versus direct streaming.
- ``failover``: a preferred provider that always answers 503 in front of a healthy one.
- ``event_log``: appends through the log-writer actor and raw ``SQLiteStore.append``; replay
  of 100k and 1M event logs in a subprocess (rate and peak RSS).
- ``footprint``: import time, ``Runtime.start`` with 10 providers, RSS after 10,000 requests
  and idle CPU of a started runtime (both in a fresh subprocess).
- ``shared``: three daemon processes (``python -m routeledger._daemon``) on one SQLite log:
  the time for a failure seen by one daemon to steer the others, and for every daemon's
  live figures to agree after a burst (no ``flush()``); with ``--postgres URL``, the same
  with four daemons on a PostgreSQL log (a schema of its own per round), next to them.
- ``start_1m``: ``Runtime.start`` on a 1,000,000-event log (built once, batched appends) in a
  fresh subprocess: without a snapshot (a fold of the whole log), with the snapshot its close
  wrote, and with one ``log.snapshot_every`` - 1 events behind; and ``replay`` rates with and
  without snapshots. The log has this size at ``--quick`` too (``--tiny``: 5,000 events).
- ``whatif_1m`` (only with ``--only``: about a minute): ``routeledger.whatif`` on logs of
  50,000 and 1,000,000 synthetic events in a fresh subprocess: time and peak RSS, which
  should stay flat.
- ``products_1m`` (only with ``--only``: about a minute): ``routeledger ab``, ``report`` and
  ``export`` (CSV and JSON lines) on logs of 100,000 and 1,000,000 events of one A/B test, each
  in a fresh subprocess: time and peak RSS, which should stay flat.
- ``postgres`` (only with ``--postgres URL``, each run in a schema of its own, dropped after):
  events/s appended by 4 writer processes sharing the log (``PostgresStore.append``, 20 and
  200 events per batch), and ``Runtime.complete`` at concurrency 1 with the log in
  PostgreSQL next to the SQLite default, interleaved (the goal: no worse).

Usage::

    .venv/bin/python scripts/bench.py                  # full run (several minutes)
    .venv/bin/python scripts/bench.py --quick          # reduced run (under a minute)
    .venv/bin/python scripts/bench.py --tiny           # smoke-test sized; figures meaningless
    bash scripts/with-postgres.sh sh -c '.venv/bin/python scripts/bench.py --quick \
      --only postgres --postgres "$ROUTELEDGER_TEST_PG_URL"'

The exit status is 0 when every section ran (missed targets are reported, not fatal; use
``--strict`` to exit 1 on a missed target) and 2 when a section failed to run.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import dataclasses
import datetime
import importlib.util
import itertools
import json
import math
import os
import platform
import random
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pykka

from routeledger import (
    FailoverConfig,
    HealthConfig,
    LogConfig,
    Message,
    ModelSpec,
    ProviderConfig,
    Request,
    Runtime,
    RuntimeConfig,
    SystemClock,
)
from routeledger.actors._writer import Append, EventWriter, Flush, LogWriterActor
from routeledger.actors.wire._openai import build_payload
from routeledger.events import (
    ABMetricsRecorded,
    ABTestCreated,
    ABVariantAssigned,
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    Event,
    HealthProbed,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RouteDecided,
)
from routeledger.store import SQLiteStore

MODEL = ModelSpec(name="bench-model", input_per_mtok=0.15, output_per_mtok=0.60)
CONCURRENCY = 50
"""Caller threads / tasks of the throughput section, and every provider's connection limit."""
STARTUP_TIMEOUT_S = 20.0
CHILD_TIMEOUT_S = 600.0


# --- workload sizes -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much work each section does."""

    name: str
    overhead_rounds: int
    overhead_pairs: int
    throughput_rounds: int
    throughput_requests: int
    stream_rounds: int
    stream_pairs: int
    failover_rounds: int
    failover_pairs: int
    append_rounds: int
    append_events: int
    replay_rounds: int
    replay_small: int
    replay_large: int
    import_rounds: int
    start_rounds: int
    start_log_events: int
    rss_requests: int
    idle_windows: int
    idle_window_s: float


FULL = Scale(
    name="full",
    overhead_rounds=5,
    overhead_pairs=1000,
    throughput_rounds=5,
    throughput_requests=2000,
    stream_rounds=5,
    stream_pairs=200,
    failover_rounds=3,
    failover_pairs=200,
    append_rounds=3,
    append_events=200_000,
    replay_rounds=3,
    replay_small=100_000,
    replay_large=1_000_000,
    import_rounds=7,
    start_rounds=5,
    start_log_events=1_000_000,
    rss_requests=10_000,
    idle_windows=5,
    idle_window_s=2.0,
)
QUICK = Scale(
    name="quick",
    overhead_rounds=3,
    overhead_pairs=200,
    throughput_rounds=2,
    throughput_requests=600,
    stream_rounds=3,
    stream_pairs=60,
    failover_rounds=3,
    failover_pairs=60,
    append_rounds=3,
    append_events=30_000,
    replay_rounds=2,
    replay_small=10_000,
    replay_large=100_000,
    import_rounds=3,
    start_rounds=3,
    start_log_events=1_000_000,
    rss_requests=2_000,
    idle_windows=3,
    idle_window_s=1.0,
)
TINY = Scale(
    name="tiny",
    overhead_rounds=2,
    overhead_pairs=10,
    throughput_rounds=2,
    throughput_requests=60,
    stream_rounds=2,
    stream_pairs=5,
    failover_rounds=2,
    failover_pairs=8,
    append_rounds=2,
    append_events=500,
    replay_rounds=2,
    replay_small=500,
    replay_large=5_000,
    import_rounds=2,
    start_rounds=2,
    start_log_events=5_000,
    rss_requests=100,
    idle_windows=2,
    idle_window_s=0.25,
)


# --- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Return the nearest-rank ``q`` quantile (0 < q <= 1) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def summary(rounds: Sequence[float]) -> dict[str, Any]:
    """Return the median of per-round values with their spread (min and max)."""
    values = [float(v) for v in rounds]
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": values,
    }


# --- fake providers in their own processes --------------------------------------------------


class FakeProviders:
    """Start ``routeledger fake-provider`` processes on 127.0.0.1 and stop them all at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[str]] = []
        script = Path(sys.executable).with_name("routeledger")
        self.command = [str(script)] if script.exists() else [sys.executable, "-m", "routeledger"]
        atexit.register(self.stop)

    def start(self, name: str, *extra: str) -> str:
        """Start one fake provider and return its ``/v1`` base URL."""
        log = (self.workdir / f"fake-{name}.log").open("w")
        proc = subprocess.Popen(
            [
                *self.command,
                "fake-provider",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--latency-ms",
                "0",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        log.close()
        self.processes.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT_S)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("listening on http://127.0.0.1:"):
            raise RuntimeError(f"fake provider {name} did not start (got {line!r})")
        return line.split()[-1].rstrip("/") + "/v1"

    def stop(self) -> None:
        """Terminate every process started (SIGTERM, then SIGKILL after 5 s)."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
        self.processes.clear()


# --- helpers ----------------------------------------------------------------------------------


def provider(name: str, url: str, *, priority: int = 0) -> ProviderConfig:
    """Return an OpenAI-kind provider serving ``MODEL`` with the benchmark's connection limit."""
    return ProviderConfig(
        name=name,
        kind="openai",
        base_url=url,
        models=[MODEL],
        priority=priority,
        max_concurrency=CONCURRENCY,
        timeout_s=30.0,
    )


def make_request(*, stream: bool = False) -> Request:
    """Return the benchmark's request (a short chat completion)."""
    return Request(
        model=MODEL.name,
        messages=[Message(role="user", content="Say hello in five words.")],
        max_tokens=16,
        stream=stream,
    )


def direct_client() -> httpx.Client:
    """Return an httpx client with the same limits as a provider's own client."""
    return httpx.Client(
        limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
        timeout=30.0,
        trust_env=False,
    )


def direct_async_client() -> httpx.AsyncClient:
    """Return an async httpx client with the same limits as a provider's own client."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
        timeout=30.0,
        trust_env=False,
    )


class Direct:
    """Send the same OpenAI payload the runtime sends, straight through httpx."""

    def __init__(self, url: str) -> None:
        self.url = url + "/chat/completions"
        self.payload = build_payload(make_request(), MODEL, stream=False)
        self.stream_payload = build_payload(make_request(stream=True), MODEL, stream=True)

    def complete(self, client: httpx.Client) -> Any:
        """POST and decode the JSON answer, as a direct caller would."""
        response = client.post(self.url, json=self.payload)
        response.raise_for_status()
        return response.json()

    async def acomplete(self, client: httpx.AsyncClient) -> Any:
        """POST and decode the JSON answer on an async client."""
        response = await client.post(self.url, json=self.payload)
        response.raise_for_status()
        return response.json()

    def stream_ttft(self, client: httpx.Client) -> float:
        """Stream an answer; return seconds to the first ``data:`` line and drain the rest."""
        start = time.perf_counter()
        ttft = math.nan
        with client.stream("POST", self.url, json=self.stream_payload) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data:") and math.isnan(ttft):
                    ttft = time.perf_counter() - start
        return ttft


def timed(fn: Callable[[], Any]) -> float:
    """Return the seconds ``fn()`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_threads(n_threads: int, total: int, call: Callable[[], Any]) -> tuple[float, float, int]:
    """Run ``call`` ``total`` times from ``n_threads`` threads; return wall s, CPU s, errors."""
    counter = itertools.count()
    errors = [0]
    lock = threading.Lock()
    start_gate = threading.Barrier(n_threads + 1)

    def worker() -> None:
        start_gate.wait()
        while next(counter) < total:
            try:
                call()
            except Exception:
                with lock:
                    errors[0] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n_threads)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    start_gate.wait()
    wall0 = time.perf_counter()
    for t in threads:
        t.join(timeout=CHILD_TIMEOUT_S)
    return time.perf_counter() - wall0, time.process_time() - cpu0, errors[0]


async def run_tasks(n_tasks: int, total: int, call: Callable[[], Any]) -> tuple[float, float, int]:
    """Run coroutine ``call()`` ``total`` times from ``n_tasks`` tasks; wall s, CPU s, errors."""
    counter = itertools.count()
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while next(counter) < total:
            try:
                await call()
            except Exception:
                errors += 1

    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(n_tasks))), timeout=CHILD_TIMEOUT_S
    )
    return time.perf_counter() - wall0, time.process_time() - cpu0, errors


def start_runtime(providers: list[ProviderConfig], log: Path, **config: Any) -> Runtime:
    """Start a runtime whose event log is the SQLite file ``log``."""
    return Runtime.start(RuntimeConfig(providers=providers, **config), event_log=log)


def rss_mb() -> float:
    """Return this process's current resident set size in MB (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """Return the peak resident set size of this process's address space in MB (VmHWM).

    Not ``ru_maxrss``: Linux carries that across ``exec`` from the parent that forked us.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return math.nan


# --- 1. routing overhead --------------------------------------------------------------------


def bench_overhead(scale: Scale, url: str, work: Path, *, pairs: int = 0) -> dict[str, Any]:
    """Interleave ``Runtime.complete`` and direct httpx at concurrency 1; time ``route_request``."""
    if pairs:
        scale = dataclasses.replace(scale, overhead_pairs=pairs)
    rt = start_runtime([provider("healthy", url)], work / f"overhead-{pairs}.sqlite")
    direct = Direct(url)
    client = direct_client()
    routed = make_request()
    try:
        for _ in range(min(50, scale.overhead_pairs)):  # warm connections and caches
            rt.complete(make_request())
            direct.complete(client)
            rt.route_request(routed)
        per_round: dict[str, list[float]] = {
            k: []
            for k in (
                "runtime_p50_ms",
                "runtime_p99_ms",
                "direct_p50_ms",
                "direct_p99_ms",
                "overhead_p50_ms",
                "overhead_p50_pct",
                "overhead_p99_ms",
                "route_p50_ms",
                "route_p99_ms",
            )
        }
        for r in range(scale.overhead_rounds):
            ours: list[float] = []
            theirs: list[float] = []
            decide: list[float] = []
            for i in range(scale.overhead_pairs):
                request = make_request()  # a fresh id each time, as a caller would
                if (i + r) % 2:
                    ours.append(timed(lambda req=request: rt.complete(req)))
                    theirs.append(timed(lambda: direct.complete(client)))
                else:
                    theirs.append(timed(lambda: direct.complete(client)))
                    ours.append(timed(lambda req=request: rt.complete(req)))
                decide.append(timed(lambda: rt.route_request(routed)))
            ms = 1000.0
            per_round["runtime_p50_ms"].append(percentile(ours, 0.5) * ms)
            per_round["runtime_p99_ms"].append(percentile(ours, 0.99) * ms)
            per_round["direct_p50_ms"].append(percentile(theirs, 0.5) * ms)
            per_round["direct_p99_ms"].append(percentile(theirs, 0.99) * ms)
            per_round["overhead_p50_ms"].append(
                (percentile(ours, 0.5) - percentile(theirs, 0.5)) * ms
            )
            per_round["overhead_p50_pct"].append(
                (percentile(ours, 0.5) / percentile(theirs, 0.5) - 1.0) * 100.0
            )
            per_round["overhead_p99_ms"].append(
                (percentile(ours, 0.99) - percentile(theirs, 0.99)) * ms
            )
            per_round["route_p50_ms"].append(percentile(decide, 0.5) * ms)
            per_round["route_p99_ms"].append(percentile(decide, 0.99) * ms)
        rt.flush()
    finally:
        client.close()
        rt.close()
    result = {k: summary(v) for k, v in per_round.items()}
    result["pairs_per_round"] = scale.overhead_pairs
    # The optional extras cost nothing unless used: installed (the test extra has them), none
    # of their modules is loaded by the requests above.
    result["otel_installed"] = importlib.util.find_spec("opentelemetry") is not None
    result["otel_modules_loaded"] = sum(1 for m in sys.modules if m.startswith("opentelemetry"))
    return result


# --- 2. throughput --------------------------------------------------------------------------


def bench_throughput(scale: Scale, url: str, work: Path) -> dict[str, Any]:
    """Compare requests/s and CPU/request at 50 threads and at 50 asyncio tasks."""
    rt = start_runtime([provider("healthy", url)], work / "throughput.sqlite")
    direct = Direct(url)
    client = direct_client()
    n = scale.throughput_requests
    rows: dict[str, list[float]] = {
        k: []
        for k in (
            "runtime_rps",
            "direct_rps",
            "rps_ratio",
            "runtime_cpu_ms_per_req",
            "direct_cpu_ms_per_req",
            "cpu_ratio",
            "async_runtime_rps",
            "async_direct_rps",
            "async_rps_ratio",
            "async_runtime_cpu_ms_per_req",
            "async_direct_cpu_ms_per_req",
            "async_cpu_ratio",
        )
    }
    errors = {"runtime": 0, "direct": 0, "async_runtime": 0, "async_direct": 0}

    def record(prefix: str, ours: tuple[float, float, int], theirs: tuple[float, float, int]):
        rps_ours, rps_theirs = n / ours[0], n / theirs[0]
        cpu_ours, cpu_theirs = ours[1] / n * 1000.0, theirs[1] / n * 1000.0
        rows[f"{prefix}runtime_rps"].append(rps_ours)
        rows[f"{prefix}direct_rps"].append(rps_theirs)
        rows[f"{prefix}rps_ratio"].append(rps_ours / rps_theirs)
        rows[f"{prefix}runtime_cpu_ms_per_req"].append(cpu_ours)
        rows[f"{prefix}direct_cpu_ms_per_req"].append(cpu_theirs)
        rows[f"{prefix}cpu_ratio"].append(cpu_ours / cpu_theirs)
        errors[f"{prefix}runtime"] += ours[2]
        errors[f"{prefix}direct"] += theirs[2]

    try:
        # Warm both paths (connections opened, code paths hot).
        run_threads(CONCURRENCY, CONCURRENCY * 2, lambda: rt.complete(make_request()))
        run_threads(CONCURRENCY, CONCURRENCY * 2, lambda: direct.complete(client))
        for r in range(scale.throughput_rounds):
            if r % 2:
                theirs = run_threads(CONCURRENCY, n, lambda: direct.complete(client))
                ours = run_threads(CONCURRENCY, n, lambda: rt.complete(make_request()))
            else:
                ours = run_threads(CONCURRENCY, n, lambda: rt.complete(make_request()))
                theirs = run_threads(CONCURRENCY, n, lambda: direct.complete(client))
            record("", ours, theirs)
        rt.flush()

        async def async_rounds() -> None:
            async with direct_async_client() as aclient:
                await run_tasks(CONCURRENCY, CONCURRENCY * 2, lambda: rt.acomplete(make_request()))
                await run_tasks(CONCURRENCY, CONCURRENCY * 2, lambda: direct.acomplete(aclient))
                for r in range(scale.throughput_rounds):
                    if r % 2:
                        theirs = await run_tasks(CONCURRENCY, n, lambda: direct.acomplete(aclient))
                        ours = await run_tasks(CONCURRENCY, n, lambda: rt.acomplete(make_request()))
                    else:
                        ours = await run_tasks(CONCURRENCY, n, lambda: rt.acomplete(make_request()))
                        theirs = await run_tasks(CONCURRENCY, n, lambda: direct.acomplete(aclient))
                    record("async_", ours, theirs)

        asyncio.run(async_rounds())
        rt.flush()
    finally:
        client.close()
        rt.close()
    result: dict[str, Any] = {k: summary(v) for k, v in rows.items()}
    result["requests_per_round"] = n
    result["concurrency"] = CONCURRENCY
    result["errors"] = errors
    return result


# --- 3. streaming ---------------------------------------------------------------------------


def bench_streaming(scale: Scale, url: str, work: Path) -> dict[str, Any]:
    """Interleave time to first chunk through ``Runtime.stream`` and direct httpx streaming."""
    rt = start_runtime([provider("healthy", url)], work / "stream.sqlite")
    direct = Direct(url)
    client = direct_client()

    def ours_ttft() -> float:
        start = time.perf_counter()
        it = rt.stream(make_request(stream=True))
        next(it)
        ttft = time.perf_counter() - start
        for _ in it:
            pass
        return ttft

    rows: dict[str, list[float]] = {
        "runtime_ttft_p50_ms": [],
        "direct_ttft_p50_ms": [],
        "ttft_overhead_p50_ms": [],
        "runtime_ttft_p99_ms": [],
        "direct_ttft_p99_ms": [],
    }
    try:
        for _ in range(min(20, scale.stream_pairs)):
            ours_ttft()
            direct.stream_ttft(client)
        for r in range(scale.stream_rounds):
            ours: list[float] = []
            theirs: list[float] = []
            for i in range(scale.stream_pairs):
                if (i + r) % 2:
                    ours.append(ours_ttft())
                    theirs.append(direct.stream_ttft(client))
                else:
                    theirs.append(direct.stream_ttft(client))
                    ours.append(ours_ttft())
            rows["runtime_ttft_p50_ms"].append(percentile(ours, 0.5) * 1000)
            rows["direct_ttft_p50_ms"].append(percentile(theirs, 0.5) * 1000)
            rows["ttft_overhead_p50_ms"].append(
                (percentile(ours, 0.5) - percentile(theirs, 0.5)) * 1000
            )
            rows["runtime_ttft_p99_ms"].append(percentile(ours, 0.99) * 1000)
            rows["direct_ttft_p99_ms"].append(percentile(theirs, 0.99) * 1000)
        rt.flush()
    finally:
        client.close()
        rt.close()
    result: dict[str, Any] = {k: summary(v) for k, v in rows.items()}
    result["pairs_per_round"] = scale.stream_pairs
    return result


# --- 4. failover ----------------------------------------------------------------------------


def bench_failover(scale: Scale, url: str, bad_url: str, work: Path) -> dict[str, Any]:
    """Measure a preferred always-503 provider in front of a healthy one.

    Two set-ups, each interleaved with a runtime that has the healthy provider alone:

    - ``every_request``: health checks off and an unlimited retry budget, so every request
      really tries the failing provider first: the added latency is the cost of one failover.
    - ``defaults``: the default health and failover settings (the circuit opens after a few
      failures, the retry budget caps failovers): the success rate a user actually gets.
    """
    healthy = start_runtime([provider("healthy", url)], work / "fo-healthy.sqlite")
    forced = start_runtime(
        [provider("failing", bad_url, priority=10), provider("healthy", url)],
        work / "fo-forced.sqlite",
        health=HealthConfig(enabled=False),
        failover=FailoverConfig(retry_budget_ratio=1.0, retry_budget_min=1_000_000),
    )
    default = start_runtime(
        [provider("failing", bad_url, priority=10), provider("healthy", url)],
        work / "fo-default.sqlite",
    )
    result: dict[str, Any] = {}
    try:
        for name, rt in (("every_request", forced), ("defaults", default)):
            rows: dict[str, list[float]] = {
                "success_rate": [],
                "mean_attempts": [],
                "failover_p50_ms": [],
                "failover_p99_ms": [],
                "healthy_p50_ms": [],
                "healthy_p99_ms": [],
                "added_p50_ms": [],
            }
            for _ in range(5):  # warm the healthy runtime's connection
                healthy.complete(make_request())
            for r in range(scale.failover_rounds):
                ours: list[float] = []
                base: list[float] = []
                ok = 0
                attempts = 0
                for i in range(scale.failover_pairs):

                    def one(rt: Runtime = rt, ours: list[float] = ours) -> None:
                        nonlocal ok, attempts
                        start = time.perf_counter()
                        try:
                            response = rt.complete(make_request())
                        except Exception:
                            ours.append(time.perf_counter() - start)
                            attempts += 2
                            return
                        ours.append(time.perf_counter() - start)
                        ok += 1
                        attempts += response.attempts

                    if (i + r) % 2:
                        one()
                        base.append(timed(lambda: healthy.complete(make_request())))
                    else:
                        base.append(timed(lambda: healthy.complete(make_request())))
                        one()
                rows["success_rate"].append(ok / scale.failover_pairs)
                rows["mean_attempts"].append(attempts / scale.failover_pairs)
                rows["failover_p50_ms"].append(percentile(ours, 0.5) * 1000)
                rows["failover_p99_ms"].append(percentile(ours, 0.99) * 1000)
                rows["healthy_p50_ms"].append(percentile(base, 0.5) * 1000)
                rows["healthy_p99_ms"].append(percentile(base, 0.99) * 1000)
                rows["added_p50_ms"].append((percentile(ours, 0.5) - percentile(base, 0.5)) * 1000)
            result[name] = {k: summary(v) for k, v in rows.items()}
        for rt in (healthy, forced, default):
            rt.flush()
    finally:
        for rt in (healthy, forced, default):
            rt.close()
    result["pairs_per_round"] = scale.failover_pairs
    return result


# --- 5. event log -----------------------------------------------------------------------------


def capture_templates(url: str, bad_url: str, work: Path) -> list[list[Event]]:
    """Record real requests (plain, streamed, failed over) and return their events by request."""
    path = work / "templates.sqlite"
    rt = start_runtime(
        [provider("failing", bad_url, priority=10), provider("healthy", url)],
        path,
        health=HealthConfig(enabled=False),
        failover=FailoverConfig(retry_budget_ratio=1.0, retry_budget_min=1_000_000),
    )
    solo = None
    try:
        for _ in range(4):  # failover: 503 then success
            rt.complete(make_request())
        rt.flush()
    finally:
        rt.close()
    solo = start_runtime([provider("healthy", url)], path)
    try:
        for _ in range(16):
            solo.complete(make_request())
        for _ in range(4):
            for _chunk in solo.stream(make_request(stream=True)):
                pass
        solo.flush()
    finally:
        solo.close()
    groups: dict[str, list[Event]] = {}
    store = SQLiteStore(path, readonly=True)
    try:
        for stored in store.read():
            rid = getattr(stored.event, "request_id", None)
            if rid is not None:
                groups.setdefault(rid, []).append(stored.event)
    finally:
        store.close()
    return list(groups.values())


def synthetic_events(
    templates: list[list[Event]], count: int, *, start: int = 0
) -> Iterator[Event]:
    """Yield ``count`` events: the templates' requests again and again, with fresh ids.

    Timestamps advance 1 ms per event from a fixed origin, so a log of any length covers the
    same span per event (the usage projection keeps one bucket per hour of the log).
    """
    origin = 1_700_000_000.0
    replace = msgspec.structs.replace
    produced = 0
    for n in itertools.count(start):
        group = templates[n % len(templates)]
        rid = f"{n:032x}"
        for event in group:
            if produced >= count:
                return
            yield replace(event, request_id=rid, ts=origin + (start + produced) * 0.001)
            produced += 1


def build_log(path: Path, templates: list[list[Event]], count: int, batch: int = 5000) -> None:
    """Write a log of ``count`` synthetic events to ``path`` (batched appends)."""
    store = SQLiteStore(path, synchronous="OFF")
    try:
        events = synthetic_events(templates, count)
        while chunk := list(itertools.islice(events, batch)):
            store.append(chunk)
    finally:
        store.close()


REPLAY_CHILD = """
import json, resource, sys, time
def hwm_kib():
    # VmHWM: peak RSS of this process's own address space. ru_maxrss is not used because
    # Linux carries it across exec from the forking parent (the benchmark, ~70 MB).
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
start = time.perf_counter()
from routeledger import replay
imported = time.perf_counter() - start
base = hwm_kib()
start = time.perf_counter()
projections = replay(sys.argv[1])
elapsed = time.perf_counter() - start
peak = hwm_kib()
print(json.dumps({"seconds": elapsed, "import_s": imported, "base_kib": base, "peak_kib": peak,
                  "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "providers": sorted(projections.metrics)}))
"""


def replay_in_child(path: Path) -> dict[str, Any]:
    """Replay ``path`` in a fresh interpreter; return its timing and peak RSS."""
    out = subprocess.run(
        [sys.executable, "-c", REPLAY_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_event_log(scale: Scale, url: str, bad_url: str, work: Path) -> dict[str, Any]:
    """Measure appends through the writer actor, raw batched appends, and replay."""
    templates = capture_templates(url, bad_url, work)
    events_per_request = sum(len(g) for g in templates) / len(templates)
    n = scale.append_events
    result: dict[str, Any] = {
        "template_requests": len(templates),
        "events_per_request": events_per_request,
    }

    # Through the log-writer actor: several threads tell one request's events per message
    # (as the supervisor does), then one Flush ask waits until everything is committed.
    senders = 4
    writer_rates: list[float] = []
    writer_commits: list[float] = []
    for r in range(scale.append_rounds):
        groups: list[list[Event]] = []
        events = synthetic_events(templates, n, start=r * n)
        for template in itertools.cycle(templates):
            chunk = list(itertools.islice(events, len(template)))
            if not chunk:
                break
            groups.append(chunk)
        path = work / f"writer-{r}.sqlite"
        store = CountingStore(SQLiteStore(path))
        ref = LogWriterActor.start(EventWriter(store, config=LogConfig(), clock=SystemClock()))
        try:
            shares = [groups[i::senders] for i in range(senders)]
            tell = ref.tell

            def send(share: list[list[Event]], tell: Callable[[Any], None] = tell) -> None:
                for group in share:
                    tell(Append(group))

            threads = [threading.Thread(target=send, args=(s,)) for s in shares]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=CHILD_TIMEOUT_S)
            ref.ask(Flush(), timeout=CHILD_TIMEOUT_S)
            elapsed = time.perf_counter() - start
        finally:
            ref.stop(timeout=CHILD_TIMEOUT_S)
            store.close()
        writer_rates.append(n / elapsed)
        writer_commits.append(store.appends)
    result["writer_events_per_s"] = summary(writer_rates)
    result["writer_commits"] = summary(writer_commits)
    result["writer_events_per_message"] = events_per_request
    result["writer_senders"] = senders

    # Raw store: pre-built batches of 1,000 events, one transaction each.
    raw_rates: list[float] = []
    for r in range(scale.append_rounds):
        events_list = list(synthetic_events(templates, n, start=r * n))
        batches = [events_list[i : i + 1000] for i in range(0, n, 1000)]
        store = SQLiteStore(work / f"raw-{r}.sqlite")
        try:
            start = time.perf_counter()
            for batch in batches:
                store.append(batch)
            raw_rates.append(n / (time.perf_counter() - start))
        finally:
            store.close()
    result["raw_append_events_per_s"] = summary(raw_rates)
    result["raw_batch"] = 1000

    # Replay: logs of two sizes, each replayed in a fresh process.
    for label, size in (("small", scale.replay_small), ("large", scale.replay_large)):
        path = work / f"replay-{label}.sqlite"
        build_log(path, templates, size)
        runs = [replay_in_child(path) for _ in range(scale.replay_rounds)]
        result[f"replay_{label}"] = {
            "events": size,
            "events_per_s": summary([size / run["seconds"] for run in runs]),
            "peak_rss_mb": summary([run["peak_kib"] * 1024 / 1e6 for run in runs]),
            "rss_before_replay_mb": summary([run["base_kib"] * 1024 / 1e6 for run in runs]),
            "replay_growth_mb": summary(
                [(run["peak_kib"] - run["base_kib"]) * 1024 / 1e6 for run in runs]
            ),
        }
        path.unlink()
    small, large = result["replay_small"], result["replay_large"]
    result["replay_memory_ratio"] = large["peak_rss_mb"]["median"] / small["peak_rss_mb"]["median"]
    return result


class CountingStore:
    """Wrap a store and count ``append`` calls (one call is one transaction)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.inner = store
        self.appends = 0
        self.skipped_unknown = 0

    def append(self, events: Sequence[Event]) -> list[int]:
        """Append through the wrapped store."""
        self.appends += 1
        return self.inner.append(events)

    def close(self) -> None:
        """Close the wrapped store."""
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# --- 6. footprint -----------------------------------------------------------------------------

IMPORT_CHILD = """
import time
start = time.perf_counter()
import routeledger
print(time.perf_counter() - start)
"""


def import_top(n: int = 8) -> list[dict[str, Any]]:
    """Return the ``n`` slowest modules under ``import routeledger`` (``-X importtime``)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import routeledger"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|", 2)
        rows.append(
            {
                "module": name.strip(),
                # One space, then two more per nesting level.
                "depth": (len(name) - len(name.lstrip()) - 1) // 2,
                "self_ms": int(self_us) / 1000,
                "cumulative_ms": int(cumulative_us) / 1000,
            }
        )
    # The interesting rows: direct imports of routeledger's own modules and third parties.
    shallow = [r for r in rows if r["depth"] <= 2]
    return sorted(shallow, key=lambda r: -r["cumulative_ms"])[:n]


RSS_CHILD_FLAG = "--child-rss"


def child_rss(url: str, requests: int, windows: int, window_s: float, log: str) -> None:
    """Child mode: start a runtime, measure idle CPU, serve ``requests``, print RSS as JSON."""
    rss_imported = rss_mb()
    rt = start_runtime([provider("healthy", url)], Path(log))
    try:
        rss_started = rss_mb()
        idle: list[float] = []
        for _ in range(windows):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            time.sleep(window_s)
            idle.append((time.process_time() - cpu0) / (time.perf_counter() - wall0) * 100)
        threads = 8
        wall, cpu, errors = run_threads(threads, requests, lambda: rt.complete(make_request()))
        rt.flush()
        rss_after = rss_mb()
        peak = peak_rss_mb()
        idle_after: list[float] = []
        for _ in range(windows):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            time.sleep(window_s)
            idle_after.append((time.process_time() - cpu0) / (time.perf_counter() - wall0) * 100)
    finally:
        rt.close()
    print(
        json.dumps(
            {
                "rss_imported_mb": rss_imported,
                "rss_started_mb": rss_started,
                "rss_after_mb": rss_after,
                "peak_rss_mb": peak,
                "idle_cpu_pct": idle,
                "idle_cpu_after_load_pct": idle_after,
                "requests": requests,
                "threads": threads,
                "errors": errors,
                "rps": requests / wall,
                "cpu_ms_per_req": cpu / requests * 1000,
            }
        )
    )


def bench_footprint(scale: Scale, url: str, work: Path) -> dict[str, Any]:
    """Measure import time, start time with 10 providers, RSS after requests and idle CPU."""
    result: dict[str, Any] = {}
    imports = []
    for _ in range(scale.import_rounds):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_CHILD],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        imports.append(float(out.stdout.strip()))
    result["import_s"] = summary(imports)
    try:
        result["import_top"] = import_top()
    except Exception as exc:  # informative only
        result["import_top"] = [{"error": repr(exc)}]

    starts = []
    closes = []
    ten = [provider(f"p{i}", url) for i in range(10)]
    for r in range(scale.start_rounds):
        t0 = time.perf_counter()
        rt = start_runtime(ten, work / f"start-{r}.sqlite")
        t1 = time.perf_counter()
        rt.close()
        starts.append(t1 - t0)
        closes.append(time.perf_counter() - t1)
    result["start_10_providers_s"] = summary(starts)
    result["close_10_providers_s"] = summary(closes)

    out = subprocess.run(
        [
            sys.executable,
            os.path.abspath(__file__),
            RSS_CHILD_FLAG,
            url,
            str(scale.rss_requests),
            str(scale.idle_windows),
            str(scale.idle_window_s),
            str(work / "rss.sqlite"),
        ],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=True,
    )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    result["rss"] = child
    result["rss_after_requests_mb"] = child["rss_after_mb"]
    result["idle_cpu_pct"] = summary(child["idle_cpu_pct"])
    result["idle_cpu_after_load_pct"] = summary(child["idle_cpu_after_load_pct"])
    result["idle_seconds"] = scale.idle_windows * scale.idle_window_s
    return result


START_CHILD = """
import json, sys, time
import msgspec
from routeledger import Runtime, RuntimeConfig, replay
from routeledger.store import SQLiteStore, read_snapshots

path, cfg_path, what = sys.argv[1:4]
with SQLiteStore(path, readonly=True) as store:
    snapshot = max((s.position for s in read_snapshots(store)), default=0)
    last = store.last_position()
if what == "start":
    cfg = msgspec.json.decode(open(cfg_path, "rb").read(), type=RuntimeConfig)
    start = time.perf_counter()
    rt = Runtime.start(cfg, event_log=path, active_health_checks=False)
    started = time.perf_counter() - start
    metrics = rt.get_metrics()
    start = time.perf_counter()
    rt.close()
    closed = time.perf_counter() - start
    requests = sum(m.requests for m in metrics.values())
    out = {"seconds": started, "close_s": closed, "requests": requests}
else:
    start = time.perf_counter()
    projections = replay(path, snapshots=what == "replay")
    out = {"seconds": time.perf_counter() - start, "from": projections.snapshot_position}
print(json.dumps({**out, "snapshot": snapshot, "last": last}))
"""


def start_in_child(path: Path, cfg: Path, what: str) -> dict[str, Any]:
    """Time ``Runtime.start`` (``what="start"``) or ``replay`` on ``path`` in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", START_CHILD, str(path), str(cfg), what],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_start_1m(scale: Scale, url: str, bad_url: str, work: Path) -> dict[str, Any]:
    """Measure ``Runtime.start`` on a long log without and with a snapshot, and replay rates."""
    templates = capture_templates(url, bad_url, work)
    n = scale.start_log_events
    every = min(LogConfig().snapshot_every, n)
    config = RuntimeConfig(
        providers=[provider("failing", bad_url, priority=10), provider("healthy", url)],
        health=HealthConfig(enabled=False),
        log=LogConfig(snapshot_every=every),
    )
    cfg = work / "start-1m.json"
    cfg.write_bytes(msgspec.json.encode(config))
    pristine = work / "start-1m.sqlite"
    t0 = time.perf_counter()
    build_log(pristine, templates, n, batch=10_000)
    result: dict[str, Any] = {
        "events": n,
        "snapshot_every": every,
        "build_s": time.perf_counter() - t0,
        "file_mb": pristine.stat().st_size / 1e6,
    }
    log_path = work / "start-1m-run.sqlite"
    without: list[float] = []
    closes: list[float] = []
    for _ in range(min(2, scale.start_rounds)):
        shutil.copyfile(pristine, log_path)
        child = start_in_child(log_path, cfg, "start")
        assert child["snapshot"] == 0, child
        without.append(child["seconds"])
        closes.append(child["close_s"])  # the writer's first snapshot is written before it
    result["start_without_snapshot_s"] = summary(without)
    result["close_after_first_start_s"] = summary(closes)
    rates = [n / start_in_child(pristine, cfg, "replay-full")["seconds"] for _ in range(2)]
    result["replay_full_events_per_s"] = summary(rates)

    with_snapshot: list[float] = []
    for _ in range(scale.start_rounds):
        child = start_in_child(log_path, cfg, "start")
        assert child["snapshot"] == child["last"], child  # the previous close wrote it
        with_snapshot.append(child["seconds"])
    result["start_with_snapshot_s"] = summary(with_snapshot)
    replays = [start_in_child(log_path, cfg, "replay") for _ in range(scale.start_rounds)]
    assert all(r["from"] == r["snapshot"] > 0 for r in replays), replays
    result["replay_with_snapshot_s"] = summary([r["seconds"] for r in replays])

    # The worst case the schedule allows: a snapshot snapshot_every - 1 events behind.
    store = SQLiteStore(log_path, synchronous="OFF")
    try:
        tail = synthetic_events(templates, every - 1, start=2 * n)
        while chunk := list(itertools.islice(tail, 10_000)):
            store.append(chunk)
    finally:
        store.close()
    behind = [start_in_child(log_path, cfg, "replay") for _ in range(scale.start_rounds)]
    assert all(r["last"] - r["snapshot"] == every - 1 for r in behind), behind
    result["replay_with_full_tail_s"] = summary([r["seconds"] for r in behind])
    log_path.unlink()
    pristine.unlink()
    return result


WHATIF_CHILD = """
import json, sys, time
import msgspec
from routeledger import RuntimeConfig, whatif
def hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
cfg = msgspec.json.decode(open(sys.argv[2], "rb").read(), type=RuntimeConfig)
base = hwm_kib()
start = time.perf_counter()
result = whatif(sys.argv[1], config=cfg, strategy="least-loaded")
print(json.dumps({"seconds": time.perf_counter() - start, "base_kib": base,
                  "peak_kib": hwm_kib(), "requests": result.recorded.requests}))
"""


def bench_whatif_1m(scale: Scale, url: str, bad_url: str, work: Path) -> dict[str, Any]:
    """Measure ``whatif`` on a short and a long log in fresh processes: time and peak RSS."""
    templates = capture_templates(url, bad_url, work)
    config = RuntimeConfig(
        providers=[provider("failing", bad_url, priority=10), provider("healthy", url)],
        health=HealthConfig(enabled=False),
    )
    cfg = work / "whatif.json"
    cfg.write_bytes(msgspec.json.encode(config))
    result: dict[str, Any] = {}
    for label, n in (("small", scale.start_log_events // 20), ("large", scale.start_log_events)):
        path = work / f"whatif-{label}.sqlite"
        build_log(path, templates, n, batch=10_000)
        out = subprocess.run(
            [sys.executable, "-c", WHATIF_CHILD, str(path), str(cfg)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=True,
        )
        result[label] = {"events": n, **json.loads(out.stdout.strip().splitlines()[-1])}
        path.unlink()
    return result


PRODUCT_CHILD = """
import contextlib, io, json, sys, time
from routeledger.cli import main
def hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
base = hwm_kib()
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    status = main(sys.argv[1:])
print(json.dumps({"seconds": time.perf_counter() - start, "base_kib": base,
                  "peak_kib": hwm_kib(), "status": status}))
"""

PRODUCTS = {
    "ab": ["ab", "--db", "{db}", "--json"],
    "report": ["report", "--db", "{db}", "-o", "{out}.html", "--no-progress"],
    "export csv": ["export", "--db", "{db}", "--format", "csv", "-o", "{out}.csv"],
    "export jsonl": ["export", "--db", "{db}", "--format", "jsonl", "-o", "{out}.jsonl"],
}
"""The replay products of issue 14, as their commands run them (output to a file)."""


def ab_events(count: int) -> Iterator[Event]:
    """Yield about ``count`` events of requests split by one A/B test between two providers.

    Each request is 7 events (received, assigned, decided, started, ended twice, the A/B
    metric), one in twenty failed, one request per 50 ms from a fixed origin: the shape a
    long-running experiment leaves in a log.
    """
    rng = random.Random(1)
    t0 = 1_764_770_000.0
    yield ABTestCreated(ts=t0, name="ab", variant_a="p0", variant_b="p1", split_ratio=0.5)
    for i in range(max(0, count - 1) // 7):
        ts, rid = t0 + i * 0.05, f"r{i:08d}"
        variant, provider_ = ("A", "p0") if rng.random() < 0.5 else ("B", "p1")
        latency, failed = rng.lognormvariate(4, 0.5), rng.random() < 0.05
        same = {"ts": ts, "request_id": rid}
        yield RequestReceived(**same, model="m", ab_test="ab")
        yield ABVariantAssigned(
            **same, test="ab", variant=variant, provider=provider_, probability=0.5
        )
        yield RouteDecided(
            **same, strategy="round-robin", candidates=["p0", "p1"], chosen=provider_
        )
        yield AttemptStarted(**same, attempt=1, provider=provider_, model="m")
        if failed:
            yield AttemptFailed(
                **same, attempt=1, provider=provider_, model="m",
                error="ProviderUnavailable", latency_ms=latency,
            )  # fmt: skip
            yield RequestFailed(**same, model="m", error="AllProvidersFailed", latency_ms=latency)
        else:
            yield AttemptSucceeded(
                **same, attempt=1, provider=provider_, model="m", latency_ms=latency,
                cost=0.0001, output_tokens=20,
            )  # fmt: skip
            yield RequestCompleted(
                **same, provider=provider_, model="m", attempts=1, latency_ms=latency,
                cost=0.0001,
            )  # fmt: skip
        yield ABMetricsRecorded(
            **same, test="ab", variant=variant, latency_ms=latency,
            cost=None if failed else 0.0001, error=failed, source="auto",
        )  # fmt: skip


def bench_products_1m(scale: Scale, work: Path) -> dict[str, Any]:
    """Measure ``ab``, ``report`` and ``export`` on a short and a long log: time, peak RSS."""
    result: dict[str, Any] = {}
    for label, n in (("small", scale.start_log_events // 10), ("large", scale.start_log_events)):
        path = work / f"products-{label}.sqlite"
        store = SQLiteStore(path, synchronous="OFF")
        try:
            events = ab_events(n)
            while chunk := list(itertools.islice(events, 10_000)):
                store.append(chunk)
            written = store.last_position()
        finally:
            store.close()
        runs: dict[str, Any] = {"events": written}
        for product, argv in PRODUCTS.items():
            out = work / f"products-{label}"
            args = [a.format(db=path, out=out) for a in argv]
            child = subprocess.run(
                [sys.executable, "-c", PRODUCT_CHILD, *args],
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
                check=True,
            )
            runs[product] = json.loads(child.stdout.strip().splitlines()[-1])
        for leftover in work.glob(f"products-{label}*"):
            leftover.unlink()
        result[label] = runs
    return result


# --- 8. several daemons on one SQLite log -----------------------------------------------------


class _Daemon:
    """One ``python -m routeledger._daemon`` process on a shared log, driven by JSON lines."""

    def __init__(self, log: Path | str, config: RuntimeConfig) -> None:
        encoded = msgspec.json.encode(msgspec.to_builtins(config, enc_hook=str)).decode()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "routeledger._daemon", "--db", str(log), "--config", encoded],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError("a daemon stopped answering")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def send(self, op: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        self.send(op, **args)
        return self.read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ask("close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def _acquainted(group: list[_Daemon], timeout: float = 10.0) -> None:
    ids = [d.read()["ready"] for d in group]
    end = time.monotonic() + timeout
    for daemon, me in zip(group, ids, strict=True):
        while set(daemon.ask("shared")["peers"]) < set(ids) - {me}:
            if time.monotonic() > end:
                raise RuntimeError("the daemons did not see each other")
            time.sleep(0.01)


def bench_shared(
    scale: Scale, url: str, bad_url: str, work: Path, pg_url: str | None = None
) -> dict[str, Any]:
    """Measure three daemon processes sharing one SQLite log (a fresh log each round), and
    with ``pg_url`` four sharing PostgreSQL (a fresh schema each round) under ``postgres``.

    - ``steer_ms``: a provider that answers 503 (preferred) fails for daemon A alone; the
      time from A's last failed call until every other daemon routes away from it.
    - ``agree_ms``: after each daemon sent a burst of requests, the time until every daemon's
      live figures are equal and count every request, with no ``flush()`` (the followers
      polling the log every 25 ms, or woken by PostgreSQL's notifications, do it).
    """
    config = RuntimeConfig(
        providers=[provider("failing", bad_url, priority=10), provider("healthy", url)],
        health=HealthConfig(failure_threshold=3),
    )
    burst = max(10, scale.failover_pairs // 2)

    @contextlib.contextmanager
    def sqlite_log(r: int) -> Iterator[str]:
        yield str(work / f"shared-{r}.sqlite")

    steer, agree = _shared_rounds(scale, config, sqlite_log, 3, burst)
    out: dict[str, Any] = {
        "daemons": 3,
        "burst_per_daemon": burst,
        "steer_ms": summary(steer),
        "agree_ms": summary(agree),
    }
    if pg_url is not None:
        steer, agree = _shared_rounds(scale, config, lambda r: pg_schema(pg_url), 4, burst)
        out["postgres"] = {"daemons": 4, "steer_ms": summary(steer), "agree_ms": summary(agree)}
    return out


def _shared_rounds(
    scale: Scale,
    config: RuntimeConfig,
    fresh_log: Callable[[int], contextlib.AbstractContextManager[str]],
    daemons: int,
    burst: int,
) -> tuple[list[float], list[float]]:
    """Run the shared section's rounds on ``daemons`` daemons; return (steer, agree) in ms."""
    steer: list[float] = []
    agree: list[float] = []
    for r in range(scale.failover_rounds):
        with fresh_log(r) as log:
            group = [_Daemon(log, config) for _ in range(daemons)]
            try:
                _acquainted(group)
                first, others = group[0], group[1:]
                first.ask("burst", n=3, preferred="failing", model=MODEL.name)
                done = time.perf_counter()
                for daemon in others:
                    while daemon.ask("route", model=MODEL.name)["provider"] == "failing":
                        time.sleep(0.002)
                steer.append((time.perf_counter() - done) * 1000)
                for daemon in group:
                    daemon.send("burst", n=burst, threads=4, model=MODEL.name)
                sent = sum(daemon.read()["ok"] for daemon in group) + 3
                done = time.perf_counter()
                while True:
                    figures = [daemon.ask("metrics") for daemon in group]
                    counted = sum(m["requests"] for m in figures[0].values())
                    if counted >= sent and all(f == figures[0] for f in figures):
                        break
                    time.sleep(0.002)
                agree.append((time.perf_counter() - done) * 1000)
            finally:
                for daemon in group:
                    daemon.close()
    return steer, agree


# --- the report -----------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One line of the table."""

    figure: str
    value: float
    unit: str
    spread: str
    target: str
    passed: bool | None


# --- 8. PostgreSQL: one log shared by several processes -----------------------------------------

PG_WRITER_FLAG = "--child-pg-writer"


def pg_writer_child(url: str, batches: int, size: int) -> None:
    """Append ``batches`` batches of ``size`` events after a line on stdin; print the time."""
    from routeledger.store import PostgresStore

    store = PostgresStore(url)
    events = [
        HealthProbed(ts=float(i), provider="bench", healthy=True, latency_ms=1.0)
        for i in range(size)
    ]
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for _ in range(batches):
        store.append(events)
    print(f"{time.perf_counter() - t0:.6f}", flush=True)
    store.close()


@contextlib.contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """Yield ``url`` pointed at a new schema of its own; drop the schema afterwards."""
    import uuid
    from urllib.parse import quote

    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def pg_writers_rate(url: str, writers: int, batches: int, size: int) -> float:
    """Return the events/s that ``writers`` processes append to one fresh log together."""
    with pg_schema(url) as schema_url:
        from routeledger.store import PostgresStore

        PostgresStore(schema_url).close()  # the tables, before the writers race to them
        children = [
            subprocess.Popen(
                [sys.executable, __file__, PG_WRITER_FLAG, schema_url, str(batches), str(size)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(writers)
        ]
        try:
            for child in children:
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            t0 = time.perf_counter()
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.close()
            for child in children:
                assert child.stdout is not None
                child.stdout.readline()
                child.wait(timeout=120)
            elapsed = time.perf_counter() - t0
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                if child.stdout is not None:
                    child.stdout.close()
        with PostgresStore(schema_url, readonly=True) as store:
            assert store.last_position() == writers * batches * size
    return writers * batches * size / elapsed


def bench_postgres(scale: Scale, url: str, pg_url: str, work: Path) -> dict[str, Any]:
    """4 writer processes on one PostgreSQL log; c=1 ``complete`` on PostgreSQL vs SQLite."""
    rounds = max(1, scale.append_rounds)
    events = max(800, scale.append_events // 10)
    result: dict[str, Any] = {"writers": 4}
    for size in (20, 200):
        batches = max(1, events // (4 * size))
        rates = [pg_writers_rate(pg_url, 4, batches, size) for _ in range(rounds)]
        result[f"writers_4_batch_{size}_events_per_s"] = summary(rates)
    pairs = max(20, scale.overhead_pairs // 2)
    per_round: dict[str, list[float]] = {
        "pg_p50_ms": [],
        "sqlite_p50_ms": [],
        "pg_minus_sqlite_ms": [],
    }
    with pg_schema(pg_url) as schema_url:
        pg = Runtime.start(
            RuntimeConfig(providers=[provider("healthy", url)]), event_log=schema_url
        )
        lite = start_runtime([provider("healthy", url)], work / "pg-vs-sqlite.sqlite")
        try:
            for _ in range(min(50, pairs)):  # warm connections and caches
                pg.complete(make_request())
                lite.complete(make_request())
            for r in range(scale.overhead_rounds):
                ours: list[float] = []
                theirs: list[float] = []
                for i in range(pairs):
                    first, second = (pg, lite) if (i + r) % 2 else (lite, pg)
                    a = timed(lambda rt=first: rt.complete(make_request()))
                    b = timed(lambda rt=second: rt.complete(make_request()))
                    (ours, theirs)[first is lite].append(a)
                    (ours, theirs)[second is lite].append(b)
                pg_p50, lite_p50 = percentile(ours, 0.5) * 1000, percentile(theirs, 0.5) * 1000
                per_round["pg_p50_ms"].append(pg_p50)
                per_round["sqlite_p50_ms"].append(lite_p50)
                per_round["pg_minus_sqlite_ms"].append(pg_p50 - lite_p50)
            pg.flush()
            lite.flush()
        finally:
            pg.close()
            lite.close()
    result.update({k: summary(v) for k, v in per_round.items()})
    result["pairs_per_round"] = pairs
    return result


def _fmt(value: float, unit: str) -> str:
    if unit in ("events/s", "req/s"):
        return f"{value:,.0f} {unit}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:.3f} {unit}" if abs(value) < 10 else f"{value:.1f} {unit}"


def _spread(s: dict[str, Any], unit: str) -> str:
    return f"{_fmt(s['min'], unit)} .. {_fmt(s['max'], unit)}"


def build_rows(results: dict[str, Any], scale: Scale) -> list[Row]:
    """Turn the sections' results into the table, with targets and verdicts."""
    rows: list[Row] = []

    def add(figure: str, s: dict[str, Any] | None, unit: str, target: str = "", ok: Any = None):
        if s is None:
            return
        rows.append(Row(figure, s["median"], unit, _spread(s, unit), target, ok))

    o = results.get("overhead")
    if isinstance(o, dict) and "overhead_p50_ms" in o:
        add("complete p50 (runtime)", o["runtime_p50_ms"], "ms")
        add("complete p50 (direct httpx)", o["direct_p50_ms"], "ms")
        add("overhead p50", o["overhead_p50_ms"], "ms", "<= 0.3 ms",
            o["overhead_p50_ms"]["median"] <= 0.3)  # fmt: skip
        add("complete p99 (runtime)", o["runtime_p99_ms"], "ms")
        add("complete p99 (direct httpx)", o["direct_p99_ms"], "ms")
        add("overhead p50 / direct p50", o["overhead_p50_pct"], "%", "<= 15 %",
            o["overhead_p50_pct"]["median"] <= 15.0)  # fmt: skip
        add("overhead p99", o["overhead_p99_ms"], "ms", "<= 1.5 ms",
            o["overhead_p99_ms"]["median"] <= 1.5)  # fmt: skip
        add("route_request p50", o["route_p50_ms"], "ms", "<= 0.2 ms",
            o["route_p50_ms"]["median"] <= 0.2)  # fmt: skip
        add("route_request p99", o["route_p99_ms"], "ms")
        if o.get("otel_installed"):
            loaded = o["otel_modules_loaded"]
            rows.append(Row("opentelemetry modules loaded", loaded, "", "", "0 (installed)",
                            loaded == 0))  # fmt: skip
    o5 = results.get("overhead_5ms")
    if isinstance(o5, dict) and "overhead_p50_ms" in o5:
        add("5 ms provider: complete p50 (runtime)", o5["runtime_p50_ms"], "ms")
        add("5 ms provider: complete p50 (direct)", o5["direct_p50_ms"], "ms")
        add("5 ms provider: overhead p50", o5["overhead_p50_ms"], "ms")
        add("5 ms provider: overhead / direct p50", o5["overhead_p50_pct"], "%", "<= 2 %",
            o5["overhead_p50_pct"]["median"] <= 2.0)  # fmt: skip
    t = results.get("throughput")
    if isinstance(t, dict) and "rps_ratio" in t:
        add("threads: runtime req/s", t["runtime_rps"], "req/s")
        add("threads: direct req/s", t["direct_rps"], "req/s")
        add("threads: req/s ratio", t["rps_ratio"], "x", ">= 0.90x",
            t["rps_ratio"]["median"] >= 0.9)  # fmt: skip
        add("threads: runtime CPU/req", t["runtime_cpu_ms_per_req"], "ms")
        add("threads: direct CPU/req", t["direct_cpu_ms_per_req"], "ms")
        add("threads: CPU/req ratio", t["cpu_ratio"], "x")
        add("async: runtime req/s", t["async_runtime_rps"], "req/s")
        add("async: direct req/s", t["async_direct_rps"], "req/s")
        add("async: req/s ratio", t["async_rps_ratio"], "x", ">= 0.90x",
            t["async_rps_ratio"]["median"] >= 0.9)  # fmt: skip
        add("async: runtime CPU/req", t["async_runtime_cpu_ms_per_req"], "ms")
        add("async: direct CPU/req", t["async_direct_cpu_ms_per_req"], "ms")
        add("async: CPU/req ratio", t["async_cpu_ratio"], "x")
    s = results.get("streaming")
    if isinstance(s, dict) and "ttft_overhead_p50_ms" in s:
        add("stream TTFT p50 (runtime)", s["runtime_ttft_p50_ms"], "ms")
        add("stream TTFT p50 (direct)", s["direct_ttft_p50_ms"], "ms")
        add("stream TTFT overhead p50", s["ttft_overhead_p50_ms"], "ms")
    f = results.get("failover")
    if isinstance(f, dict) and "every_request" in f:
        e, d = f["every_request"], f["defaults"]
        add("failover (each req): success", e["success_rate"], "x", "= 1.00x",
            e["success_rate"]["median"] >= 1.0)  # fmt: skip
        add("failover (each req): added p50", e["added_p50_ms"], "ms")
        add("failover (each req): p99", e["failover_p99_ms"], "ms")
        add("failover (defaults): success", d["success_rate"], "x", "= 1.00x",
            d["success_rate"]["median"] >= 1.0)  # fmt: skip
        add("failover (defaults): attempts/req", d["mean_attempts"], "x")
        add("failover (defaults): added p50", d["added_p50_ms"], "ms")
    ev = results.get("event_log")
    if isinstance(ev, dict) and "writer_events_per_s" in ev:
        add("append via writer actor", ev["writer_events_per_s"], "events/s",
            ">= 100,000 events/s", ev["writer_events_per_s"]["median"] >= 100_000)  # fmt: skip
        add("writer: commits per round", ev["writer_commits"], "")
        add("raw SQLiteStore.append (x1000)", ev["raw_append_events_per_s"], "events/s")
        small, large = ev["replay_small"], ev["replay_large"]
        add(f"replay {large['events']:,} events", large["events_per_s"], "events/s",
            ">= 300,000 events/s", large["events_per_s"]["median"] >= 300_000)  # fmt: skip
        add(f"replay {small['events']:,} events", small["events_per_s"], "events/s")
        add(f"replay peak RSS ({small['events']:,})", small["peak_rss_mb"], "MB")
        add(f"replay peak RSS ({large['events']:,})", large["peak_rss_mb"], "MB",
            "flat (<= 1.2x)", ev["replay_memory_ratio"] <= 1.2)  # fmt: skip
    fp = results.get("footprint")
    if isinstance(fp, dict) and "import_s" in fp:
        add("import routeledger", fp["import_s"], "s", "< 0.3 s", fp["import_s"]["median"] < 0.3)
        add("Runtime.start, 10 providers", fp["start_10_providers_s"], "s")
        add("Runtime.close, 10 providers", fp["close_10_providers_s"], "s")
        rss = fp["rss"]
        rss_s = {"median": rss["rss_after_mb"], "min": rss["rss_started_mb"],
                 "max": rss["peak_rss_mb"]}  # fmt: skip
        rows.append(
            Row(
                f"RSS after {rss['requests']:,} requests",
                rss["rss_after_mb"],
                "MB",
                f"started {rss['rss_started_mb']:.1f}, peak {rss['peak_rss_mb']:.1f} MB",
                "< 80 MB",
                rss_s["median"] < 80,
            )
        )
        add(f"idle CPU ({fp['idle_seconds']:g} s)", fp["idle_cpu_pct"], "%", "< 1 %",
            fp["idle_cpu_pct"]["median"] < 1.0)  # fmt: skip
        add("idle CPU after load", fp["idle_cpu_after_load_pct"], "%")
    s1 = results.get("start_1m")
    if isinstance(s1, dict) and "start_with_snapshot_s" in s1:
        size = f"{s1['events']:,}-event log"
        add(f"start, {size}, no snapshot", s1["start_without_snapshot_s"], "s")
        add(f"start, {size}, snapshot", s1["start_with_snapshot_s"], "s", "< 1 s",
            s1["start_with_snapshot_s"]["median"] < 1.0)  # fmt: skip
        add(f"replay, {size}, from position 1", s1["replay_full_events_per_s"], "events/s")
        add(f"replay, {size}, snapshot", s1["replay_with_snapshot_s"], "s")
        add(f"replay, snapshot {s1['snapshot_every'] - 1:,} events behind",
            s1["replay_with_full_tail_s"], "s")  # fmt: skip
        add("close after a start without snapshot", s1["close_after_first_start_s"], "s")
    w = results.get("whatif_1m")
    if isinstance(w, dict) and "large" in w:
        for run in (w["small"], w["large"]):
            size = f"{run['events']:,}-event log"
            add(f"whatif, {size}", summary([run["seconds"]]), "s")
            add(f"whatif peak RSS, {size}", summary([run["peak_kib"] / 1024]), "MB")
    pr = results.get("products_1m")
    if isinstance(pr, dict) and "large" in pr:
        for run in (pr["small"], pr["large"]):
            size = f"{run['events']:,}-event log"
            for product in PRODUCTS:
                add(f"{product}, {size}", summary([run[product]["seconds"]]), "s")
                add(f"{product} peak RSS, {size}",
                    summary([run[product]["peak_kib"] / 1024]), "MB")  # fmt: skip
    pg = results.get("postgres")
    if isinstance(pg, dict) and "pg_p50_ms" in pg:
        for size in (20, 200):
            add(f"PostgreSQL, 4 writer processes, {size}/batch",
                pg[f"writers_4_batch_{size}_events_per_s"], "events/s")  # fmt: skip
        add("complete p50, log in PostgreSQL", pg["pg_p50_ms"], "ms")
        add("complete p50, log in SQLite", pg["sqlite_p50_ms"], "ms")
        add("PostgreSQL minus SQLite, p50", pg["pg_minus_sqlite_ms"], "ms", "<= 0.1 ms",
            pg["pg_minus_sqlite_ms"]["median"] <= 0.1)  # fmt: skip
    sh = results.get("shared")
    if isinstance(sh, dict) and "steer_ms" in sh:
        add("3 daemons, one SQLite log: failure steers others", sh["steer_ms"], "ms", "< 1000 ms",
            sh["steer_ms"]["median"] < 1000)  # fmt: skip
        add("3 daemons: figures agree after a burst", sh["agree_ms"], "ms")
        shp = sh.get("postgres")
        if isinstance(shp, dict):
            add("4 daemons, one PostgreSQL log: failure steers others", shp["steer_ms"], "ms",
                "< 1000 ms", shp["steer_ms"]["median"] < 1000)  # fmt: skip
            add("4 daemons, PostgreSQL: figures agree after a burst", shp["agree_ms"], "ms")
    return rows


def print_table(rows: list[Row]) -> None:
    """Print the table of figures."""
    header = ("figure", "value", "spread (min .. max)", "target", "")
    lines = [
        (
            r.figure,
            _fmt(r.value, r.unit).strip() if r.unit else f"{r.value:,.0f}",
            r.spread if r.unit else r.spread.replace(" ", ""),
            r.target,
            "" if r.passed is None else ("pass" if r.passed else "FAIL"),
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(5)]
    for line in [header, tuple("-" * w for w in widths), *lines]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def machine() -> dict[str, Any]:
    """Describe the machine and the software versions."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    from importlib.metadata import version

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "versions": {p: version(p) for p in ("routeledger", "httpx", "pykka", "msgspec")},
        "commit": commit,
        "loadavg_at_start": os.getloadavg(),
        "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }


def run_soak(seconds: float) -> dict[str, Any]:
    """Run scripts/soak.py in its own process; return its status and report."""
    print(f"[bench] soak for {seconds:g} s ...", file=sys.stderr, flush=True)
    soak = Path(__file__).with_name("soak.py")
    proc = subprocess.run(
        [sys.executable, str(soak), "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    print(proc.stdout, file=sys.stderr, flush=True)
    return {"seconds": seconds, "status": proc.returncode, "report": proc.stdout.splitlines()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == PG_WRITER_FLAG:
        pg_writer_child(argv[1], int(argv[2]), int(argv[3]))
        return 0
    if argv and argv[0] == RSS_CHILD_FLAG:
        url, requests, windows, window_s, log = argv[1:6]
        child_rss(url, int(requests), int(windows), float(window_s), log)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced run (under a minute)")
    parser.add_argument(
        "--tiny", action="store_true", help="smoke-test sized, overrides --quick (seconds)"
    )
    parser.add_argument("--json-out", default="bench-results.json", help="where to write JSON")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections to run (overhead, overhead_5ms, throughput, streaming, "
        "failover, event_log, footprint, start_1m, whatif_1m, products_1m, postgres, shared); "
        "default all but whatif_1m, products_1m and postgres",
    )
    parser.add_argument(
        "--postgres",
        default="",
        metavar="URL",
        help="also run the postgres section against this server (a schema of its own per run)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also run scripts/soak.py for this long (real time, over loopback) and report "
        "whether memory, threads or file descriptors grew",
    )
    args = parser.parse_args(argv)
    scale = TINY if args.tiny else QUICK if args.quick else FULL
    sections = [s for s in args.only.split(",") if s] or [
        "overhead",
        "overhead_5ms",
        "throughput",
        "streaming",
        "failover",
        "event_log",
        "footprint",
        "start_1m",
        "shared",
    ]
    if args.postgres and "postgres" not in sections:
        sections.append("postgres")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="routeledger-bench-"))
    fakes = FakeProviders(work)
    results: dict[str, Any] = {
        "meta": {
            "command": " ".join([sys.executable, *sys.argv]),
            "scale": dataclasses.asdict(scale),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
        }
    }
    failed: list[str] = []
    wall0 = time.perf_counter()
    try:
        url = fakes.start("healthy")
        bad_url = fakes.start("failing", "--status", "503")
        slow_url = fakes.start("slow5", "--latency-ms", "5")
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "overhead": lambda: bench_overhead(scale, url, work),
            # Each pair takes over 10 ms here: fewer pairs keep the section's time in line.
            "overhead_5ms": lambda: bench_overhead(
                scale, slow_url, work, pairs=max(10, scale.overhead_pairs // 4)
            ),
            "throughput": lambda: bench_throughput(scale, url, work),
            "streaming": lambda: bench_streaming(scale, url, work),
            "failover": lambda: bench_failover(scale, url, bad_url, work),
            "event_log": lambda: bench_event_log(scale, url, bad_url, work),
            "footprint": lambda: bench_footprint(scale, url, work),
            "start_1m": lambda: bench_start_1m(scale, url, bad_url, work),
            "whatif_1m": lambda: bench_whatif_1m(scale, url, bad_url, work),
            "products_1m": lambda: bench_products_1m(scale, work),
            "postgres": lambda: bench_postgres(scale, url, args.postgres, work),
            "shared": lambda: bench_shared(scale, url, bad_url, work, args.postgres or None),
        }
        for name in sections:
            t0 = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            try:
                results[name] = runners[name]()
            except Exception as exc:
                failed.append(name)
                results[name] = {"error": repr(exc), "traceback": traceback.format_exc()}
                print(f"[bench] {name} FAILED: {exc!r}", file=sys.stderr, flush=True)
            print(
                f"[bench] {name} done in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        if args.soak > 0:
            results["soak"] = run_soak(args.soak)
            if results["soak"]["status"] != 0:
                failed.append("soak")
    finally:
        fakes.stop()
        pykka.ActorRegistry.stop_all(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    rows = build_rows(results, scale)
    results["meta"]["seconds"] = time.perf_counter() - wall0
    results["meta"]["loadavg_at_end"] = os.getloadavg()
    results["table"] = [dataclasses.asdict(r) for r in rows]
    results["failed_sections"] = failed
    results["targets_missed"] = [r.figure for r in rows if r.passed is False]
    print_table(rows)
    Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json_out} ({results['meta']['seconds']:.0f} s, scale {scale.name})")
    if failed:
        print(f"sections that failed to run: {', '.join(failed)}", file=sys.stderr)
        return 2
    if args.strict and results["targets_missed"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
