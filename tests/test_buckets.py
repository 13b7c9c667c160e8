"""Requests and tokens per minute: the buckets, the headers that correct them, and routing under
them in the simulation (skip, wait within the deadline, the usage strategy)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from routeledger._startup import config_summary
from routeledger.actors._buckets import (
    HeaderReader,
    RateLimits,
    RateReport,
    TokenBucket,
    parse_rate_headers,
)
from routeledger.events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    ConfigError,
    Message,
    ModelSpec,
    ProviderConfig,
    Request,
)
from routeledger.events import RuntimeConfig as Config
from routeledger.sim import SimBehaviour, Simulation, scenario_from_dict

MODEL = "m"


def test_a_bucket_refills_continuously_at_its_limit_per_minute() -> None:
    """A bucket of 60 a minute that is empty has one unit again after one second."""
    bucket = TokenBucket(60, now=0.0)
    for _ in range(60):
        bucket.take(1, 0.0)
    assert bucket.available(0.0) == pytest.approx(0.0)
    assert bucket.wait_for(1, 0.0) == pytest.approx(1.0)
    assert bucket.available(0.5) == pytest.approx(0.5)
    assert bucket.wait_for(1, 1.0) == 0.0
    assert bucket.available(1000.0) == 60.0  # never over its capacity


def test_a_request_larger_than_the_bucket_waits_for_a_full_bucket_only() -> None:
    """An amount over the capacity is clamped: it may go once the bucket is full."""
    bucket = TokenBucket(100, now=0.0)
    assert bucket.wait_for(500, 0.0) == 0.0
    bucket.take(500, 0.0)
    assert bucket.available(0.0) == pytest.approx(0.0)
    assert bucket.wait_for(500, 0.0) == pytest.approx(60.0)


def test_openai_rate_limit_headers_are_read() -> None:
    """OpenAI's x-ratelimit-remaining-requests and -tokens are parsed as what is left."""
    headers = {"x-ratelimit-remaining-requests": "59", "x-ratelimit-remaining-tokens": "149000"}
    assert parse_rate_headers(headers) == RateReport(59, 149000)


def test_anthropic_rate_limit_headers_keep_the_smaller_token_figure() -> None:
    """Anthropic's requests, tokens and input-tokens remaining: the tighter token count wins."""
    headers = {
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-tokens-remaining": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "30000",
    }
    assert parse_rate_headers(headers) == RateReport(49, 30000)


def test_missing_or_malformed_rate_limit_headers_are_ignored() -> None:
    """No rate-limit header, or one that is not a whole number, says nothing."""
    assert parse_rate_headers({"content-type": "application/json"}) is None
    assert parse_rate_headers({"x-ratelimit-remaining-requests": "lots"}) is None
    assert parse_rate_headers(httpx.Headers({"X-RateLimit-Remaining-Tokens": "7"})) == (None, 7)


def _provider(name: str, **fields: Any) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        kind="openai",
        base_url="http://127.0.0.1:1/v1",
        models=[ModelSpec(name=MODEL, **fields.pop("model", {}))],
        **fields,
    )


def test_headers_lower_a_bucket_to_what_the_provider_says_is_left() -> None:
    """A provider saying 2 requests are left caps the bucket at 2, however full it was."""
    limits = RateLimits([_provider("a", rpm=100)], now=0.0)
    spec = ModelSpec(name=MODEL)
    HeaderReader(limits, "a", lambda: 0.0)({"x-ratelimit-remaining-requests": "2"})
    assert limits.headroom("a", spec, 10, 0.0).wait_s == 0.0
    limits.take("a", spec, 10, 0.0)
    limits.take("a", spec, 10, 0.0)
    room = limits.headroom("a", spec, 10, 0.0)
    assert room.wait_s == pytest.approx(0.6)  # 100 a minute: one more in 0.6 s
    assert "rpm 100 reached" in room.reason


def test_a_model_limit_applies_next_to_its_providers() -> None:
    """A model's own tpm is checked on top of the provider's rpm."""
    limits = RateLimits([_provider("a", rpm=1000, model={"tpm": 600})], now=0.0)
    spec = ModelSpec(name=MODEL, tpm=600)
    limits.take("a", spec, 600, 0.0)
    room = limits.headroom("a", spec, 10, 0.0)
    assert room.wait_s == pytest.approx(1.0)
    assert room.reason.startswith("model m: tpm 600 reached")


def test_an_estimate_too_high_is_given_back_when_the_usage_is_known() -> None:
    """Settling an attempt that used fewer tokens than estimated refunds the difference."""
    limits = RateLimits([_provider("a", tpm=1000)], now=0.0)
    spec = ModelSpec(name=MODEL)
    limits.take("a", spec, 1000, 0.0)
    limits.settle("a", spec, estimated=1000, used=400, now=0.0)
    assert limits.headroom("a", spec, 600, 0.0).wait_s == 0.0


def test_other_runtimes_attempts_are_charged_then_settled_to_their_usage() -> None:
    """A peer's attempt.started takes a request and its tokens; its success gives back the
    estimate's excess; one that does not say its tokens is charged the fallback estimate."""
    limits = RateLimits([_provider("a", rpm=3, tpm=1000)], now=0.0)
    spec = ModelSpec(name=MODEL)

    def started(rid: str, tokens: int) -> AttemptStarted:
        return AttemptStarted(
            ts=0.0, request_id=rid, attempt=1, provider="a", model=MODEL, tokens=tokens
        )

    limits.charge_peers([started("r1", 600)], 0.0, lambda p, m: 300)
    assert limits.headroom("a", spec, 500, 0.0).wait_s > 0  # 400 tokens left
    done = AttemptSucceeded(
        ts=0.0, request_id="r1", attempt=1, provider="a", model=MODEL, latency_ms=1.0,
        input_tokens=50, output_tokens=50,
    )  # fmt: skip
    limits.charge_peers([done], 0.0, lambda p, m: 300)
    assert limits.headroom("a", spec, 900, 0.0).wait_s == 0.0  # 500 given back
    limits.charge_peers([started("r2", 0)], 0.0, lambda p, m: 300)  # an older runtime's
    assert limits.headroom("a", spec, 601, 0.0).wait_s > 0  # 900 - 300 = 600 left
    failed = AttemptFailed(
        ts=0.0, request_id="r2", attempt=1, provider="a", model=MODEL, error="Timeout"
    )
    limits.charge_peers([failed], 0.0, lambda p, m: 300)  # a failure keeps its charge
    assert limits.headroom("a", spec, 600, 0.0).wait_s == 0.0
    room = limits.headroom("a", spec, 1, 0.0)  # two requests taken of three
    limits.take("a", spec, 1, 0.0)
    assert room.wait_s == 0.0 and limits.headroom("a", spec, 1, 0.0).wait_s > 0


def test_attempts_of_providers_without_limits_are_not_charged() -> None:
    """A peer's attempt on a provider with no rpm/tpm changes nothing (and is not kept)."""
    limits = RateLimits([_provider("a", rpm=1), _provider("b")], now=0.0)
    event = AttemptStarted(ts=0.0, request_id="r", attempt=1, provider="b", model=MODEL)
    limits.charge_peers([event], 0.0, lambda p, m: 1)
    assert limits.headroom("a", ModelSpec(name=MODEL), 1, 0.0).wait_s == 0.0
    assert not limits._peer_attempts


def test_resumed_attempts_leave_the_buckets_where_the_last_minute_left_them() -> None:
    """Attempts recorded in the last minute before a start are charged, older ones are not."""
    limits = RateLimits([_provider("a", rpm=60)], now=100.0)
    spec = ModelSpec(name=MODEL)
    limits.resume([("a", MODEL, 1, 20.0)] + [("a", MODEL, 1, 99.5)] * 60, now=100.0)
    # Full at 40 (a minute before the start); 60 taken at 99.5; half a request back by 100.
    assert limits.headroom("a", spec, 1, 100.0).wait_s == pytest.approx(0.5)


def test_rpm_and_tpm_must_be_positive_integers() -> None:
    """Zero, negative or fractional limits are configuration errors naming the field."""
    with pytest.raises(ConfigError) as err:
        Config.from_dict(
            {
                "providers": [
                    {
                        "name": "a",
                        "kind": "openai",
                        "base_url": "http://127.0.0.1:1/v1",
                        "rpm": 0,
                        "tpm": -5,
                        "models": [{"name": MODEL, "rpm": 0}],
                    }
                ]
            }
        )
    text = "\n".join(err.value.problems)
    assert "providers[0] ('a').rpm must be >= 1" in text
    assert "providers[0] ('a').tpm must be >= 1" in text
    assert "models[0] ('m').rpm must be >= 1" in text


# -- routing under limits, in the simulation (virtual time) -----------------------------------


def _scenario(*providers: dict[str, Any], **top: Any) -> Any:
    return scenario_from_dict({"providers": list(providers), **top})


def _sim_provider(name: str, **fields: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"name": name, "models": [{"name": MODEL}], "max_concurrency": 50}
    table.update(fields)
    return table


def _request(i: int, **fields: Any) -> Request:
    return Request(
        model=MODEL, messages=[Message(role="user", content="x" * 40)], request_id=f"r{i}", **fields
    )


def test_a_provider_without_headroom_is_skipped_with_its_reason() -> None:
    """Past its rpm, the preferred provider is skipped and route.decided says why."""
    s = _scenario(
        _sim_provider("capped", priority=10, rpm=3),
        _sim_provider("spare"),
        simulation={"requests": 0},
    )
    sim = Simulation(s, seed=1)
    for i in range(5):
        sim.submit(_request(i, max_tokens=8))
    sim.run()
    decided = [e for _, e in sim.store.read() if type(e).__name__ == "RouteDecided"]
    assert [e.chosen for e in decided] == ["capped"] * 3 + ["spare"] * 2
    assert decided[3].excluded["capped"].startswith("rate limit: rpm 3 reached")


def test_with_no_headroom_anywhere_a_request_waits_and_is_served_in_its_deadline() -> None:
    """The only provider at its rpm: the request waits for headroom, then is served."""
    s = _scenario(_sim_provider("only", rpm=60), simulation={"requests": 0})
    s.behaviours["only"] = SimBehaviour(latency_ms=10, latency_sigma=0)
    sim = Simulation(s, seed=1)
    for i in range(62):
        sim.submit(_request(i, max_tokens=8, deadline=30.0))
    result = sim.run()
    assert result.completed == 62
    started = [e.ts for _, e in sim.store.read() if type(e).__name__ == "AttemptStarted"]
    # 60 at once (a full bucket), then one a second.
    assert started[-1] - started[0] == pytest.approx(2.0, abs=0.05)


def test_a_wait_for_headroom_past_the_deadline_fails_at_once() -> None:
    """When headroom comes only after the deadline, the request is refused without waiting."""
    s = _scenario(_sim_provider("only", rpm=1), simulation={"requests": 0})
    sim = Simulation(s, seed=1)
    sim.submit(_request(0, max_tokens=8, deadline=5.0))
    sim.submit(_request(1, max_tokens=8, deadline=5.0))
    result = sim.run()
    assert (result.completed, result.errors) == (1, {"AllProvidersSaturated": 1})
    assert result.duration_s < 1.0


def test_the_usage_strategy_prefers_the_provider_with_most_headroom() -> None:
    """Under ``usage``, requests go where the most of the rate limit is left."""
    s = _scenario(
        _sim_provider("small", rpm=10),
        _sim_provider("large", rpm=100),
        strategy="usage",
        simulation={"requests": 0},
    )
    sim = Simulation(s, seed=1)
    for i in range(20):
        sim.submit(_request(i, max_tokens=8))
    sim.run()
    chosen = [e.chosen for _, e in sim.store.read() if type(e).__name__ == "RouteDecided"]
    assert chosen[:5] == ["large"] * 5
    assert chosen.count("small") < chosen.count("large")
    assert "usage:" in next(
        e.reason for _, e in sim.store.read() if type(e).__name__ == "RouteDecided"
    )


@pytest.mark.parametrize("router_rpm", [None, 120])
def test_traffic_over_one_providers_rpm_draws_no_429_when_the_router_knows_the_limit(
    router_rpm: int | None,
) -> None:
    """A provider enforcing rpm 120: with the limit configured, bursts never draw a 429."""
    s = _scenario(
        _sim_provider("a", rpm=router_rpm),
        _sim_provider("b"),
        simulation={"requests": 800, "rate_per_s": 8.0, "max_tokens": 16},
        failover={"max_attempts": 3},
        health={"enabled": False},
    )
    # Round-robin sends "a" four a second, against two a second it allows.
    s.behaviours["a"] = SimBehaviour(latency_ms=50, rpm=120, retry_after_s=0.5)
    sim = Simulation(s, seed=3)
    result = sim.run()
    assert result.failed == 0
    if router_rpm is None:
        assert sim.over_limit > 0
    else:
        assert sim.over_limit == 0


def test_unused_new_fields_leave_the_configuration_digest_as_it_was() -> None:
    """Without rpm, tpm or key lists, the recorded summary (and digest) has none of them."""
    plain = Config(providers=[_provider("a")])
    [p] = config_summary(plain)["providers"]
    assert not {"rpm", "tpm", "api_keys", "api_key_envs"} & set(p)
    assert not {"rpm", "tpm"} & set(p["models"][0])
    keyed = Config(providers=[_provider("a", rpm=5, api_keys=["sk-secret-key-1"])])
    [q] = config_summary(keyed)["providers"]
    assert q["rpm"] == 5 and "api_keys" not in q
    assert "sk-secret-key-1" not in repr(config_summary(keyed))
