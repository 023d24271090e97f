"""``GET /list/{root}[/{dir}]``: the files (and dirs) below a directory of a root.

Listing is split into plain functions — `parse_since`, `walk`, `list_entries` — and a thin
handler; globs are `common.globs` (linear-time, shared with the coordinator). `walk` runs in
an executor (it blocks on the file system). It never follows a symlink out of the root and
never descends into a symlinked directory (no loops); a symlink to a file inside the root is
listed with the target's size and time. It is iterative and stops `MAX_WALK_DEPTH` levels
down; directories it did not enter (too deep, unreadable) are answered in ``skipped``.

Entry paths are always relative to the root, even when a directory is listed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import stat
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from agent.paths import is_inside, resolve, root_dir
from common.config import parse_duration
from common.errors import BadRequest
from common.globs import Glob, GlobError, compile_glob
from common.web import BaseHandler

# Levels below the listed directory that a recursive listing descends. Far deeper than any
# real log tree, and bounded so a hostile or broken tree (issue 11, S10: > 1000 levels) costs
# a bounded walk; deeper directories are reported in ``skipped`` instead of failing.
MAX_WALK_DEPTH = 128


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the root
    size: int
    mtime: float
    type: str  # "file" or "dir"

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime": self.mtime, "type": self.type}


def parse_since(value: str, now: float | None = None) -> float:
    """Epoch seconds from epoch seconds, an ISO 8601 time or a duration ago. Raises ValueError."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is not None:
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    ago = parse_duration(text)  # ValueError when it is none of the three
    return (time.time() if now is None else now) - ago


def _entry(real_root: str, path: str, info: os.stat_result) -> Entry:
    kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
    rel = os.path.relpath(path, real_root)
    return Entry(rel, info.st_size if kind == "file" else 0, info.st_mtime, kind)


def _stat_inside(real_root: str, path: str, is_link: bool) -> os.stat_result | None:
    """The stat of *path* (followed), or None if it leaves the root or is gone."""
    try:
        if is_link and not is_inside(os.path.realpath(path), real_root):
            return None
        return os.stat(path)
    except OSError:
        return None


@dataclass(frozen=True)
class Skipped:
    """A directory a recursive listing did not look into, and why.

    ``too_deep``: it lies `MAX_WALK_DEPTH` levels below the listed directory;
    ``unreadable``: it could not be read (permissions, gone, name too long).
    """

    path: str  # relative to the root ("." for the root itself)
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class Listing:
    entries: list[Entry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _children(real_root: str, directory: str, skipped: list[Skipped]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        skipped.append(Skipped(os.path.relpath(directory, real_root), "unreadable"))
        return []


def walk(
    real_root: str,
    directory: str,
    recursive: bool,
    skipped: list[Skipped],
    max_depth: int = MAX_WALK_DEPTH,
) -> Iterator[Entry]:
    """Files and dirs below *directory* (a real path inside *real_root*), depth first.

    Iterative (a stack of sibling lists, no recursion), names sorted in each directory. A
    directory *max_depth* levels below *directory* is listed but not entered; it and every
    directory that cannot be read are appended to *skipped*.
    """
    stack = [iter(_children(real_root, directory, skipped))]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            continue
        is_link = child.is_symlink()
        info = _stat_inside(real_root, child.path, is_link)
        if info is None or not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            continue
        entry = _entry(real_root, child.path, info)
        yield entry
        if recursive and stat.S_ISDIR(info.st_mode) and not is_link:
            if len(stack) >= max_depth:
                skipped.append(Skipped(entry.path, "too_deep"))
            else:
                stack.append(iter(_children(real_root, child.path, skipped)))


def list_entries(
    real_roots: dict[str, str],
    root: str,
    directory: str,
    glob: Glob | None,
    recursive: bool,
    since: float | None,
) -> Listing:
    """The listing (blocking: run it in an executor). Raises BadRequest / NotFound."""
    real_root = root_dir(real_roots, root)
    target = resolve(real_roots, root, directory)
    info = os.stat(target)
    listing = Listing()
    if stat.S_ISREG(info.st_mode):
        found: Iterator[Entry] = iter([_entry(real_root, target, info)])
        base = os.path.dirname(target)
    else:
        found, base = walk(real_root, target, recursive, listing.skipped), target
    for entry in found:
        if since is not None and entry.mtime < since:
            continue
        if glob is not None:
            if entry.type != "file":
                continue  # a glob selects files; directories are only walked through
            if not glob.match(os.path.relpath(os.path.join(real_root, entry.path), base)):
                continue
        listing.entries.append(entry)
    return listing


class ListHandler(BaseHandler):
    route = "list"
    protected = True

    async def get(self, root: str, directory: str | None = None) -> None:
        glob = self.glob_argument()
        since = self.since_argument()
        recursive = self.bool_argument("recursive") or (glob is not None and glob.recursive)
        loop = asyncio.get_running_loop()
        executor: Executor | None = self.settings.get("file_executor")
        listing = await loop.run_in_executor(
            executor,
            list_entries,
            self.settings["real_roots"],
            root,
            (directory or "").strip("/"),
            glob,
            recursive,
            since,
        )
        self.write_json(
            {
                "node": self.settings["node"],
                "root": root,
                "entries": [entry.as_json() for entry in listing.entries],
                "skipped": [skipped.as_json() for skipped in listing.skipped],
            }
        )

    def glob_argument(self) -> Glob | None:
        value = self.get_argument("glob", "")
        if not value:
            return None
        try:
            return compile_glob(value)
        except GlobError as exc:
            raise BadRequest(f"invalid glob: {exc}", parameter="glob") from None

    def since_argument(self) -> float | None:
        value = self.get_argument("since", "")
        if not value:
            return None
        try:
            return parse_since(value)
        except ValueError:
            raise BadRequest(
                f"invalid since {value!r}: use epoch seconds, an ISO 8601 time or a duration "
                "like 2h",
                parameter="since",
            ) from None

    def bool_argument(self, name: str) -> bool:
        value = self.get_argument(name, "").lower()
        if value in ("", "0", "false", "no", "off"):
            return False
        if value in ("1", "true", "yes", "on"):
            return True
        raise BadRequest(f"invalid {name} {value!r}: use true or false", parameter=name)

