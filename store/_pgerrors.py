"""The boundary between psycopg exceptions and the store's error family, and URLs shown safely.

Every ``psycopg.Error`` raised by :class:`~routeledger.store.PostgresStore` goes through
:func:`translate` and is re-raised with ``raise translate(exc, ...) from exc``; no psycopg
exception reaches a caller. The mapping follows the SQLite one (``_sqlerrors``), by SQLSTATE
class, so that the log writer treats both engines alike (buffer, retry with backoff, gap):

=========================================  ====================
SQLSTATE                                   raised
=========================================  ====================
40001, 40P01, 55P03, 57014 (lock, cancel)  ``StoreLocked``
53100 (disk full)                          ``StoreFull``
XX001, XX002 (data or index corrupted)     ``StoreCorrupted``
25006 (read-only transaction)              ``StoreError`` (saying what is read-only)
08, 57P01-57P03, none (connection lost)    ``StoreError`` (the server is unreachable)
anything else                              ``StoreError``
=========================================  ====================

A URL may carry a password (``postgresql://user:secret@host/db`` or ``?password=``); it is
never shown: :func:`shown_url` masks it, and :func:`translate` removes it from the driver's
text too (libpq does not echo it today; this does not rely on that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from routeledger.events import StoreCorrupted, StoreError, StoreFull, StoreLocked
from routeledger.events._address import url_password, url_without_password

if TYPE_CHECKING:
    import psycopg

__all__ = ["is_connection_lost", "shown_url", "translate", "url_secrets"]

_LOCKED = {"40001", "40P01", "55P03", "57014"}
_UNAVAILABLE = {"57P01", "57P02", "57P03"}


def url_secrets(url: str) -> list[str]:
    """Return the passwords ``url`` carries (userinfo and ``password=`` query parameter)."""
    secrets = [p] if (p := url_password(url)) else []
    try:
        secrets += [v for k, v in parse_qsl(urlsplit(url).query) if k == "password" and v]
    except ValueError:
        pass
    return secrets


def shown_url(url: str) -> str:
    """Return ``url`` with every password in it replaced by ``***``."""
    shown = url_without_password(url)
    try:
        parts = urlsplit(shown)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(k == "password" for k, _ in query):
            masked = [(k, "***" if k == "password" else v) for k, v in query]
            shown = urlunsplit(parts._replace(query=urlencode(masked, safe="*")))
    except ValueError:
        return url.split(":", 1)[0] + ":(not shown)"
    return shown


def is_connection_lost(exc: psycopg.Error) -> bool:
    """Return whether ``exc`` means the connection is gone (the outcome may be unknown)."""
    state = exc.sqlstate
    if state is None:
        # libpq's own failures (server closed the connection, network errors) have no state.
        import psycopg

        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith("08") or state in _UNAVAILABLE


def translate(exc: psycopg.Error, *, url: str, action: str, secrets: list[str]) -> StoreError:
    """Return the store error that stands for ``exc`` (the caller raises it ``from exc``).

    Args:
        exc: the psycopg exception.
        url: the log's URL as shown (passwords masked), named in the message.
        action: what the store was doing, for the message (``"append"``, ``"read"``, ...).
        secrets: passwords to remove from the driver's text.
    """
    text = " ".join(str(exc).split())  # libpq breaks its lines with newlines and tabs
    for secret in secrets:
        text = text.replace(secret, "***")
    state = exc.sqlstate
    detail = f"{action} failed on {url}: {text} [{state or type(exc).__name__}]"
    if state in _LOCKED:
        return StoreLocked(f"{detail}; a lock or a timeout stopped the statement", path=url)
    if state == "53100":
        return StoreFull(f"{detail}; the server's disk is full", path=url)
    if state in ("XX001", "XX002"):
        return StoreCorrupted(f"{detail}; the server reports damaged data", path=url)
    if state == "25006":
        return StoreError(
            f"{detail}; the database refuses writes here (a read-only replica or transaction)",
            path=url,
        )
    if is_connection_lost(exc):
        return StoreError(
            f"{detail}; the PostgreSQL server is unreachable or closed the connection "
            "(the next call reconnects)",
            path=url,
        )
    return StoreError(detail, path=url)
