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
