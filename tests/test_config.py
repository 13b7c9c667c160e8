"""Tests of configuration: validation reports every problem at once; TOML; secrets stay secret."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from routeledger.events import (
    ABTestConfig,
    ConfigError,
    FailoverConfig,
    HealthConfig,
    ModelSpec,
    PoolConfig,
    ProviderConfig,
    RuntimeConfig,
    Usage,
    validate_config,
)
from routeledger.events._config import Secret

CANARY = "sk-canary-7f3a9d0c1b2e4f5a6b7c8d9e"


def provider(name: str = "a", **kw: Any) -> ProviderConfig:
    kw.setdefault("kind", "openai")
    kw.setdefault("base_url", "https://api.example.com/v1")
    kw.setdefault("models", [ModelSpec(name="m")])
    return ProviderConfig(name=name, **kw)


def problems(config: RuntimeConfig, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(config, environ=environ or {})
    return info.value.problems


def test_good_config_passes() -> None:
    """A sound configuration validates without error."""
    config = RuntimeConfig(
        providers=[provider("a"), provider("b", base_url="http://127.0.0.1:8080/v1")],
        pools=[PoolConfig(name="p", providers=["a", "b"], weights={"a": 1.0, "b": 0.0})],
        ab_tests=[ABTestConfig(name="t", variant_a="a", variant_b="b")],
    )
    validate_config(config, environ={})


def test_zero_providers() -> None:
    """A configuration without providers is refused."""
    assert problems(RuntimeConfig(providers=[])) == ["at least one provider is required"]


def test_every_problem_reported_at_once() -> None:
    """Many invalid settings give one ConfigError listing each of them."""
    config = RuntimeConfig(
        providers=[
            provider("a"),
            provider("a"),
            provider("c", kind="grpc"),
            provider("d", max_concurrency=-1, weight=-1.0, timeout_s=0.0),
            provider("e", base_url="http://api.example.com/v1"),
            provider("f", api_key_env="ROUTELEDGER_TEST_MISSING_KEY"),
            provider("g", models=[ModelSpec(name="m", capabilities=frozenset({"telepathy"}))]),
            provider("h", models=[ModelSpec(name="m", input_per_mtok=-1.0)]),
            provider("i", models=[]),
            provider("j", base_url="ftp://x"),
        ],
        strategy="fastest",
        failover=FailoverConfig(
            max_attempts=0, max_attempts_per_provider=2, backoff_base_s=2.0, backoff_max_s=1.0
        ),
        health=HealthConfig(
            cooldown_s=60.0,
            max_cooldown_s=10.0,
            error_rate_threshold=1.5,
            min_calls=30,
            window_size=20,
            failure_threshold=0,
        ),
        pools=[PoolConfig(name="p", providers=["a", "ghost"], strategy="nope")],
        ab_tests=[ABTestConfig(name="t", variant_a="a", variant_b="phantom", split_ratio=2.0)],
    )
    found = "\n".join(problems(config))
    for needle in (
        "duplicate provider name 'a'",
        "unknown kind 'grpc'",
        "max_concurrency must be >= 1",
        "weight must be >= 0",
        "timeout_s must be > 0",
        "must use https for non-loopback host 'api.example.com'",
        "environment variable ROUTELEDGER_TEST_MISSING_KEY (api_key_env) is not set",
        "unknown capabilities ['telepathy']",
        "input_per_mtok must be >= 0",
        "at least one model is required",
        "'ftp://x' is not an http(s) URL",
        "strategy 'fastest' is unknown",
        "failover.max_attempts must be >= 1",
        "max_attempts_per_provider must not exceed max_attempts",
        "backoff_max_s must be >= backoff_base_s",
        "health.max_cooldown_s must be >= cooldown_s",
        "error_rate_threshold must be in (0, 1]",
        "min_calls must not exceed window_size",
        "failure_threshold must be >= 1",
        "pool 'p': unknown provider 'ghost'",
        "pool 'p': unknown strategy 'nope'",
        "variant_b names unknown provider 'phantom'",
        "split_ratio must be in [0, 1]",
    ):
        assert needle in found


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "http://localhost:11434/v1",
        "http://[::1]:8080",
        "https://api.openai.com/v1",
    ],
)
def test_loopback_http_allowed(url: str) -> None:
    """Plain http is fine for loopback hosts; https for anything."""
    validate_config(RuntimeConfig(providers=[provider(base_url=url)]), environ={})


def test_api_key_env_present_passes_and_value_never_shown() -> None:
    """A set key variable passes; the key's value never appears in reprs or errors."""
    env = {"ROUTELEDGER_TEST_KEY": CANARY}
    p = provider(api_key_env="ROUTELEDGER_TEST_KEY")
    config = RuntimeConfig(providers=[p])
    validate_config(config, environ=env)
    key = p.resolve_api_key(env)
    assert key is not None
    assert key.reveal() == CANARY
    assert CANARY not in repr(key)


def test_canary_never_in_repr_or_error() -> None:
    """A direct key is a Secret: it never shows in repr(config) nor in ConfigError text."""
    p = provider(api_key=CANARY, max_concurrency=0)
    assert isinstance(p.api_key, Secret)
    config = RuntimeConfig(providers=[p, provider("b", kind="bad")])
    assert CANARY not in repr(config)
    assert CANARY not in str(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config, environ={})
    assert CANARY not in str(info.value)
    assert CANARY not in repr(info.value)


def test_key_put_in_api_key_env_is_not_echoed() -> None:
    """A key pasted into api_key_env by mistake is reported without echoing it."""
    config = RuntimeConfig(providers=[provider(api_key_env=CANARY)])
    found = problems(config)
    assert found
    assert CANARY not in "\n".join(found)


def test_secret_repr_and_pickle() -> None:
    """A Secret shows as '***', compares by value, and refuses to be pickled."""
    s = Secret(CANARY)
    assert repr(s) == "'***'"
    assert str(s) == "'***'"
    assert f"{s}" == "'***'"
    assert s == Secret(CANARY)
    assert s != Secret("other")
    assert hash(s) == hash(Secret(CANARY))
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        pickle.dumps(provider(api_key=CANARY))


def test_credentials_in_headers_refused() -> None:
    """Authorization headers are refused in favour of api_key/api_key_env, without the value."""
    found = problems(
        RuntimeConfig(providers=[provider(headers={"Authorization": f"Bearer {CANARY}"})])
    )
    assert any("put credentials in api_key" in p for p in found)
    assert CANARY not in "\n".join(found)


def test_wrongly_typed_python_values_are_reported_not_crashing() -> None:
    """Wrong types in Python-built config are listed as problems, not raised as TypeError."""
    config = RuntimeConfig(
        providers=[provider()],
        # Wrong types on purpose: the validator must report them.
        failover=FailoverConfig(max_attempts="3", backoff_max_s="x"),  # type: ignore[arg-type]
        health=HealthConfig(cooldown_s=None, error_rate_threshold="high"),  # type: ignore[arg-type]
    )
    found = "\n".join(problems(config))
    assert "failover.max_attempts must be a number" in found
    assert "failover.backoff_max_s must be a number" in found
    assert "health.cooldown_s" in found
    assert "error_rate_threshold" in found


def test_model_cost_is_unknown_without_prices() -> None:
    """An unpriced model costs None, never 0; a priced one costs per million tokens."""
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000)
    assert ModelSpec(name="m").cost(usage) is None
    assert ModelSpec(name="m", input_per_mtok=1.0).cost(usage) is None
    spec = ModelSpec(name="m", upstream="up", input_per_mtok=2.0, output_per_mtok=4.0)
    assert spec.cost(usage) == pytest.approx(4.0)
    assert spec.wire_name == "up"
    assert ModelSpec(name="m").wire_name == "m"


GOOD_TOML = """
strategy = "cost"
seed = 7

[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "ROUTELEDGER_TEST_OPENAI_KEY"
priority = 100
max_concurrency = 20
timeout_s = 30

[[providers.models]]
name = "fast"
upstream = "gpt-4o-mini"
input_per_mtok = 0.15
output_per_mtok = 0.6
context_window = 128000
capabilities = ["streaming", "tools", "vision"]

[[providers]]
name = "local"
kind = "openai"
base_url = "http://localhost:11434/v1"

[[providers.models]]
name = "fast"

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "https://api.anthropic.com/v1"
api_key = "{key}"

[[providers.models]]
name = "fast"
input_per_mtok = 0.8
output_per_mtok = 4

[failover]
max_attempts = 4
max_attempts_per_provider = 2
retryable_errors = ["RateLimited", "ProviderUnavailable"]

[health]
cooldown_s = 15
failure_threshold = 3
slow_call_ms = 2000

[[pools]]
name = "cheap"
providers = ["local", "claude"]
strategy = "weighted"
weights = {{ local = 3, claude = 1 }}

[[ab_tests]]
name = "oa-vs-claude"
variant_a = "openai"
variant_b = "claude"
split_ratio = 0.3
"""


def test_from_toml_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A realistic TOML file loads into the same fields, with secrets wrapped."""
    monkeypatch.setenv("ROUTELEDGER_TEST_OPENAI_KEY", "sk-from-env")
    path = tmp_path / "routeledger.toml"
    path.write_text(GOOD_TOML.format(key=CANARY), encoding="utf-8")
    config = RuntimeConfig.from_toml(path)
    assert [p.name for p in config.providers] == ["openai", "local", "claude"]
    openai = config.provider("openai")
    assert openai is not None
    assert openai.priority == 100
    assert openai.timeout_s == 30.0
    fast = openai.model("fast")
    assert fast is not None
    assert fast.wire_name == "gpt-4o-mini"
    assert fast.capabilities == frozenset({"streaming", "tools", "vision"})
    claude = config.provider("claude")
    assert claude is not None
    assert isinstance(claude.api_key, Secret)
    assert claude.api_key.reveal() == CANARY
    assert CANARY not in repr(config)
    assert config.strategy == "cost"
    assert config.failover.max_attempts_per_provider == 2
    assert config.failover.retryable_errors == ["RateLimited", "ProviderUnavailable"]
    assert config.health.slow_call_ms == 2000.0
    assert config.pools[0].weights == {"local": 3.0, "claude": 1.0}
    assert config.ab_tests[0].split_ratio == 0.3
    assert config.provider("nope") is None


def test_from_toml_bad_syntax(tmp_path: Path) -> None:
    """A file that is not TOML raises ConfigError naming the file."""
    path = tmp_path / "bad.toml"
    path.write_text("[[providers]\nname = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        RuntimeConfig.from_toml(path)


def test_from_toml_missing_and_binary_file(tmp_path: Path) -> None:
    """A missing or non-UTF-8 file raises ConfigError, not OSError or UnicodeError."""
    with pytest.raises(ConfigError, match="cannot read"):
        RuntimeConfig.from_toml(tmp_path / "absent.toml")
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        RuntimeConfig.from_toml(path)


def test_from_toml_wrong_types_and_key_kept_secret(tmp_path: Path) -> None:
    """Wrongly typed values are a ConfigError whose text never holds the key."""
    path = tmp_path / "types.toml"
    path.write_text(
        GOOD_TOML.format(key=CANARY).replace("max_concurrency = 20", 'max_concurrency = "20"'),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_toml(path)
    assert "max_concurrency" in str(info.value)
    assert CANARY not in str(info.value)


def test_from_dict_semantic_problems_and_secret(tmp_path: Path) -> None:
    """from_dict validates: an unknown pool member and a missing key variable both show."""
    data: dict[str, Any] = {
        "providers": [
            {
                "name": "a",
                "kind": "openai",
                "base_url": "https://x.example/v1",
                "api_key_env": "ROUTELEDGER_TEST_UNSET_VAR",
                "models": [{"name": "m"}],
            }
        ],
        "pools": [{"name": "p", "providers": ["zzz"]}],
    }
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_dict(data)
    text = str(info.value)
    assert "ROUTELEDGER_TEST_UNSET_VAR" in text
    assert "unknown provider 'zzz'" in text
    assert len(info.value.problems) == 2
