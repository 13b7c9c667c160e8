"""Tests of routeledger.fake_provider, the fake provider's first import path."""

from __future__ import annotations

import routeledger.fake_provider as old
import routeledger.testing as new


def test_the_old_module_still_exports_the_same_objects() -> None:
    """routeledger.fake_provider re-exports the fake provider's public names unchanged."""
    assert old.__all__ == ["ERROR_CODES", "Behaviour", "FakeProvider", "FakeStats"]
    for name in old.__all__:
        assert getattr(old, name) is getattr(new, name)


def test_the_package_surface_is_small_and_sorted() -> None:
    """routeledger.testing lists an isort-sorted __all__ (constants, classes, functions)."""

    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2), name

    assert new.__all__ == sorted(new.__all__, key=kind)
    assert all(hasattr(new, name) for name in new.__all__)
