"""Open an event log by what names it: a SQLite file path, or a ``postgresql://`` URL."""

from __future__ import annotations

import os

from routeledger.store._pgerrors import shown_url
from routeledger.store._postgres import PostgresStore, is_postgres_url
from routeledger.store._sqlite import SQLiteStore

__all__ = ["open_store", "shown_target"]


def open_store(
    target: str | os.PathLike[str], *, readonly: bool = False, synchronous: str = "NORMAL"
) -> SQLiteStore | PostgresStore:
    """Open (or create) the event log at ``target`` with the default settings.

    Args:
        target: a ``postgresql://`` (or ``postgres://``) URL opens a :class:`PostgresStore`
            (the ``postgres`` extra); anything else is a SQLite file path.
        readonly: never write (the log must exist).
        synchronous: SQLite's ``PRAGMA synchronous`` (PostgreSQL commits durably as its
            server is configured).

    Raises:
        StoreError: the log cannot be opened (its message never shows a URL's password).
    """
    if is_postgres_url(target):
        assert isinstance(target, str)
        return PostgresStore(target, readonly=readonly)
    return SQLiteStore(target, readonly=readonly, synchronous=synchronous)


def shown_target(target: str | os.PathLike[str]) -> str:
    """Return how to name the log at ``target`` in output: a URL's password is masked."""
    if is_postgres_url(target):
        assert isinstance(target, str)
        return shown_url(target)
    return os.fspath(target)
