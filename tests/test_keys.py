"""Several API keys per provider: configuration, rotation, a refused or rate-limited key moving
to the next key before the next provider, fingerprints in events, and redaction of every key."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from routeledger import ConfigError, FailoverConfig, RouteledgerError, Runtime
from routeledger.actors._keys import KeyRing, fingerprint
from routeledger.actors.wire import make_adapter
from routeledger.events import (
    Message,
    ModelSpec,
    ProviderConfig,
    ProviderError,
    RateLimited,
    Request,
    Secret,
)
from routeledger.events import RuntimeConfig as Config
from routeledger.testing import Behaviour, FakeProvider

Fakes = Callable[..., list[FakeProvider]]
K1, K2, K3 = "sk-key-one-5d1e0c", "sk-key-two-8a7b21", "sk-key-three-4f9e"


def test_a_key_is_named_by_the_first_8_hex_digits_of_its_sha256() -> None:
    """The fingerprint is sha256(key)[:8], and says nothing more of the key."""
    assert fingerprint(Secret(K1)) == hashlib.sha256(K1.encode()).hexdigest()[:8]
    assert K1 not in fingerprint(Secret(K1))


def test_the_ring_rotates_over_the_keys_that_are_not_resting() -> None:
    """Keys are taken in turn; a rate-limited one is skipped until its Retry-After is over."""
    ring = KeyRing(["a", "b", "c"])
    assert [ring.pick(0.0) for _ in range(4)] == [0, 1, 2, 0]
    ring.failed(1, RateLimited("slow down", status=429, retry_after_s=2.0), now=0.0)
    assert ring.usable(0.0) == 2
    assert [ring.pick(1.0) for _ in range(3)] == [2, 0, 2]
    assert ring.pick(2.0) == 0 and ring.pick(2.0) == 1  # rested


def test_api_keys_are_held_as_secrets_and_resolved_in_order() -> None:
    """api_key first, then api_keys, then api_key_envs; repeats once; reprs never show a key."""
    p = ProviderConfig(
        name="p",
        kind="openai",
        base_url="https://api.example.com/v1",
        models=[],
        api_key=K1,
        api_keys=[K2, K1],
        api_key_envs=["THIRD_KEY", "UNSET_KEY"],
    )
    keys = p.resolve_api_keys({"THIRD_KEY": K3})
    assert [k.reveal() for k in keys] == [K1, K2, K3]
    assert K2 not in repr(p) and K1 not in repr(p)


def test_bad_key_lists_are_configuration_errors_that_never_echo_a_key() -> None:
    """An empty list, an empty key or a key pasted as a variable name is refused, unshown."""
    with pytest.raises(ConfigError) as err:
        Config.from_dict(
            {
                "providers": [
                    {
                        "name": "p",
                        "kind": "openai",
                        "base_url": "https://api.example.com/v1",
                        "models": [{"name": "m"}],
                        "api_keys": ["", K1],
                        "api_key_envs": ["sk-proj/abc+def", "MISSING_KEY_VAR"],
                    }
                ]
            }
        )
    text = "\n".join(err.value.problems)
    assert "api_keys[0] must be a non-empty string" in text
    assert "api_key_envs[0] is not an environment variable name" in text
    assert "MISSING_KEY_VAR (api_key_envs[1]) is not set" in text
    assert "sk-proj/abc+def" not in text and K1 not in text


def _config(config_for: Any, fakes: dict[str, FakeProvider], **per: Any) -> Any:
    return config_for(fakes, per_provider=per, failover=FailoverConfig(max_attempts=3))


def test_requests_rotate_across_the_keys(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """Successive requests use each key in turn; attempt.started names it by fingerprint."""
    (fake,) = fakes(1)
    cfg = _config(config_for, {"p": fake}, p={"api_keys": [K1, K2, K3]})
    sent = []
    with Runtime.start(cfg, event_log=db) as rt:
        for _ in range(4):
            rt.complete(req())
            sent.append(fake.stats.last_request_headers["authorization"][7:])
        rt.flush()
    assert sent == [K1, K2, K3, K1]
    started = [e.key for e in events(db, "attempt.started")]
    assert started == [fingerprint(Secret(k)) for k in sent]


@pytest.mark.parametrize("status", [401, 429])
def test_a_refused_or_rate_limited_key_moves_to_the_next_key_before_the_next_provider(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any, status: int
) -> None:
    """A 401 or 429 on one key retries the same provider with its next key, not the other."""
    (keyed,) = fakes(1, Behaviour(latency_ms=1, key_statuses={K1: status}))
    (other,) = fakes(1)
    cfg = _config(
        config_for,
        {"keyed": keyed, "other": other},
        keyed={"api_keys": [K1, K2], "priority": 10},
    )
    with Runtime.start(cfg, event_log=db) as rt:
        first = rt.complete(req())
        later = [rt.complete(req()).provider for _ in range(3)]
        rt.flush()
    assert first.provider == "keyed" and first.attempts == 2
    assert other.stats.requests == 0
    [failed] = events(db, "attempt.failed")
    assert failed.status == status
    decided = events(db, "route.decided", request_id=first.request_id)
    assert decided[1].reason.startswith("next API key of 'keyed'")
    # The refused key rests: later requests use the good key only, without failing first.
    assert later == ["keyed"] * 3
    assert len(events(db, "attempt.failed")) == 1


def test_with_every_key_resting_the_provider_is_skipped_with_the_reason(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """Both keys refused: the provider is skipped (route.decided says so), the other serves."""
    (keyed,) = fakes(1, Behaviour(latency_ms=1, key_statuses={K1: 401, K2: 401}))
    (other,) = fakes(1)
    cfg = _config(
        config_for,
        {"keyed": keyed, "other": other},
        keyed={"api_keys": [K1, K2], "priority": 10},
    )
    with Runtime.start(cfg, event_log=db) as rt:
        first = rt.complete(req())
        second = rt.complete(req())
        rt.flush()
    assert (first.provider, first.attempts) == ("other", 3)
    assert second.provider == "other" and second.attempts == 1
    [decided] = events(db, "route.decided", request_id=second.request_id)
    assert decided.excluded["keyed"].startswith("every API key is resting")


def test_a_provider_echoing_another_key_has_it_redacted() -> None:
    """An error text holding one of the provider's other keys is redacted like the key used."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": f"key {K2} is revoked", "type": "invalid_request_error"}}
        return httpx.Response(401, json=body)

    config = ProviderConfig(
        name="p", kind="openai", base_url="https://provider.test/v1", models=[ModelSpec(name="m")]
    )
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        adapter = make_adapter(config, client=client, api_key=Secret(K1))
        adapter.also_redact = (Secret(K2),)
        request = Request(model="m", messages=[Message(role="user", content="hi")])
        with pytest.raises(ProviderError) as err:
            adapter.complete(request, ModelSpec(name="m"))
    assert "revoked" in str(err.value)
    assert K2 not in str(err.value) and K2 not in repr(err.value)


def test_no_key_reaches_the_log_or_an_error(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """With every key refused, neither the log nor the error holds any of the keys."""
    (keyed,) = fakes(1, Behaviour(latency_ms=1, key_statuses={K1: 401, K2: 401}))
    cfg = _config(config_for, {"keyed": keyed}, keyed={"api_keys": [K1, K2]})
    with Runtime.start(cfg, event_log=db) as rt:
        with pytest.raises(RouteledgerError) as err:
            rt.complete(req())
        rt.flush()
    text = db.read_bytes().decode("latin-1") + repr(err.value) + str(err.value)
    assert K1 not in text and K2 not in text


def test_keys_and_limits_load_from_toml(tmp_path: Path) -> None:
    """api_keys, api_key_envs, rpm and tpm (also per model) are read from a TOML file."""
    path = tmp_path / "routeledger.toml"
    path.write_text(
        """
[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_keys = ["sk-toml-key-1", "sk-toml-key-2"]
rpm = 500
tpm = 200000
models = [{ name = "gpt-4o-mini", tpm = 150000 }]
""",
        encoding="utf-8",
    )
    [p] = Config.from_toml(path).providers
    assert (p.rpm, p.tpm, p.models[0].tpm) == (500, 200000, 150000)
    assert [k.reveal() for k in p.resolve_api_keys({})] == ["sk-toml-key-1", "sk-toml-key-2"]
    assert "sk-toml-key-1" not in repr(p)


def test_a_revoked_first_key_does_not_fail_the_providers_health_probe(
    fakes: Fakes, config_for: Any, db: Path
) -> None:
    """The free probe tries the provider's other keys after a 401: one working key is enough."""
    (keyed,) = fakes(1, Behaviour(latency_ms=1, key_statuses={K1: 401}))
    (dead,) = fakes(1, Behaviour(latency_ms=1, key_statuses={K1: 401, K2: 401}))
    cfg = _config(
        config_for,
        {"keyed": keyed, "dead": dead},
        keyed={"api_keys": [K1, K2]},
        dead={"api_keys": [K1, K2]},
    )
    with Runtime.start(cfg, event_log=db) as rt:
        results = rt.health_check()
    assert results["keyed"].healthy
    assert not results["dead"].healthy
