"""An agent's listing checked entry by entry (`coordinator.listing.checked_entries`): the exact
reasons a refused entry is recorded with, the edges of each field, and value cutting."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.listing import MAX_MTIME, MAX_SIZE, MIN_MTIME, checked_entries


def refusal(entry: Any) -> str:
    files, rejected = checked_entries({"entries": [entry]}, None)
    assert files == [] and len(rejected) == 1, (files, rejected)
    return rejected[0]


def test_listing_without_an_entries_list() -> None:
    for body in ([{"path": "a"}], {"entries": "a"}, None):
        assert checked_entries(body, None) == ([], ["the listing has no 'entries' list"])


@pytest.mark.parametrize(("entry", "reason"), [
    (["a"], "an entry is not an object"),
    ({"path": "a/../b", "size": 1, "mtime": 1}, "'a/../b': "),
    ({"path": "a", "size": -1, "mtime": 1}, f"'a': size -1 is not an integer in 0..{MAX_SIZE}"),
    ({"path": "a", "size": 1, "mtime": "x"}, "'a': mtime 'x' is not a number"),
    ({"path": "a", "size": 1, "mtime": 1e20}, "'a': mtime 1e+20 is not a time in years 1..9999"),
    ({"path": "a", "size": 10**30, "mtime": 1},
     f"'a': size {10**30} is not an integer in 0..{MAX_SIZE}"),
    ({"path": "a", "size": 10**30 + 1, "mtime": 1},
     f"'a': size an integer of 31 digits is not an integer in 0..{MAX_SIZE}"),
])
def test_refusal_reasons_are_exact(entry: Any, reason: str) -> None:
    assert refusal(entry).startswith(reason)


def test_type_defaults_to_file_and_edges_are_accepted() -> None:
    entries = [{"path": "a", "size": 0, "mtime": MIN_MTIME},
               {"path": "b", "size": MAX_SIZE, "mtime": MAX_MTIME}]
    files, rejected = checked_entries({"entries": entries}, None)
    assert rejected == []
    assert [(f.path, f.size, f.mtime) for f in files] == [
        ("a", 0, MIN_MTIME), ("b", MAX_SIZE, MAX_MTIME)]


def test_long_values_are_cut_to_80_characters() -> None:
    path = "p" * 200
    reason = refusal({"path": path, "size": -1, "mtime": 1})
    assert reason.startswith(repr(path)[:77] + "...: size -1")
    exact = "q" * 78  # repr() is 80 characters: kept whole
    assert refusal({"path": exact, "size": -1, "mtime": 1}).startswith(repr(exact) + ": size")
