"""Tests of the layering in ARCHITECTURE.md: each layer imports only from the layers below it.

``events`` (pure data) < ``store`` (the event log) < ``actors`` < the facade (``routeledger``
itself and every other module under it). The source folders are scanned with ``ast``, so an
import inside a function or under ``TYPE_CHECKING`` counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "events": "routeledger.events",
    "store": "routeledger.store",
    "actors": "routeledger.actors",
}
RANK = {"routeledger.events": 0, "routeledger.store": 1, "routeledger.actors": 2}
FACADE = 3
NAMES = {0: "events", 1: "store", 2: "actors", FACADE: "the facade"}

ALLOWED = {
    # RuntimeConfig.from_toml(path) is public contract, but events/ does no file I/O: the
    # method imports the facade's TOML reader when called (never at import time).
    ("routeledger.events._config", "routeledger._toml"),
}


def layer(module: str) -> int | None:
    """Return the layer of a routeledger module, or None for a module outside routeledger."""
    if module != "routeledger" and not module.startswith("routeledger."):
        return None
    for package, rank in RANK.items():
        if module == package or module.startswith(package + "."):
            return rank
    return FACADE


def module_name(path: Path) -> str:
    """Return the dotted name a source file is imported as (folders map as in pyproject)."""
    rel = path.relative_to(ROOT)
    top = FOLDERS.get(rel.parts[0], rel.parts[0])
    parts = [top, *rel.parts[1:-1]]
    if rel.stem != "__init__":
        parts.append(rel.stem)
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool) -> list[str]:
    """Return every module ``source`` imports (relative imports resolved against ``module``)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                # `from routeledger import actors` imports a layer's package, not the facade.
                sub = f"{target}.{alias.name}"
                found.append(sub if sub in RANK else target)
    return found


def upward_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Return the imports of ``module`` that reach a layer above its own."""
    own = layer(module)
    assert own is not None
    bad = []
    for target in imported_modules(source, module, is_package=is_package):
        rank = layer(target)
        if rank is not None and rank > own and (module, target) not in ALLOWED:
            bad.append(f"{module} imports {target} ({NAMES[rank]} is above {NAMES[own]})")
    return bad


def library_files() -> list[Path]:
    """Return every source file of the three lower layers."""
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def test_each_layer_imports_only_from_the_layers_below() -> None:
    """No module in events/, store/ or actors/ imports from a layer above its own."""
    problems = []
    for path in library_files():
        source = path.read_text(encoding="utf-8")
        is_package = path.name == "__init__.py"
        problems += upward_imports(source, module_name(path), is_package=is_package)
    assert problems == []


def test_every_allowed_exception_is_still_used() -> None:
    """An exception to the layering that no longer occurs is removed from ALLOWED."""
    used = set()
    for path in library_files():
        module = module_name(path)
        source = path.read_text(encoding="utf-8")
        targets = imported_modules(source, module, is_package=path.name == "__init__.py")
        used |= {(module, t) for t in targets if (module, t) in ALLOWED}
    assert used == ALLOWED


def test_the_scan_covers_every_layer_folder() -> None:
    """Each of events/, store/ and actors/ has source files the scan reads."""
    folders = {p.relative_to(ROOT).parts[0] for p in library_files()}
    assert folders == set(FOLDERS)
    assert module_name(ROOT / "events" / "_config.py") == "routeledger.events._config"
    assert module_name(ROOT / "actors" / "__init__.py") == "routeledger.actors"


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("routeledger.events._x", "from routeledger.store import SQLiteStore"),
        ("routeledger.events._x", "import routeledger"),
        ("routeledger.events._x", "from routeledger import Runtime"),
        ("routeledger.store._x", "def f():\n    from routeledger.actors._clock import Clock"),
        ("routeledger.store._x", "from ..actors import _clock"),
        ("routeledger.actors._x", "from routeledger._runtime import Runtime"),
        ("routeledger.actors.wire._x", "from ...testing import FakeProvider"),
        ("routeledger.actors._x", "if TYPE_CHECKING:\n    from routeledger.sim import Scenario"),
    ],
)
def test_an_upward_import_is_caught(module: str, source: str) -> None:
    """Absolute, relative, deferred and type-only imports of a higher layer are all reported."""
    assert upward_imports(source, module) != []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("routeledger.events._x", "from routeledger.events._errors import ConfigError"),
        ("routeledger.store._x", "from routeledger.events import Event\nimport sqlite3"),
        ("routeledger.actors._x", "from routeledger.store import EventStore"),
        ("routeledger.actors._x", "from routeledger import events"),
        ("routeledger.actors.wire._x", "from .. import _clock\nfrom . import _base"),
    ],
)
def test_a_downward_or_sideways_import_passes(module: str, source: str) -> None:
    """Imports of the same layer, a lower one, or outside routeledger are allowed."""
    assert upward_imports(source, module) == []
