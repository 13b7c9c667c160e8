"""``routeledger demo``: a real runtime routing real HTTP requests to loopback fake providers.

Four fake providers with distinct behaviours (fast, slow, flaky, rate-limited) serve a few
hundred requests under two strategies and an A/B test; then the figures are replayed from
the event log the runtime wrote and printed, and an HTML report is written next to the log.
"""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routeledger import Runtime, RuntimeConfig

__all__ = ["register"]

MODEL = "demo-model"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command."""
    p = subparsers.add_parser(
        "demo",
        help="route a workload through a real runtime to loopback fake providers",
        description=(
            "Start four loopback fake providers (fast, slow, flaky, rate-limited), route a "
            "workload through a real Runtime under two strategies and an A/B test, then print "
            "the metrics and A/B results replayed from the event log."
        ),
    )
    p.add_argument("--requests", type=int, default=300, help="requests in all (default 300)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent callers (default 8)")
    p.add_argument(
        "--db",
        default="routeledger-demo.sqlite",
        help="event log file (replaced if it exists), or an empty postgresql:// log",
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the fakes and the router")
    p.set_defaults(func=run)


def _config(urls: dict[str, str], strategy: str) -> RuntimeConfig:
    from routeledger import (
        FailoverConfig,
        HealthConfig,
        ModelSpec,
        ProviderConfig,
        RuntimeConfig,
    )

    def model(inp: float, out: float) -> list[ModelSpec]:
        return [
            ModelSpec(
                name=MODEL,
                input_per_mtok=inp,
                output_per_mtok=out,
                capabilities=frozenset({"streaming", "tools"}),
            )
        ]

    return RuntimeConfig(
        providers=[
            ProviderConfig(
                name="fast", kind="openai", base_url=urls["fast"], models=model(0.5, 1.5),
                priority=10, max_concurrency=4,
            ),
            ProviderConfig(
                name="slow", kind="anthropic", base_url=urls["slow"], models=model(0.25, 1.25),
                priority=10, max_concurrency=8,
            ),
            ProviderConfig(
                name="flaky", kind="openai", base_url=urls["flaky"], models=model(0.1, 0.4),
                priority=10, max_concurrency=8,
            ),
            ProviderConfig(
                name="limited", kind="openai", base_url=urls["limited"], models=model(0.3, 0.9),
                priority=5, max_concurrency=8,
            ),
        ],
        strategy=strategy,
        failover=FailoverConfig(max_attempts=3, backoff_base_s=0.01),
        health=HealthConfig(
            interval_s=5.0, cooldown_s=1.0, failure_threshold=4, window_size=20, min_calls=10
        ),
    )  # fmt: skip


def _workload(
    rt: Runtime,
    label: str,
    count: int,
    concurrency: int,
    tally: dict[str, int],
    **routing: Any,
) -> None:
    from routeledger import Message, Request, RouteledgerError

    done = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal done
        request = Request(
            model=MODEL,
            messages=[Message(role="user", content=f"{label} request {i}: say something")],
            max_tokens=32,
        )
        try:
            rt.complete(request, **routing)
            outcome = "ok"
        except RouteledgerError as exc:
            outcome = type(exc).__name__
        with lock:
            tally[outcome] = tally.get(outcome, 0) + 1
            done += 1
            if done % 25 == 0 or done == count:
                sys.stderr.write(f"\r  {label}: {done}/{count} requests")
                sys.stderr.flush()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(count)))
    sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from routeledger import ABTestConfig, Runtime, replay
    from routeledger._cmd_replay import figure_lines
    from routeledger.events import StoreError, escape_controls
    from routeledger.store import is_postgres_url, open_store, shown_target
    from routeledger.testing import Behaviour, FakeProvider

    db: str | Path = Path(args.db)
    if is_postgres_url(args.db):
        # A shared database is never emptied by a demo: it must hold no log yet.
        db = args.db
        with open_store(db) as store:
            if store.last_position():
                raise StoreError(f"{shown_target(db)} holds a log already", path=shown_target(db))
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    n = max(4, args.requests)
    behaviours = {
        "fast": Behaviour(latency_ms=5, jitter_ms=5),
        "slow": Behaviour(latency_ms=60, jitter_ms=20),
        "flaky": Behaviour(latency_ms=10, jitter_ms=5, fail_rate=0.6, fail_status=503),
        "limited": Behaviour(latency_ms=8, fail_rate=0.5, fail_status=429, retry_after="1"),
    }
    described = {
        "fast": "OpenAI format, 5-10 ms",
        "slow": "Anthropic format, 60-80 ms",
        "flaky": "OpenAI format, 10-15 ms, 60% answer 503",
        "limited": "OpenAI format, lower priority, 50% answer 429 Retry-After: 1",
    }
    fakes = {
        name: FakeProvider(b, seed=args.seed + i) for i, (name, b) in enumerate(behaviours.items())
    }
    print("routeledger demo: four fake providers on 127.0.0.1")
    try:
        for name, fake in fakes.items():
            fake.start()
            print(f"  {name:8} {fake.url}  {described[name]}")
        urls = {name: fake.url + "/v1" for name, fake in fakes.items()}
        tally: dict[str, int] = {}

        examples: list[str] = []

        def announce(event: Any) -> None:
            reason = escape_controls(event.reason)  # may quote a provider's error message
            sys.stderr.write(f"\n  ! {type(event).__name__}: {event.provider}: {reason}\n")

        def remember(event: Any) -> None:
            examples.append(event.request_id)

        phases = [("round-robin", n // 3), ("latency", n // 3)]
        for i, (strategy, count) in enumerate(phases):
            print(f"\nphase {i + 1}: strategy {strategy}, {count} requests")
            with Runtime.start(_config(urls, strategy), event_log=db, seed=args.seed) as rt:
                for name in ("provider_unhealthy", "provider_recovered", "provider_failed"):
                    rt.on(name, announce)
                rt.on("fallback_success", remember)
                _workload(rt, strategy, count, args.concurrency, tally)
                if i == len(phases) - 1:
                    ab_count = n - sum(c for _, c in phases)
                    print(f"\nphase 3: A/B test fast (A, 70%) vs slow (B), {ab_count} requests")
                    rt.setup_ab_test(
                        ABTestConfig(
                            name="fast-vs-slow", variant_a="fast", variant_b="slow", split_ratio=0.7
                        )
                    )
                    _workload(rt, "a/b", ab_count, args.concurrency, tally, ab_test="fast-vs-slow")
    finally:
        for fake in fakes.values():
            fake.stop()

    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
    print(f"\noutcomes seen by the callers: {outcomes}")
    projections = replay(db)
    where = db.resolve() if isinstance(db, Path) else shown_target(db)
    print(f"\nreplayed from {where} ({projections.events} events):")
    print("\n".join(figure_lines(projections, ("metrics", "usage", "ab"), "all")))
    example = examples[0] if examples else "REQUEST_ID"
    shown = shown_target(db)
    print(f"\naudit a request that failed over: routeledger audit --db {shown} {example}")
    print(f"replay it again:   routeledger replay --db {shown} all")
    from routeledger._cmd_report import write_report

    html = db.with_suffix(".html") if isinstance(db, Path) else Path("routeledger-demo.html")
    report = write_report(db, html, progress=False)
    print(f"report (charts, open in a browser): {report.resolve()}")
    return 0
