"""Gaps kept beside a log file, for the next writer to record.

When a runtime closes while its store refuses writes (a full disk), the events it still
buffers are lost. They are not lost silently: the writer keeps one ``log.events_dropped`` gap
event describing them in a small file beside the log (``<log>-gaps.json``), and the next
runtime that opens the log for writing appends it first and removes the file. A few hundred
bytes can often still be written when SQLite cannot grow its file; when even that fails, the
ERROR log line is the only record, and says so.

A log at a ``postgresql://`` URL has no file to keep its gaps beside (the server is what
refuses, often because it is down), so they are kept on this machine instead, in
``$ROUTELEDGER_GAPS_DIR``, else ``$XDG_STATE_HOME/routeledger``, else
``~/.local/state/routeledger``, in ``pg-<digest>-gaps.json`` where the digest is of the URL
with its password masked (a rotated password is the same log; no secret reaches the disk).
The next runtime started *on this machine* on that URL records them; another machine's
runtimes do not see them.
"""

from __future__ import annotations

import hashlib
import logging
import os

import msgspec

from routeledger.events import EventsDropped

__all__ = ["GAPS_DIR_ENV", "forget_gaps", "gap_base", "gaps_path", "save_gap", "take_gaps"]

log = logging.getLogger("routeledger")

_GAPS = msgspec.json.Decoder(list[EventsDropped])

GAPS_DIR_ENV = "ROUTELEDGER_GAPS_DIR"
"""The environment variable naming where the gaps of URL logs are kept."""


def _state_dir() -> str:
    chosen = os.environ.get(GAPS_DIR_ENV)
    if chosen:
        return chosen
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(state, "routeledger")


def gap_base(store: object) -> str | None:
    """Return the name the gaps of ``store``'s log are kept under (see :func:`gaps_path`).

    A file's log: its path. A PostgreSQL log: a name in the local state directory, by a
    digest of its URL as shown (``store.url``, password masked). Else (in memory): ``None``.
    """
    path = getattr(store, "path", None)
    if isinstance(path, str):
        return path
    url = getattr(store, "url", None)
    if isinstance(url, str) and url.startswith(("postgresql://", "postgres://")):
        digest = hashlib.sha256(url.encode()).hexdigest()[:24]
        return os.path.join(_state_dir(), f"pg-{digest}")
    return None


def gaps_path(log_path: str) -> str:
    """Return the file the gaps of the log at ``log_path`` are kept in."""
    return f"{log_path}-gaps.json"


def save_gap(log_path: str, gap: EventsDropped) -> bool:
    """Add ``gap`` to the gaps kept for ``log_path``; return whether it is durable."""
    path = gaps_path(log_path)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        kept = _read(path)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode([*kept, gap]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        log.error("event log: the gap cannot be kept beside the log either (%s)", exc)
        return False
    return True


def take_gaps(log_path: str) -> list[EventsDropped]:
    """Return the gaps kept for ``log_path``; the caller removes them with :func:`forget_gaps`."""
    try:
        return _read(gaps_path(log_path))
    except OSError as exc:
        log.error("event log: kept gaps cannot be read (%s)", exc)
        return []


def forget_gaps(log_path: str) -> None:
    """Remove the gaps kept for ``log_path`` (once they are in the log)."""
    try:
        os.remove(gaps_path(log_path))
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("event log: kept gaps cannot be removed (%s); they may be recorded twice", exc)


def _read(path: str) -> list[EventsDropped]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    try:
        return _GAPS.decode(raw)
    except msgspec.DecodeError:
        log.error("event log: %s is damaged and ignored", path)
        return []
