"""Tests that the README, ARCHITECTURE.md and the package docstring name only files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import routeledger

ROOT = Path(__file__).resolve().parents[1]
DOCS = {
    "README.md": (ROOT / "README.md").read_text(encoding="utf-8"),
    "ARCHITECTURE.md": (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"),
    "routeledger/__init__.py": routeledger.__doc__ or "",
}
# Made by the scripts on first use, not part of a fresh clone.
GENERATED = (".venv/",)


def referenced_paths(text: str) -> set[str]:
    """Return the repository paths a document names: Markdown links, and quoted words that
    contain a slash or name a ``.md`` file."""
    found = set(re.findall(r"\]\(([^)#\s]+)\)", text))
    for _, quoted in re.findall(r"(`+)(.+?)\1", text):
        for word in quoted.split():
            # A word starting with "/" is a URL path (`GET /models`), not a repository file.
            if ("/" in word or word.endswith(".md")) and not word.startswith("/"):
                found.add(word)
    return {p for p in found if not p.startswith(GENERATED) and "://" not in p}


def inside_repository(path: str) -> bool:
    """Return whether ``path`` names an existing file or folder inside this repository."""
    full = (ROOT / path).resolve()
    return full.is_relative_to(ROOT) and full.exists()


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_every_document_named_exists_in_the_repository(doc: str) -> None:
    """Each path a document points to is a file or folder of this repository."""
    paths = referenced_paths(DOCS[doc])
    missing = sorted(p for p in paths if not inside_repository(p))
    assert missing == []


def test_a_missing_document_is_noticed() -> None:
    """A reference to a file outside the repository, or to no file at all, is reported."""
    paths = referenced_paths("see `../shared/ARCHITECTURE.md` and [x](docs/NOPE.md)")
    assert paths == {"../shared/ARCHITECTURE.md", "docs/NOPE.md"}
    assert not any(inside_repository(p) for p in paths)
