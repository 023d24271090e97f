"""Resolve a request path below a root to a real, regular file — or refuse it.

Request paths are untrusted. A path is first checked as text (`check_request_path`: no
NUL or control character, no backslash, no leading ``/``, no ``.``/``..``/empty segment →
400), then resolved with `os.path.realpath` and kept only when the real path lies inside
the root's real path (`is_inside`: a real path comparison, so ``/data/logs-secret`` is not
inside ``/data/logs``). Symlinks may point anywhere inside their root; one that leaves it is
a 404, as is anything that is not a regular file.

Everything here blocks (stat, open): call it from an executor, never on the event loop.
The file is opened by its *real* path with ``O_NOFOLLOW`` and checked again on the open
descriptor: ``fstat`` says it is a regular file, and the kernel's own name for it
(``/proc/self/fd/N``) must still lie inside the root — so a directory swapped for a symlink
between the check and the open cannot make the agent serve a byte outside the root.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from common.errors import BadRequest, NotFound, UnknownRoot
from common.names import check_relative_path

MAX_PATH_LENGTH = 4096  # PATH_MAX on Linux; longer is malformed, not merely missing
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class OpenFile:
    """A regular file opened for reading; the caller closes `fd`."""

    fd: int
    name: str  # the last segment of the request path, for Content-Disposition
    size: int
    mtime: float
    mtime_ns: int
    inode: int
    device: int = 0  # st_dev: with the inode, which file this is


def check_request_path(path: str) -> str:
    """*path* if it is a clean relative path, else `BadRequest` saying why."""
    if len(path) > MAX_PATH_LENGTH:
        raise BadRequest("path too long", parameter="path")
    try:
        return check_relative_path(path)
    except ValueError as exc:
        raise BadRequest(f"invalid path: {exc}", parameter="path") from None


def is_inside(real_path: str, real_root: str) -> bool:
    """Whether *real_path* is *real_root* or below it (both already real paths)."""
    return real_path == real_root or real_path.startswith(real_root.rstrip("/") + "/")


def root_dir(real_roots: dict[str, str], root: str) -> str:
    """The real directory of root *root*, or `NotFound`."""
    try:
        return real_roots[root]
    except KeyError:
        raise UnknownRoot(f"no root named {root!r}") from None


def resolve(real_roots: dict[str, str], root: str, path: str) -> str:
    """The real path of *path* below *root*; `BadRequest` / `NotFound` when refused.

    An empty *path* is the root itself. The result exists and lies inside the root.
    """
    base = root_dir(real_roots, root)
    if path == "":
        return base
    check_request_path(path)
    try:
        real = os.path.realpath(os.path.join(base, path), strict=True)
    except (OSError, ValueError):
        raise NotFound(f"no such file: {root}/{path}") from None
    if not is_inside(real, base):
        raise NotFound(f"no such file: {root}/{path}")
    return real


def opened_path(fd: int, fallback: str) -> str:
    """The path the kernel has for open *fd* (Linux ``/proc``), else *fallback*."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return fallback


def open_regular_file(real_roots: dict[str, str], root: str, path: str) -> OpenFile:
    """Open the regular file *path* below *root* for reading (blocking: use an executor)."""
    real = resolve(real_roots, root, path)
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError:
        raise NotFound(f"no such file: {root}/{path}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotFound(f"not a regular file: {root}/{path}")
        if not is_inside(opened_path(fd, real), real_roots[root]):
            raise NotFound(f"no such file: {root}/{path}")
    except BaseException:
        os.close(fd)
        raise
    return OpenFile(
        fd=fd,
        name=path.rsplit("/", 1)[-1],
        size=info.st_size,
        mtime=info.st_mtime,
        mtime_ns=info.st_mtime_ns,
        inode=info.st_ino,
        device=info.st_dev,
    )
