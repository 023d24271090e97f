"""Request paths below a root: what resolves, what is refused (and how), what is opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.paths import (
    MAX_PATH_LENGTH,
    check_request_path,
    is_inside,
    open_regular_file,
    resolve,
    root_dir,
)
from common.errors import BadRequest, NotFound, UnknownRoot


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "data" / "logs"
    (root / "sub").mkdir(parents=True)
    (root / "app.log").write_bytes(b"0123456789")
    (root / "sub" / "b.log").write_bytes(b"b")
    (root / "sub" / "deep").mkdir()
    (root / "sub" / "deep" / "c.log").write_bytes(b"cc")
    sibling = tmp_path / "data" / "logs-secret"
    sibling.mkdir()
    (sibling / "x").write_bytes(b"SECRET")
    os.symlink(sibling / "x", root / "leaves")
    os.symlink(root / "app.log", root / "stays")
    os.symlink("sub", root / "subdir-link")
    return {"logs": str(root.resolve())}


def test_is_inside_is_a_path_comparison_not_a_prefix() -> None:
    assert is_inside("/data/logs", "/data/logs")
    assert is_inside("/data/logs/a", "/data/logs")
    assert is_inside("/data/logs/a", "/data/logs/")
    assert is_inside("/a", "/")  # the filesystem root holds everything
    assert is_inside("/srv/X/a", "/srv/X")  # only a trailing "/" is stripped from the root
    assert not is_inside("/srv/a", "/srv/X")
    assert not is_inside("/data/logs-secret/x", "/data/logs")
    assert not is_inside("/data/log", "/data/logs")
    assert not is_inside("/data", "/data/logs")


def test_request_path_length_limit() -> None:
    longest = "a/" * (MAX_PATH_LENGTH // 2 - 1) + "ab"
    assert len(longest) == MAX_PATH_LENGTH
    assert check_request_path(longest) == longest
    with pytest.raises(BadRequest) as caught:
        check_request_path(longest + "c")
    assert (caught.value.parameter, caught.value.message) == ("path", "path too long")


def test_request_path_refusal_names_the_parameter_and_reason() -> None:
    with pytest.raises(BadRequest) as caught:
        check_request_path("a/../b")
    assert caught.value.parameter == "path"
    assert caught.value.message == "invalid path: path segment '..' not allowed"


def test_unknown_root(roots: dict[str, str]) -> None:
    assert root_dir(roots, "logs") == roots["logs"]
    with pytest.raises(UnknownRoot, match="no root named 'nope'"):
        root_dir(roots, "nope")
    with pytest.raises(UnknownRoot):
        resolve(roots, "nope", "app.log")


def test_resolve(roots: dict[str, str]) -> None:
    base = roots["logs"]
    assert resolve(roots, "logs", "") == base  # the root itself
    assert resolve(roots, "logs", "sub/b.log") == f"{base}/sub/b.log"
    assert resolve(roots, "logs", "stays") == f"{base}/app.log"  # symlink inside the root
    assert resolve(roots, "logs", "subdir-link/b.log") == f"{base}/sub/b.log"
    for missing in ("nope.log", "sub/nope", "leaves"):  # "leaves": a symlink out of the root
        with pytest.raises(NotFound, match="no such file: logs/"):
            resolve(roots, "logs", missing)
    with pytest.raises(BadRequest):
        resolve(roots, "logs", "../logs-secret/x")


def test_open_regular_file(roots: dict[str, str]) -> None:
    opened = open_regular_file(roots, "logs", "sub/b.log")
    try:
        info = os.stat(f"{roots['logs']}/sub/b.log")
        assert os.read(opened.fd, 100) == b"b"
        assert (opened.name, opened.size, opened.inode) == ("b.log", 1, info.st_ino)
        assert (opened.mtime, opened.mtime_ns) == (info.st_mtime, info.st_mtime_ns)
    finally:
        os.close(opened.fd)
    opened = open_regular_file(roots, "logs", "app.log")
    os.close(opened.fd)
    assert (opened.name, opened.size) == ("app.log", 10)
    opened = open_regular_file(roots, "logs", "sub/deep/c.log")
    os.close(opened.fd)
    assert (opened.name, opened.size) == ("c.log", 2)  # the last segment only


def test_open_refuses_what_is_not_a_regular_file_inside(roots: dict[str, str]) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(NotFound, match="not a regular file: logs/sub"):
        open_regular_file(roots, "logs", "sub")
    with pytest.raises(NotFound, match="not a regular file"):
        open_regular_file(roots, "logs", "")  # the root directory
    with pytest.raises(NotFound, match="no such file"):
        open_regular_file(roots, "logs", "leaves")
    assert len(os.listdir("/proc/self/fd")) == before  # nothing left open
