"""Sticky sessions: rendezvous hashing, and a session's requests on one provider end to end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger import RequestError, Requirements, Runtime
from routeledger.actors._sticky import session_order, session_provider
from routeledger.testing import FakeProvider

Fakes = Callable[..., list[FakeProvider]]


def test_rendezvous_hashing_is_stable_and_spreads_sessions() -> None:
    """The same session always maps to the same provider; sessions spread over all of them."""
    names = ["a", "b", "c", "d"]
    homes = Counter(session_provider(f"s{i}", names) for i in range(2000))
    assert set(homes) == set(names)
    assert min(homes.values()) > 2000 / 4 * 0.8
    assert session_provider("s1", names) == session_provider("s1", list(reversed(names)))
    assert session_order("s1", names)[0] == session_provider("s1", names)
    assert session_provider("s1", []) is None


def test_adding_a_provider_moves_only_the_sessions_it_wins() -> None:
    """With a fifth provider, about a fifth of sessions move, and only to the new one."""
    before = ["a", "b", "c", "d"]
    after = [*before, "e"]
    moved = [
        (session_provider(f"s{i}", before), session_provider(f"s{i}", after)) for i in range(2000)
    ]
    changed = [new for old, new in moved if old != new]
    assert set(changed) == {"e"}
    assert 0.12 < len(changed) / 2000 < 0.28


@given(st.text(max_size=20), st.lists(st.sampled_from("abcdefg"), min_size=2, unique=True))
def test_removing_another_provider_never_moves_a_session(session: str, names: list[str]) -> None:
    """A session stays put when a provider other than its own leaves the candidates."""
    home = session_provider(session, names)
    others = [n for n in names if n != home]
    assert session_provider(session, [n for n in names if n != others[0]]) == home


def test_a_sessions_requests_go_to_one_provider_while_round_robin_would_rotate(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """Every request of a session goes to its provider; route.decided says stickiness decided."""
    a, b, c = fakes(3)
    cfg = config_for({"a": a, "b": b, "c": c})
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        chosen = {
            s: {rt.complete(req(session_id=s)).provider for _ in range(4)}
            for s in ("alice", "bob", "carol", "dave")
        }
        plain = [rt.complete(req()).provider for _ in range(3)]
        rt.flush()
    assert all(len(providers) == 1 for providers in chosen.values())
    assert {s: p.pop() for s, p in chosen.items()} == {
        s: session_provider(s, ["a", "b", "c"]) for s in ("alice", "bob", "carol", "dave")
    }
    assert len(set(plain)) == 3
    decided = events(db, "route.decided")
    assert sum(d.sticky for d in decided) == 16
    assert all("sticky session" in d.reason for d in decided if d.sticky)
    [received] = events(db, "request.received", session_id="alice")[:1]
    assert received.session_id == "alice"


def test_a_session_moves_while_its_provider_is_out_and_an_explicit_preference_wins(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """Without its provider a session goes to its next choice; a preferred provider wins."""
    a, b, c = fakes(3)
    cfg = config_for({"a": a, "b": b, "c": c})
    home, second, third = session_order("s", ["a", "b", "c"])
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        assert rt.complete(req(session_id="s")).provider == home
        away = rt.complete(req(session_id="s"), requirements=Requirements(exclude_providers=[home]))
        assert away.provider == second
        assert rt.complete(req(session_id="s")).provider == home
        assert rt.complete(req(session_id="s"), preferred_provider=third).provider == third


def test_a_session_never_goes_to_a_backup_tier_while_the_top_tier_serves(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """Stickiness chooses among the highest-priority candidates only."""
    a, b, backup = fakes(3)
    cfg = config_for(
        {"a": a, "b": b, "backup": backup},
        per_provider={"a": {"priority": 10}, "b": {"priority": 10}},
    )
    sessions = [f"s{i}" for i in range(20)]
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        chosen = {s: rt.complete(req(session_id=s)).provider for s in sessions}
    assert chosen == {s: session_provider(s, ["a", "b"]) for s in sessions}
    assert any(session_provider(s, ["a", "b", "backup"]) == "backup" for s in sessions)


def test_an_empty_or_non_string_session_id_is_refused_before_routing(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """A session id must be a non-empty string: anything else is a RequestError."""
    (a,) = fakes(1)
    with Runtime.start(config_for({"a": a}), event_log=db, active_health_checks=False) as rt:
        for bad in ("", 7):
            with pytest.raises(RequestError, match="session_id must be a non-empty string"):
                rt.complete(req(session_id=bad))
        assert a.stats.requests == 0
