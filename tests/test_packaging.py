"""The distribution's layout: folders mapped to routeledger.*, a console script, no stray names."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_subpackages_import_through_the_routeledger_namespace(tmp_path: Path) -> None:
    """routeledger.actors, .events and .store come from the actors/, events/, store/ folders."""
    proc = run_python(
        "import routeledger.actors as a, routeledger.events as e, routeledger.store as s;"
        "print(a.__file__); print(e.__file__); print(s.__file__)",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    parents = [Path(line).parent.name for line in proc.stdout.split()]
    assert parents == ["actors", "events", "store"]


@pytest.mark.parametrize("name", ["events", "actors", "store"])
def test_bare_folder_names_are_not_importable(tmp_path: Path, name: str) -> None:
    """A bare `import events` (or actors, store) fails: only routeledger.<part> exists."""
    proc = run_python(f"import {name}", tmp_path)
    assert proc.returncode != 0
    assert "ModuleNotFoundError" in proc.stderr


def test_a_plain_install_holds_every_subpackage(tmp_path: Path) -> None:
    """`pip install .` (not editable) installs routeledger with every subpackage."""
    target = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
            "--target", str(target), str(ROOT),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for part in ("actors", "actors/wire", "events", "store", "testing"):
        assert (target / "routeledger" / part / "__init__.py").is_file()
    assert (target / "routeledger" / "py.typed").is_file()
    assert not (target / "events").exists()


def test_console_script_lists_every_command() -> None:
    """The `routeledger` console script offers the documented commands."""
    script = Path(sys.executable).with_name("routeledger")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in (
        "demo",
        "replay",
        "tail",
        "audit",
        "complete",
        "simulate",
        "fake-provider",
        "metrics",
    ):
        assert command in proc.stdout


def test_version_comes_from_the_package_metadata() -> None:
    """routeledger.__version__ is the installed distribution's version, as in pyproject.toml."""
    import routeledger

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert routeledger.__version__ == version("routeledger") == pyproject["project"]["version"]


def test_library_logging_is_silent_until_the_application_configures_it(tmp_path: Path) -> None:
    """A routeledger warning in an application without logging set up prints nothing."""
    proc = run_python(
        "import logging, routeledger;"
        "assert any(isinstance(h, logging.NullHandler)"
        " for h in logging.getLogger('routeledger').handlers);"
        "logging.getLogger('routeledger.actors').warning('should not be printed')",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
