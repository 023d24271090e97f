"""`agent.listing.walk`: iterative, depth-limited, and telling what it did not enter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent.listing import MAX_WALK_DEPTH, Skipped, list_entries, walk


def chain(root: Path, levels: int) -> Path:
    level = root
    for _ in range(levels):
        level = level / "d"
        level.mkdir()
        (level / "f").write_bytes(b"x")
    return level


def test_depth_limit_lists_to_the_cut_and_reports_it(tmp_path: Path) -> None:
    chain(tmp_path, 6)
    skipped: list[Skipped] = []
    paths = [e.path for e in walk(str(tmp_path), str(tmp_path), True, skipped, max_depth=3)]
    assert paths == ["d", "d/d", "d/d/d", "d/d/f", "d/f"]
    assert skipped == [Skipped("d/d/d", "too_deep")]


def test_order_is_depth_first_with_sorted_names(tmp_path: Path) -> None:
    for rel in ("b/x", "a/y", "a/b/z", "c"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    skipped: list[Skipped] = []
    paths = [e.path for e in walk(str(tmp_path), str(tmp_path), True, skipped)]
    assert paths == ["a", "a/b", "a/b/z", "a/y", "b", "b/x", "c"]
    assert skipped == []


def test_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    """1100 levels: the old recursive walk raised RecursionError (a 500)."""
    try:
        chain(tmp_path, 1100)
        listing = list_entries({"r": str(tmp_path)}, "r", "", None, True, None)
        dirs = [e for e in listing.entries if e.type == "dir"]
        assert len(dirs) == MAX_WALK_DEPTH
        assert listing.skipped == [Skipped("/".join(["d"] * MAX_WALK_DEPTH), "too_deep")]
    finally:
        _remove_chain(tmp_path)  # pytest's own clean-up recurses: it would fail on this tree


def test_unreadable_directory_is_reported(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root, who reads any directory: the refusal is forced (EACCES)."""
    for rel in ("open/a", "shut/b"):
        (tmp_path / rel).parent.mkdir()
        (tmp_path / rel).write_bytes(b"")
    real_scandir = os.scandir

    def scandir(path: str) -> Any:
        if os.path.basename(path) == "shut":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = list_entries({"r": str(tmp_path)}, "r", "", None, True, None)
    assert [e.path for e in listing.entries] == ["open", "open/a", "shut"]
    assert listing.skipped == [Skipped("shut", "unreadable")]


def _remove_chain(top: Path) -> None:
    deepest = top
    while (deepest / "d").is_dir():
        deepest = deepest / "d"
    while deepest != top:
        (deepest / "f").unlink(missing_ok=True)
        deepest.rmdir()
        deepest = deepest.parent
