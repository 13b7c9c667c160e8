"""Several daemons (real processes) on one log: figures, health, budgets and rate limits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from support import wait_for

from routeledger import FailoverConfig, HealthConfig, RuntimeConfig, replay
from routeledger.events import CircuitStateChanged, DaemonHeartbeat
from routeledger.store import open_store
from routeledger.testing import Behaviour, FakeProvider

if TYPE_CHECKING:
    from shared_support import Daemon

pytest_plugins = ["shared_support"]  # the shared_log and daemons fixtures

Starter = Callable[..., "list[Daemon]"]


def log_events(log: str) -> list[Any]:
    """Return every event of the shared log."""
    store = open_store(log, readonly=True)
    try:
        return [event for _, event in store.read()]
    finally:
        store.close()


def acquainted(group: list[Daemon], timeout: float = 5.0) -> None:
    """Wait until every daemon knows every other one (their heartbeats were folded)."""
    for daemon in group:
        others = {d.id for d in group} - {daemon.id}
        wait_for(
            lambda d=daemon, o=others: set(d.ask("shared")["peers"]) >= o,  # type: ignore[misc]
            "every daemon to see the others",
            timeout,
        )


def settle_all(group: list[Daemon]) -> None:
    """Flush every daemon twice: first each one's own events, then everyone catches up."""
    for _ in range(2):
        for daemon in group:
            daemon.ask("flush")


def test_every_daemon_reports_the_figures_replayed_from_the_shared_log_after_a_burst(
    daemons: Starter, shared_log: str, config_for: Callable[..., RuntimeConfig]
) -> None:
    """After a concurrent burst from three daemons, each one's live metrics equal a replay."""
    with FakeProvider(Behaviour(latency_ms=2), seed=1) as a, FakeProvider(seed=2) as b:
        config = config_for({"a": a, "b": b}, strategy="round-robin")
        group = daemons(config, 3)
        for d in group:
            d.send("burst", n=30, threads=4)
        answers = [d.answer() for d in group]
        assert [x["ok"] for x in answers] == [30, 30, 30]
        settle_all(group)
        want = msgspec.to_builtins(replay(shared_log).metrics.snapshot())
        assert sum(m["requests"] for m in want.values()) == 90
        for d in group:
            assert d.ask("metrics") == want


def test_the_global_concurrency_budget_holds_at_the_provider_across_daemons(
    daemons: Starter, config_for: Callable[..., RuntimeConfig]
) -> None:
    """Three daemons bursting at once never have more than max_concurrency calls in flight."""
    with FakeProvider(Behaviour(latency_ms=60), seed=3) as fake:
        config = config_for({"a": fake}, per_provider={"a": {"max_concurrency": 4}})
        group = daemons(config, 3)
        acquainted(group)
        wait_for(
            lambda: sorted(d.ask("shared")["caps"]["a"] for d in group) == [1, 1, 2],
            "the leases to settle",
        )
        fake.stats.reset()
        for d in group:
            d.send("burst", n=12, threads=6)
        answers = [d.answer() for d in group]
        assert [x["ok"] for x in answers] == [12, 12, 12]
        assert fake.stats.max_concurrent <= 4
        assert fake.stats.max_concurrent >= 3  # the budget was used, not starved


def test_each_daemon_alone_with_local_budgets_overruns_the_provider(
    daemons: Starter, config_for: Callable[..., RuntimeConfig]
) -> None:
    """The control: with shared_concurrency="local" three daemons exceed the provider's limit."""
    with FakeProvider(Behaviour(latency_ms=60), seed=4) as fake:
        config = config_for(
            {"a": fake}, per_provider={"a": {"max_concurrency": 4}}, shared_concurrency="local"
        )
        group = daemons(config, 3)
        acquainted(group)
        fake.stats.reset()
        for d in group:
            d.send("burst", n=12, threads=6)
        assert [d.answer()["ok"] for d in group] == [12, 12, 12]
        assert fake.stats.max_concurrent > 4


def test_a_failure_seen_by_one_daemon_steers_the_others_within_a_second_recorded_once(
    daemons: Starter, shared_log: str, config_for: Callable[..., RuntimeConfig]
) -> None:
    """One daemon's failures open the circuit for every daemon; the log records it once."""
    with FakeProvider(Behaviour(status=500), seed=5) as bad, FakeProvider(seed=6) as good:
        config = config_for(
            {"bad": bad, "good": good},
            per_provider={"bad": {"priority": 200}, "good": {"priority": 100}},
            health=HealthConfig(failure_threshold=3, cooldown_s=30.0),
        )
        group = daemons(config, 3)
        acquainted(group)
        assert all(d.ask("route")["provider"] == "bad" for d in group)
        leader = next(d for d in group if d.ask("shared")["leader"])
        witness = next(d for d in group if d is not leader)
        others = [d for d in group if d is not witness]
        assert witness.ask("burst", n=3, preferred="bad")["ok"] == 3  # failed over to "good"
        seen = time.monotonic()
        for d in others:
            wait_for(lambda d=d: d.ask("route")["provider"] == "good", "steering", 1.0)  # type: ignore[misc]
        assert time.monotonic() - seen < 1.0
        for d in group:  # the witness too: it adopts the leader's transition from the log
            wait_for(lambda d=d: d.ask("health")["bad"] == "open", "the open circuit", 1.0)  # type: ignore[misc]
        settle_all(group)
        opened = [
            e
            for e in log_events(shared_log)
            if isinstance(e, CircuitStateChanged) and e.provider == "bad" and e.to_state == "open"
        ]
        assert len(opened) == 1


def test_a_killed_daemons_share_of_the_budget_comes_back_after_its_lease(
    daemons: Starter, config_for: Callable[..., RuntimeConfig]
) -> None:
    """A daemon killed without closing frees its share once its lease expires."""
    with FakeProvider(seed=7) as fake:
        config = config_for(
            {"a": fake}, per_provider={"a": {"max_concurrency": 6}}, lease_ttl_s=0.6
        )
        group = daemons(config, 3)
        acquainted(group)
        wait_for(lambda: all(d.ask("shared")["caps"]["a"] == 2 for d in group), "equal shares")
        group[2].kill()
        killed = time.monotonic()
        wait_for(
            lambda: all(d.ask("shared")["caps"]["a"] == 3 for d in group[:2]),
            "the dead daemon's share to return",
            3.0,
        )
        assert time.monotonic() - killed >= 0.4  # held until the lease ran out


def test_a_closed_daemon_frees_its_share_at_once(
    daemons: Starter, shared_log: str, config_for: Callable[..., RuntimeConfig]
) -> None:
    """A daemon that closes says so in its last heartbeat; the others take its share."""
    with FakeProvider(seed=8) as fake:
        config = config_for({"a": fake}, per_provider={"a": {"max_concurrency": 4}})
        group = daemons(config, 2)
        acquainted(group)
        wait_for(lambda: all(d.ask("shared")["caps"]["a"] == 2 for d in group), "equal shares")
        group[1].stop()
        wait_for(lambda: group[0].ask("shared")["caps"]["a"] == 4, "the share to return", 1.0)
        beats = [e for e in log_events(shared_log) if isinstance(e, DaemonHeartbeat)]
        assert beats[-1].stopping or any(b.stopping for b in beats)


def test_a_retry_after_seen_by_one_daemon_is_honoured_by_the_others(
    daemons: Starter, config_for: Callable[..., RuntimeConfig]
) -> None:
    """A 429 with Retry-After told to one daemon keeps every daemon off that provider."""
    limited = Behaviour(status=429, retry_after="20")
    with FakeProvider(limited, seed=9) as busy, FakeProvider(seed=10) as spare:
        config = config_for(
            {"busy": busy, "spare": spare},
            per_provider={"busy": {"priority": 200}, "spare": {"priority": 100}},
        )
        group = daemons(config, 2)
        acquainted(group)
        assert group[1].ask("route")["provider"] == "busy"
        assert group[0].ask("burst", n=1, preferred="busy")["ok"] == 1  # failed over
        wait_for(lambda: group[1].ask("route")["provider"] == "spare", "the wait", 1.0)
        assert group[1].ask("health")["busy"] == "closed"  # a wait, not a broken circuit


def test_a_follower_s_probe_through_a_half_open_circuit_closes_it_for_every_daemon(
    daemons: Starter, config_for: Callable[..., RuntimeConfig]
) -> None:
    """After the cooldown, a follower's call to the recovered provider closes its circuit."""
    with FakeProvider(Behaviour(status=500), seed=11) as flaky, FakeProvider(seed=12) as spare:
        config = config_for(
            {"flaky": flaky, "spare": spare},
            per_provider={"flaky": {"priority": 200}, "spare": {"priority": 100}},
            health=HealthConfig(failure_threshold=2, cooldown_s=0.5),
        )
        group = daemons(config, 2)
        acquainted(group)
        follower = next(d for d in group if not d.ask("shared")["leader"])
        assert follower.ask("burst", n=2)["ok"] == 2
        for d in group:
            wait_for(lambda d=d: d.ask("health")["flaky"] != "closed", "the trip", 1.0)  # type: ignore[misc]
        flaky.set_behaviour(Behaviour())
        wait_for(lambda: follower.ask("health")["flaky"] == "half_open", "the cooldown", 2.0)
        assert follower.ask("burst", n=1)["ok"] == 1  # the probe
        for d in group:
            wait_for(lambda d=d: d.ask("health")["flaky"] == "closed", "the recovery", 1.0)  # type: ignore[misc]


PROVIDER_RPM = 20
"""The fake provider's own requests per minute in the rate-limit tests, and the router's."""

RPM_BEHAVIOUR = Behaviour(rpm=PROVIDER_RPM, latency_ms=150)
"""Slow enough that a burst's requests are all sent before the first answer's rate-limit
headers could tell a daemon what the provider has left."""


def rpm_config(fake: FakeProvider, config_for: Callable[..., RuntimeConfig]) -> RuntimeConfig:
    """Return a configuration with the provider's own rpm, one attempt and a short deadline
    (a request without headroom is refused at once instead of waiting minutes)."""
    return config_for(
        {"a": fake},
        per_provider={"a": {"rpm": PROVIDER_RPM}},
        failover=FailoverConfig(max_attempts=1, default_deadline_s=1.0),
        health=HealthConfig(enabled=False),
    )


def one_after_another(group: list[Daemon], n: int) -> list[dict[str, Any]]:
    """Let each daemon in turn send ``n`` concurrent requests, every daemon folding the log
    between turns; return their answers."""
    answers = []
    for d in group:
        answers.append(d.ask("burst", n=n, threads=n))
        settle_all(group)
    return answers


def test_rpm_buckets_hold_across_daemons_the_provider_refuses_nothing(
    daemons: Starter, config_for: Callable[..., RuntimeConfig]
) -> None:
    """Three daemons, each under the provider's rpm, together over it: no 429 at the provider."""
    with FakeProvider(RPM_BEHAVIOUR, seed=13) as fake:
        group = daemons(rpm_config(fake, config_for), 3)
        acquainted(group)
        answers = one_after_another(group, 8)
        assert fake.stats.statuses[429] == 0
        assert sum(a["ok"] for a in answers) <= PROVIDER_RPM + 1  # one refill, at most
        assert answers[2]["failed"] > 0  # the third daemon knew the others spent the minute


def test_rpm_buckets_of_daemons_on_separate_logs_overrun_the_provider(
    tmp_path: Path, config_for: Callable[..., RuntimeConfig]
) -> None:
    """The control: three daemons on three logs each spend the whole rpm; the provider 429s."""
    from shared_support import start_daemons  # a plugin here: imported once pytest has it

    with FakeProvider(RPM_BEHAVIOUR, seed=14) as fake:
        config = rpm_config(fake, config_for)
        group = [start_daemons(str(tmp_path / f"{i}.sqlite"), [config])[0] for i in range(3)]
        try:
            one_after_another(group, 8)
        finally:
            for d in group:
                d.stop()
        assert fake.stats.statuses[429] > 0
