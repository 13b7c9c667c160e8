"""Sticky sessions: the provider a session's requests go to, by rendezvous hashing.

Each candidate gets a score from a hash of (session, provider); the highest wins. Adding or
removing a provider moves only the sessions that it wins or won (about 1/n of them), and a
session whose provider is unhealthy or saturated goes to its next-highest candidate and comes
back when its provider does. The hash is BLAKE2b, not Python's ``hash`` (salted per process),
so every runtime sharing a log, and every replay of a simulation, agrees.
"""

from __future__ import annotations

import hashlib

__all__ = ["session_order", "session_provider"]


def _score(session_id: str, provider: str) -> bytes:
    # The separator keeps ("ab", "c") and ("a", "bc") apart.
    key = f"{session_id}\x00{provider}".encode()
    return hashlib.blake2b(key, digest_size=8).digest()


def session_order(session_id: str, candidates: list[str]) -> list[str]:
    """Return ``candidates`` from the session's first choice to its last."""
    return sorted(candidates, key=lambda name: _score(session_id, name), reverse=True)


def session_provider(session_id: str, candidates: list[str]) -> str | None:
    """Return the session's provider among ``candidates`` (``None`` when there is none)."""
    if not candidates:
        return None
    return max(candidates, key=lambda name: _score(session_id, name))
