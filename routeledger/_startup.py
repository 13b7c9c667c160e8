"""What a runtime does once, at start: describe its configuration and fold its log."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import msgspec

from routeledger.events import Projections, RuntimeConfig, StoreCorrupted, url_without_password
from routeledger.store import EventStore, load_snapshot

__all__ = ["config_digest", "config_summary", "fold_log"]

log = logging.getLogger("routeledger")

_SHARED_DEFAULTS: dict[str, Any] = {"shared_concurrency": "lease", "lease_ttl_s": 3.0}


def config_summary(config: RuntimeConfig) -> dict[str, Any]:
    """Return the configuration as plain data, without any secret."""

    def hook(obj: Any) -> Any:
        return None  # Secret: dropped

    data: dict[str, Any] = msgspec.to_builtins(config, enc_hook=hook)
    # Shared-log options at their defaults are left out, so that a configuration written
    # before they existed keeps its digest (and a restart keeps its run-time changes).
    for name, default in _SHARED_DEFAULTS.items():
        if data.get(name) == default:
            data.pop(name, None)
    # Left out when unused, so that a configuration without them keeps its digest.
    for unused in ("budgets", "fallbacks"):
        if not data.get(unused):
            data.pop(unused, None)
    for p in data.get("providers", []):
        p.pop("api_key", None)
        p.pop("api_keys", None)
        p.pop("headers", None)
        # Fields added later are left out while unset, so that the digest of a configuration
        # that does not use them stays what it was (run-time changes survive an upgrade).
        for name in ("rpm", "tpm", "api_key_envs"):
            if p.get(name) is None:
                p.pop(name, None)
        for m in p.get("models", []):
            for name in ("rpm", "tpm"):
                if isinstance(m, dict) and m.get(name) is None:
                    m.pop(name, None)
        if isinstance(p.get("base_url"), str):
            p["base_url"] = url_without_password(p["base_url"])
    return data


def config_digest(summary: dict[str, Any]) -> str:
    """Return the digest a configuration summary is recorded under (``config.applied``)."""
    return hashlib.sha256(msgspec.json.encode(summary)).hexdigest()[:16]


def fold_log(store: EventStore, *, snapshots: bool = True) -> Projections:
    """Fold the log into projections, from its newest valid snapshot and past any damaged row.

    With ``snapshots`` (and a store that keeps them), the fold starts from the newest
    snapshot that passes every check (see ``routeledger.store._snapshots``) and folds only
    the events after it; otherwise, or when none passes, it starts from position 1.

    A daemon must start even when one row of its log is damaged: the row is left out (and
    logged), the rest is folded. ``replay()`` of such a log raises :class:`StoreCorrupted`,
    so the figures of a damaged log are the runtime's own word, said at ERROR level. Events
    of unknown types (a newer routeledger's) are skipped and counted.
    """
    projections = (load_snapshot(store) if snapshots else None) or Projections()
    start = projections.position + 1
    while True:
        try:
            return store.replay(projections, from_position=start, strict=False)
        except StoreCorrupted as exc:
            if exc.position is None or exc.position < start:
                raise
            log.error("event log: %s; left out of the figures", exc.message)
            start = exc.position + 1
