"""Tests of routeledger._toml: the one helper that reads TOML files, for configs and scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest

from routeledger import ConfigError, RuntimeConfig
from routeledger._toml import read_toml


def test_reads_a_toml_file_into_plain_data(tmp_path: Path) -> None:
    """A valid file comes back as nested dicts and lists."""
    path = tmp_path / "a.toml"
    path.write_text('strategy = "cost"\n[[providers]]\nname = "p"\n', encoding="utf-8")
    assert read_toml(path) == {"strategy": "cost", "providers": [{"name": "p"}]}


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    """A file that cannot be read is one ConfigError that names it."""
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        read_toml(path)
    assert info.value.problems == [f"cannot read {path}: No such file or directory"]


@pytest.mark.parametrize("data", [b"providers = [", b"name = '\xff'"])
def test_invalid_toml_or_utf8_is_a_config_error_naming_the_path(
    tmp_path: Path, data: bytes
) -> None:
    """Bad TOML syntax or bytes that are not UTF-8 are reported against the file's path."""
    path = tmp_path / "bad.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        read_toml(str(path))
    assert info.value.problems[0].startswith(f"{path} is not valid TOML: ")


def test_runtime_config_from_toml_still_reports_an_unreadable_file(tmp_path: Path) -> None:
    """RuntimeConfig.from_toml (public contract) reads through the helper and keeps its errors."""
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="cannot read"):
        RuntimeConfig.from_toml(path)
