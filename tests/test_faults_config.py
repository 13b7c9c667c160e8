"""Fault catalogue, configuration: every invalid setting is refused, all at once, before any write.

``Runtime.start`` and ``RuntimeConfig.from_toml`` raise one ``ConfigError`` listing every
problem, and no event log file is created.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pykka
import pytest

from routeledger import (
    ConfigError,
    FailoverConfig,
    HealthConfig,
    ModelSpec,
    ProviderConfig,
    Runtime,
    RuntimeConfig,
)

KEY_VAR = "ROUTELEDGER_TEST_MISSING_KEY"
CANARY = "sk-canary-config-5a4b3c"


def good(name: str = "a", **kwargs: Any) -> ProviderConfig:
    """Return a valid loopback provider."""
    kwargs.setdefault("kind", "openai")
    kwargs.setdefault("base_url", "http://127.0.0.1:9/v1")
    return ProviderConfig(name=name, models=[ModelSpec(name="m")], **kwargs)


def refused(config: RuntimeConfig, tmp_path: Path, environ: dict[str, str]) -> ConfigError:
    """Assert Runtime.start refuses ``config`` and writes nothing; return the error."""
    db = tmp_path / "events.sqlite"
    with pytest.raises(ConfigError) as info:
        Runtime.start(config, event_log=db, environ=environ, active_health_checks=False)
    assert not any(p.name.startswith("events.sqlite") for p in tmp_path.iterdir())
    assert pykka.ActorRegistry.get_all() == []
    return info.value


# Each case: a mutation of a valid configuration, and a fragment its problem must contain.
CASES: list[tuple[str, Callable[[], RuntimeConfig], str]] = [
    ("zero providers", lambda: RuntimeConfig(providers=[]), "at least one provider"),
    (
        "duplicate names",
        lambda: RuntimeConfig(providers=[good("a"), good("a")]),
        "duplicate provider name 'a'",
    ),
    ("unknown kind", lambda: RuntimeConfig(providers=[good(kind="gemini")]), "unknown kind"),
    (
        "negative concurrency",
        lambda: RuntimeConfig(providers=[good(max_concurrency=-1)]),
        "max_concurrency must be >= 1",
    ),
    ("zero timeout", lambda: RuntimeConfig(providers=[good(timeout_s=0)]), "timeout_s must be >"),
    ("negative weight", lambda: RuntimeConfig(providers=[good(weight=-2.0)]), "weight must be"),
    (
        "http to a remote host",
        lambda: RuntimeConfig(providers=[good(base_url="http://api.example.com/v1")]),
        "must use https for non-loopback host 'api.example.com'",
    ),
    (
        "not a URL",
        lambda: RuntimeConfig(providers=[good(base_url="ftp://x/")]),
        "is not an http(s) URL",
    ),
    (
        "missing key variable",
        lambda: RuntimeConfig(providers=[good(api_key_env=KEY_VAR)]),
        f"environment variable {KEY_VAR} (api_key_env) is not set",
    ),
    (
        "zero attempts",
        lambda: RuntimeConfig(providers=[good()], failover=FailoverConfig(max_attempts=0)),
        "failover.max_attempts must be >= 1",
    ),
    (
        "per-provider above total",
        lambda: RuntimeConfig(
            providers=[good()],
            failover=FailoverConfig(max_attempts=2, max_attempts_per_provider=3),
        ),
        "max_attempts_per_provider must not exceed max_attempts",
    ),
    (
        "backoff max below base",
        lambda: RuntimeConfig(
            providers=[good()], failover=FailoverConfig(backoff_base_s=2.0, backoff_max_s=1.0)
        ),
        "backoff_max_s must be >= backoff_base_s",
    ),
    (
        "negative backoff",
        lambda: RuntimeConfig(
            providers=[good()], failover=FailoverConfig(backoff_base_s=-1.0, backoff_max_s=1.0)
        ),
        "failover.backoff_base_s must be >= 0",
    ),
    (
        "never-retryable error named retryable",
        lambda: RuntimeConfig(
            providers=[good()], failover=FailoverConfig(retryable_errors=["BadRequest"])
        ),
        "never-retryable names ['BadRequest']",
    ),
    (
        "zero failure threshold",
        lambda: RuntimeConfig(providers=[good()], health=HealthConfig(failure_threshold=0)),
        "health.failure_threshold must be >= 1",
    ),
    (
        "error rate above one",
        lambda: RuntimeConfig(providers=[good()], health=HealthConfig(error_rate_threshold=1.5)),
        "error_rate_threshold must be in (0, 1]",
    ),
    (
        "min calls above window",
        lambda: RuntimeConfig(providers=[good()], health=HealthConfig(min_calls=30)),
        "min_calls must not exceed window_size",
    ),
    (
        "cooldown above its cap",
        lambda: RuntimeConfig(
            providers=[good()], health=HealthConfig(cooldown_s=60.0, max_cooldown_s=30.0)
        ),
        "max_cooldown_s must be >= cooldown_s",
    ),
    (
        "unknown strategy",
        lambda: RuntimeConfig(providers=[good()], strategy="fastest"),
        "strategy 'fastest' is unknown",
    ),
    (
        "infinite timeout",
        lambda: RuntimeConfig(providers=[good(timeout_s=math.inf)]),
        "timeout_s must be finite",
    ),
    (
        "infinite retry-after cap",
        lambda: RuntimeConfig(
            providers=[good()], failover=FailoverConfig(max_retry_after_s=math.inf)
        ),
        "max_retry_after_s must be finite",
    ),
    (
        "fractional concurrency",
        lambda: RuntimeConfig(providers=[good(max_concurrency=2.5)]),
        "max_concurrency must be an integer",
    ),
    (
        "fractional failure threshold",
        lambda: RuntimeConfig(providers=[good()], health=HealthConfig(failure_threshold=2.5)),
        "failure_threshold must be an integer",
    ),
]


@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_invalid_setting_is_refused_before_any_write(
    tmp_path: Path, make: Callable[[], RuntimeConfig], fragment: str
) -> None:
    """Each invalid setting alone makes Runtime.start raise ConfigError naming it; no file made."""
    error = refused(make(), tmp_path, environ={})
    assert sum(fragment in p for p in error.problems) == 1, error.problems
    assert fragment in str(error)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    """A configuration with many mistakes gets one ConfigError listing every one of them."""
    config = RuntimeConfig(
        providers=[
            good("a", kind="gemini", max_concurrency=-1),
            good("a", base_url="http://api.example.com/v1", api_key_env=KEY_VAR),
        ],
        strategy="fastest",
        failover=FailoverConfig(max_attempts=0, backoff_base_s=2.0, backoff_max_s=1.0),
        health=HealthConfig(failure_threshold=0, min_calls=30, error_rate_threshold=0),
    )
    error = refused(config, tmp_path, environ={})
    expected = [
        "unknown kind 'gemini'",
        "max_concurrency must be >= 1",
        "duplicate provider name 'a'",
        "must use https for non-loopback host",
        f"environment variable {KEY_VAR}",
        "strategy 'fastest' is unknown",
        "failover.max_attempts must be >= 1",
        "max_attempts_per_provider must not exceed max_attempts",
        "backoff_max_s must be >= backoff_base_s",
        "health.failure_threshold must be >= 1",
        "error_rate_threshold must be in (0, 1]",
        "min_calls must not exceed window_size",
    ]
    for fragment in expected:
        assert sum(fragment in p for p in error.problems) == 1, (fragment, error.problems)
    assert len(error.problems) == len(expected)
    assert f"{len(expected)} problem(s)" in str(error)


def test_loopback_http_urls_are_accepted(tmp_path: Path) -> None:
    """Plain http is fine on loopback hosts (local servers and the fake provider)."""
    for url in ("http://127.0.0.1:8080/v1", "http://localhost:8080/v1", "http://[::1]:8080/v1"):
        config = RuntimeConfig(providers=[good(base_url=url)])
        with Runtime.start(config, active_health_checks=False) as rt:
            assert rt.list_providers() == ["a"]


def test_missing_key_variable_is_named_by_variable_never_by_value(tmp_path: Path) -> None:
    """The problem names the unset variable; a key set elsewhere never appears in the error."""
    config = RuntimeConfig(
        providers=[good("a", api_key_env=KEY_VAR), good("b", api_key=CANARY, timeout_s=-1)]
    )
    error = refused(config, tmp_path, environ={"OTHER_KEY": CANARY})
    assert any(KEY_VAR in p for p in error.problems)
    assert CANARY not in str(error) and CANARY not in repr(error)
    assert all(CANARY not in p for p in error.problems)


# --- TOML -----------------------------------------------------------------------------------

BAD_TOML = f"""
strategy = "fastest"

[failover]
max_attempts = 0
backoff_base_s = 2.0
backoff_max_s = 1.0

[health]
failure_threshold = 0
min_calls = 30

[[providers]]
name = "a"
kind = "gemini"
base_url = "http://127.0.0.1:9/v1"
max_concurrency = -1
models = [{{ name = "m" }}]

[[providers]]
name = "a"
kind = "openai"
base_url = "http://api.example.com/v1"
api_key_env = "{KEY_VAR}"
models = [{{ name = "m" }}]
"""


def test_from_toml_lists_every_problem_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RuntimeConfig.from_toml raises one ConfigError with every problem of the file."""
    monkeypatch.delenv(KEY_VAR, raising=False)
    path = tmp_path / "routeledger.toml"
    path.write_text(BAD_TOML)
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_toml(path)
    problems = info.value.problems
    for fragment in [
        "strategy 'fastest' is unknown",
        "failover.max_attempts must be >= 1",
        "backoff_max_s must be >= backoff_base_s",
        "health.failure_threshold must be >= 1",
        "min_calls must not exceed window_size",
        "unknown kind 'gemini'",
        "max_concurrency must be >= 1",
        "duplicate provider name 'a'",
        "must use https for non-loopback host",
        f"environment variable {KEY_VAR}",
    ]:
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routeledger.toml"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "providers"),
        ("providers = []", "at least one provider"),
        ('[[providers]]\nname = "a"\nkind = "openai"', "base_url"),
        (
            '[[providers]]\nname = "a"\nkind = "openai"\nbase_url = "http://127.0.0.1/v1"\n'
            'max_concurrency = "ten"\nmodels = [{ name = "m" }]',
            "max_concurrency",
        ),
        ("providers = [", "not valid TOML"),
        (
            '[failover]\nmax_attemps = 3\n[[providers]]\nname = "a"\nkind = "openai"\n'
            'base_url = "http://127.0.0.1/v1"\nmodels = [{ name = "m" }]',
            "max_attemps",
        ),
    ],
    ids=["empty", "zero-providers", "missing-field", "wrong-type", "syntax", "unknown-key"],
)
def test_from_toml_refuses_malformed_files_with_config_error(
    tmp_path: Path, text: str, fragment: str
) -> None:
    """Missing fields, wrong types and broken syntax are ConfigErrors, never other exceptions."""
    path = tmp_path / "routeledger.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_toml(path)
    assert fragment in str(info.value)
    assert not isinstance(info.value.__cause__, msgspec.ValidationError | KeyError)


def test_from_toml_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing configuration file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot read"):
        RuntimeConfig.from_toml(tmp_path / "nope.toml")


FOUR_PROBLEMS_TOML = """
strategy = "fastest"

[health]
failure_threshold = 2.5

[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
max_concurrency = "ten"
timeout_s = "slow"
models = [{ name = "m" }]
"""


def test_from_toml_lists_every_problem_of_a_file_with_wrong_types(tmp_path: Path) -> None:
    """Wrongly typed values do not hide each other, nor the file's other mistakes."""
    path = tmp_path / "routeledger.toml"
    path.write_text(FOUR_PROBLEMS_TOML)
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_toml(path)
    problems = info.value.problems
    for fragment in [
        "$.health.failure_threshold",
        "$.providers[0].max_concurrency",
        "$.providers[0].timeout_s",
        "strategy 'fastest' is unknown",
    ]:
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)
    assert len(problems) == 4, problems


@pytest.mark.parametrize("pasted", ["gsk_canary7Hx2kQ9mZ4vN8pL1", "sk-canary-config-5a4b3c"])
def test_a_key_pasted_into_api_key_env_is_never_echoed(tmp_path: Path, pasted: str) -> None:
    """A key shaped like a variable name (gsk_...) or not (sk-...) in api_key_env stays unseen."""
    error = refused(RuntimeConfig(providers=[good(api_key_env=pasted)]), tmp_path, environ={})
    assert any("api_key_env" in p for p in error.problems)
    assert pasted not in str(error) and pasted not in repr(error)


def test_a_password_in_a_malformed_base_url_is_never_echoed(tmp_path: Path) -> None:
    """The problem of a bad base_url shows it with its userinfo password masked."""
    url = f"ftp://me:{CANARY}@127.0.0.1/v1"
    error = refused(RuntimeConfig(providers=[good(base_url=url)]), tmp_path, environ={})
    assert "ftp://me:***@127.0.0.1/v1" in str(error)
    assert CANARY not in str(error)


def test_an_unparseable_base_url_is_a_config_error(tmp_path: Path) -> None:
    """A base_url urllib cannot split (an unclosed IPv6 bracket) is a ConfigError."""
    error = refused(RuntimeConfig(providers=[good(base_url="http://[::1/v1")]), tmp_path, {})
    assert any("base_url" in p for p in error.problems)
