"""The boundary between sqlite3 exceptions and the store's error family.

Every ``sqlite3.Error`` raised by the SQLite store goes through :func:`translate` and is
re-raised with ``raise translate(exc, ...) from exc``; no sqlite3 exception reaches a caller.

==================================  ====================
sqlite3 result (primary code)       raised
==================================  ====================
SQLITE_BUSY, SQLITE_LOCKED          ``StoreLocked``
SQLITE_FULL                         ``StoreFull``
SQLITE_CORRUPT, SQLITE_NOTADB       ``StoreCorrupted``
SQLITE_READONLY                     ``StoreError`` (saying what is read-only)
SQLITE_CANTOPEN                     ``StoreError`` (saying what may stop the open)
text that does not decode           ``StoreCorrupted``
anything else                       ``StoreError``
==================================  ====================
"""

from __future__ import annotations

import sqlite3

from routeledger.events import StoreCorrupted, StoreError, StoreFull, StoreLocked

__all__ = ["translate"]

# Primary result codes from sqlite3.h; the extended code keeps them in its low byte.
_SQLITE_CORRUPT = 11
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26


def translate(exc: sqlite3.Error, *, path: str, action: str) -> StoreError:
    """Return the store error that stands for ``exc`` (the caller raises it ``from exc``).

    Args:
        exc: the sqlite3 exception.
        path: the database file, named in the message.
        action: what the store was doing, for the message (``"append"``, ``"read"``, ...).
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    detail = f"{action} failed on {path}: {exc} [{name}]"
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StoreLocked(
            f"{detail}; another connection held the database past the busy timeout", path=path
        )
    if primary == _SQLITE_FULL:
        return StoreFull(f"{detail}; the disk or the size limit is full", path=path)
    if primary == _SQLITE_NOTADB:
        return StoreCorrupted(
            f"{path} is not a SQLite database (or it is encrypted, or its header is damaged)",
            path=path,
        )
    if primary == _SQLITE_READONLY:
        return StoreError(
            f"{detail}; the log file, its directory or its filesystem is read-only for this "
            "process (a log that is only read opens with readonly=True, as replay does)",
            path=path,
        )
    if primary == _SQLITE_CANTOPEN:
        # Also what a writer meets on a read-only filesystem: the -wal and -shm files that WAL
        # mode keeps beside the log cannot be created.
        return StoreError(
            f"{detail}; the file or the -wal/-shm files beside it cannot be created or opened "
            "(a missing directory, no permission, or a read-only directory or filesystem)",
            path=path,
        )
    # The sqlite3 module reports undecodable TEXT without a result code.
    if primary == _SQLITE_CORRUPT or "decode" in str(exc).lower():
        return StoreCorrupted(f"{detail}; the database file is damaged", path=path)
    return StoreError(detail, path=path)
