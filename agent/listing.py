"""``GET /list/{root}[/{dir}]``: the files (and dirs) below a directory of a root.

Listing is split into plain functions — `compile_glob`, `parse_since`, `walk` — and a thin
handler. `walk` runs in an executor (it blocks on the file system). It never follows a
symlink out of the root and never descends into a symlinked directory (no loops); a
symlink to a file inside the root is listed with the target's size and time.

Entry paths are always relative to the root, even when a directory is listed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import stat
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from agent.paths import is_inside, resolve, root_dir
from common.config import parse_duration
from common.errors import BadRequest
from common.web import BaseHandler

MAX_GLOB_LENGTH = 1024


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the root
    size: int
    mtime: float
    type: str  # "file" or "dir"

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime": self.mtime, "type": self.type}


def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regex for a glob over ``/``-separated relative paths.

    ``*`` and ``?`` stay inside one segment, ``[...]`` is a character class, ``**`` as a
    whole segment matches any number of segments (none included). Raises ValueError.
    """
    if not pattern or len(pattern) > MAX_GLOB_LENGTH:
        raise ValueError("a glob must be 1 to 1024 characters")
    if pattern.startswith("/") or "\\" in pattern or "\x00" in pattern:
        raise ValueError("a glob is relative and uses '/' only")
    segments = pattern.split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise ValueError("a glob may not hold empty, '.' or '..' segments")
    parts: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(seg) + ("" if last else "/"))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def _segment_regex(seg: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(seg):
        ch = seg[i]
        if ch == "*":
            if seg.startswith("**", i):
                raise ValueError("'**' must be a whole path segment")
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = seg.find("]", i + 2 if seg[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                raise ValueError("unclosed '[' in glob")
            body = seg[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


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


def walk(real_root: str, directory: str, recursive: bool) -> Iterator[Entry]:
    """Files and dirs below *directory* (a real path inside *real_root*), sorted by path."""
    try:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for child in children:
        is_link = child.is_symlink()
        info = _stat_inside(real_root, child.path, is_link)
        if info is None or not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            continue
        yield _entry(real_root, child.path, info)
        if recursive and stat.S_ISDIR(info.st_mode) and not is_link:
            yield from walk(real_root, child.path, recursive)


def list_entries(
    real_roots: dict[str, str],
    root: str,
    directory: str,
    glob: re.Pattern[str] | None,
    recursive: bool,
    since: float | None,
) -> list[Entry]:
    """The listing (blocking: run it in an executor). Raises BadRequest / NotFound."""
    real_root = root_dir(real_roots, root)
    target = resolve(real_roots, root, directory)
    info = os.stat(target)
    if stat.S_ISREG(info.st_mode):
        found: Iterator[Entry] = iter([_entry(real_root, target, info)])
        base = os.path.dirname(target)
    else:
        found, base = walk(real_root, target, recursive), target
    result = []
    for entry in found:
        if since is not None and entry.mtime < since:
            continue
        if glob is not None:
            if entry.type != "file":
                continue  # a glob selects files; directories are only walked through
            if not glob.match(os.path.relpath(os.path.join(real_root, entry.path), base)):
                continue
        result.append(entry)
    return result


class ListHandler(BaseHandler):
    route = "list"
    protected = True

    async def get(self, root: str, directory: str | None = None) -> None:
        glob = self.glob_argument()
        since = self.since_argument()
        recursive = self.bool_argument("recursive") or _needs_recursion(
            self.get_argument("glob", "")
        )
        loop = asyncio.get_running_loop()
        executor: Executor | None = self.settings.get("file_executor")
        entries = await loop.run_in_executor(
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
                "entries": [entry.as_json() for entry in entries],
            }
        )

    def glob_argument(self) -> re.Pattern[str] | None:
        value = self.get_argument("glob", "")
        if not value:
            return None
        try:
            return compile_glob(value)
        except (ValueError, re.error) as exc:
            raise BadRequest(f"invalid glob {value!r}: {exc}", parameter="glob") from None

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


def _needs_recursion(glob: str) -> bool:
    return "/" in glob or "**" in glob
