#!/usr/bin/env python3
"""Real-time soak: a Runtime serving loopback fake providers for minutes, watching resources.

Not run in CI. It starts three :class:`~routeledger.testing.FakeProvider` servers (one
healthy, one slow, one flaky), a real :class:`~routeledger.Runtime` writing a SQLite log, and
a few client threads sending requests without pause. Every ``--every`` seconds it prints the
process's resident memory (from ``/proc/self/statm``), thread count and open file
descriptors. After the warm-up (the first third of the run) it exits with status 1 if any of
them grew beyond its tolerance, since a long-lived daemon must not leak.

Usage::

    .venv/bin/python scripts/soak.py --seconds 180
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from routeledger import (
    FailoverConfig,
    HealthConfig,
    Message,
    ModelSpec,
    ProviderConfig,
    Request,
    RouteledgerError,
    Runtime,
    RuntimeConfig,
    replay,
)
from routeledger.testing import Behaviour, FakeProvider

PAGE = os.sysconf("SC_PAGE_SIZE")


def sample() -> dict[str, int]:
    """Return the resident set size (KiB), thread count and open descriptors of this process."""
    with open("/proc/self/statm", encoding="ascii") as f:
        rss_pages = int(f.read().split()[1])
    return {
        "rss_kib": rss_pages * PAGE // 1024,
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the soak; return 0 if resources stayed flat after warm-up, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to run")
    parser.add_argument("--every", type=float, default=10.0, help="sampling period (s)")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument("--rss-tolerance-kib", type=int, default=16 * 1024)
    parser.add_argument("--fd-tolerance", type=int, default=4)
    parser.add_argument("--thread-tolerance", type=int, default=2)
    args = parser.parse_args(argv)

    fakes = [
        FakeProvider(Behaviour(latency_ms=2), seed=1),
        FakeProvider(Behaviour(latency_ms=30, jitter_ms=20), seed=2),
        FakeProvider(Behaviour(latency_ms=5, fail_rate=0.2, fail_status=503), seed=3),
    ]
    for fake in fakes:
        fake.start()
    config = RuntimeConfig(
        providers=[
            ProviderConfig(
                name=name,
                kind="openai",
                base_url=fake.url + "/v1",
                api_key="sk-soak-not-a-real-key",
                models=[ModelSpec(name="fake-model", input_per_mtok=1.0, output_per_mtok=2.0)],
                max_concurrency=4,
                timeout_s=5.0,
            )
            for name, fake in zip(("healthy", "slow", "flaky"), fakes, strict=True)
        ],
        strategy="least-loaded",
        failover=FailoverConfig(max_attempts=3),
        health=HealthConfig(interval_s=5.0, cooldown_s=2.0),
        seed=0,
    )
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "soak.sqlite"
        rt = Runtime.start(config, event_log=db)

        def client(k: int) -> None:
            i = 0
            while not stop.is_set():
                request = Request(
                    model="fake-model",
                    messages=[Message(role="user", content=f"client {k} request {i}")],
                    max_tokens=8,
                )
                try:
                    rt.complete(request)
                    key = "ok"
                except RouteledgerError:
                    key = "failed"
                with lock:
                    counts[key] += 1
                i += 1

        threads = [
            threading.Thread(target=client, args=(k,), name=f"soak-client-{k}", daemon=True)
            for k in range(args.clients)
        ]
        for t in threads:
            t.start()
        started = time.monotonic()
        samples: list[tuple[float, dict[str, int]]] = []
        print(f"{'t_s':>6} {'rss_kib':>9} {'threads':>7} {'fds':>5} {'ok':>8} {'failed':>7}")
        try:
            while True:
                elapsed = time.monotonic() - started
                s = sample()
                samples.append((elapsed, s))
                with lock:
                    ok, failed = counts["ok"], counts["failed"]
                print(
                    f"{elapsed:6.0f} {s['rss_kib']:9d} {s['threads']:7d} {s['fds']:5d} "
                    f"{ok:8d} {failed:7d}",
                    flush=True,
                )
                if elapsed >= args.seconds:
                    break
                time.sleep(min(args.every, max(0.0, args.seconds - elapsed)))
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
            rt.flush()
            live = rt.get_metrics()
            rt.close()
            for fake in fakes:
                fake.stop()
        same = replay(db).metrics.snapshot() == live

    warm = [s for t, s in samples if t >= args.seconds / 3]
    baseline, last = warm[0], warm[-1]
    tolerance = {
        "rss_kib": args.rss_tolerance_kib,
        "threads": args.thread_tolerance,
        "fds": args.fd_tolerance,
    }
    grew = {k: last[k] - baseline[k] for k in tolerance if last[k] - baseline[k] > tolerance[k]}
    total = counts["ok"] + counts["failed"]
    print(f"requests: {total} ({counts['ok']} ok, {counts['failed']} failed)")
    print(f"live metrics == replayed metrics: {same}")
    print(
        "growth after warm-up: "
        + ", ".join(f"{k} {last[k] - baseline[k]:+d} (tolerance {tolerance[k]})" for k in tolerance)
    )
    if grew or not same:
        print(f"FAIL: {'grew: ' + str(grew) if grew else 'live != replay'}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
