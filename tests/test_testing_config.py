"""Tests of routeledger.testing's quick configurations (no_backoff)."""

from __future__ import annotations

from routeledger import FailoverConfig
from routeledger.testing import no_backoff


def test_no_backoff_turns_backoff_off_and_keeps_every_other_default() -> None:
    """no_backoff() is the default FailoverConfig with zero backoff base and cap."""
    config = no_backoff()
    assert (config.backoff_base_s, config.backoff_max_s) == (0.0, 0.0)
    defaults = FailoverConfig()
    assert config == FailoverConfig(
        **{
            name: getattr(defaults, name)
            for name in FailoverConfig.__struct_fields__
            if not name.startswith("backoff_")
        },
        backoff_base_s=0.0,
        backoff_max_s=0.0,
    )


def test_no_backoff_applies_overrides_including_backoff() -> None:
    """Overrides win over the defaults and over the zero backoff."""
    config = no_backoff(max_attempts=2, backoff_max_s=0.5)
    assert (config.max_attempts, config.backoff_base_s, config.backoff_max_s) == (2, 0.0, 0.5)


def test_no_backoff_returns_a_new_config_each_time() -> None:
    """Each call returns its own FailoverConfig, so a test may change it freely."""
    first = no_backoff()
    first.max_attempts = 9
    assert no_backoff().max_attempts == FailoverConfig().max_attempts
