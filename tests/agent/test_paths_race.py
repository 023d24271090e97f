"""The open descriptor is checked again: a path swapped after the check is still refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import paths
from common.errors import NotFound


def test_file_swapped_after_the_check_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.log").write_text("inside")
    outside = tmp_path / "secret.txt"
    outside.write_text("SECRET")
    real_roots = {"logs": str(root.resolve())}
    opened = paths.open_regular_file(real_roots, "logs", "ok.log")
    os.close(opened.fd)
    assert opened.size == 6

    # What a race would do: the text check passed for a path inside the root, but by the
    # time of the open the name leads outside it.
    monkeypatch.setattr(paths, "resolve", lambda *_: str(outside))
    with pytest.raises(NotFound):
        paths.open_regular_file(real_roots, "logs", "ok.log")


def test_directory_swapped_for_a_symlink_after_resolving_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The containment check runs on the opened descriptor's own path, not on the resolved one.

    `resolve` answers a real path inside the root; then, before the open, a directory of that
    path is swapped for a symlink leading outside. ``O_NOFOLLOW`` guards only the last segment,
    so the open lands outside the root — only the kernel's name for the descriptor shows it.
    """
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "app.log").write_text("inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.log").write_text("SECRET")
    real_roots = {"logs": str(root.resolve())}
    real_resolve = paths.resolve

    def resolve_then_swap(*args: str) -> str:
        resolved = real_resolve(*args)
        assert resolved == str((root / "dir" / "app.log").resolve())  # inside: check passes
        (root / "dir").rename(tmp_path / "moved-away")
        (root / "dir").symlink_to(outside, target_is_directory=True)
        return resolved

    monkeypatch.setattr(paths, "resolve", resolve_then_swap)
    with pytest.raises(NotFound, match=r"^no such file: logs/dir/app\.log$"):
        opened = paths.open_regular_file(real_roots, "logs", "dir/app.log")
        os.close(opened.fd)  # only reached when the check is broken: do not leak the fd


def test_file_removed_after_resolving_is_not_found(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "gone.log").write_text("soon gone")
    real_roots = {"logs": str(root.resolve())}
    real_resolve = paths.resolve

    def resolve_then_remove(*args: str) -> str:
        resolved = real_resolve(*args)
        os.unlink(resolved)
        return resolved

    monkeypatch.setattr(paths, "resolve", resolve_then_remove)
    with pytest.raises(NotFound, match=r"^no such file: logs/gone\.log$"):
        paths.open_regular_file(real_roots, "logs", "gone.log")
