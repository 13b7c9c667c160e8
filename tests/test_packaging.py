"""The distribution's layout: folders mapped to routeledger.*, a console script, no stray names."""

from __future__ import annotations

import subprocess
import sys
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
