"""`routeledger complete` with a TOML configuration, and the example configuration file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

from routeledger import ConfigError, RuntimeConfig, replay
from routeledger.cli import main
from routeledger.testing import FakeProvider

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "routeledger.toml"


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def write_config(path: Path, url: str, kind: str) -> Path:
    path.write_text(
        f'[[providers]]\nname = "local"\nkind = "{kind}"\nbase_url = "{url}/v1"\n'
        'api_key_env = "RL_TEST_KEY"\n'
        '[[providers.models]]\nname = "fake-model"\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n'
        "[health]\ninterval_s = 3600.0\n"
    )
    return path


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_complete_prints_the_answer_and_logs_the_request(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """`complete` sends the prompt to the configured provider and records it in --db."""
    monkeypatch.setenv("RL_TEST_KEY", "sk-test-complete")
    db = tmp_path / "log.sqlite"
    with FakeProvider() as fake:
        config = write_config(tmp_path / "rl.toml", fake.url, kind)
        assert main(["complete", "--config", str(config), "--db", str(db), "say hi"]) == 0
        assert fake.stats.requests == 1
    out, err = capsys.readouterr()
    assert out.strip()
    assert "[local fake-model" in err and "cost 0.0000" in err
    assert replay(db).usage.report("all").requests == 1


def test_complete_streams_the_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`complete --stream` prints the streamed text and the provider that served it."""
    monkeypatch.setenv("RL_TEST_KEY", "sk-test-complete")
    with FakeProvider() as fake:
        config = write_config(tmp_path / "rl.toml", fake.url, "openai")
        assert main(["complete", "--config", str(config), "--stream", "say hi"]) == 0
    out, err = capsys.readouterr()
    assert out.strip()
    assert "[local fake-model" in err


def test_complete_without_the_key_variable_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing API key variable is a configuration error naming the variable, status 2."""
    monkeypatch.delenv("RL_TEST_KEY", raising=False)
    config = write_config(tmp_path / "rl.toml", "http://127.0.0.1:9", "openai")
    assert main(["complete", "--config", str(config), "hi"]) == 2
    assert "RL_TEST_KEY" in capsys.readouterr().err


def test_the_example_configuration_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/routeledger.toml loads with its keys set, and names them when they are not."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-example-1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-example-2")
    config = RuntimeConfig.from_toml(EXAMPLE)
    assert [p.name for p in config.providers] == ["openai", "anthropic"]
    assert config.providers[0].models[0].wire_name == "gpt-4o-mini"
    assert config.pools[0].weights == {"openai": 3.0, "anthropic": 1.0}
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_toml(EXAMPLE)
    assert "ANTHROPIC_API_KEY" in str(info.value)
