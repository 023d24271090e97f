"""An agent's ``/list`` answer, checked field by field before anything is planned from it.

Agents are untrusted: one rogue or broken agent must cost its own node, never the fleet.
Every entry is checked on its own; a bad one is refused with a reason (recorded for that
node in the plan and the status files) and the rest of the listing goes on:

* ``path``: a string that passes `common.names.check_relative_path`, inside the requested
  path, listed once;
* ``type``: a string (``file``; anything else is not an archive entry and is left out);
* ``size``: an int (not a bool) in 0 … 2**63-1 — ZIP64 sizes are unsigned 64-bit, and a
  Python ``len()`` of the archive must fit ``ssize_t``; 2**64 once raised OverflowError in
  the size arithmetic and failed every node's plan and download with a 500;
* ``mtime``: a finite int or float within years 1 … 9999 — ``NaN`` once made ``/api/plan``
  emit invalid JSON, and dates outside that range cannot be rendered.

A node's entries together are bounded as well (`MAX_NODE_BYTES`, see `Planner.plan`): two
entries of 2**63-1 bytes are each valid, and their sum is not an archive.
"""

from __future__ import annotations

import math
from typing import Any

from common.names import check_relative_path
from coordinator.model import PlannedFile

MAX_SIZE = 2**63 - 1  # largest file size an agent may list (signed 64-bit, as st_size)
MAX_TOTAL_BYTES = 2**62  # all files of one archive together: room left for headers below 2**63
MIN_MTIME = -62135596800.0  # 0001-01-01T00:00:00Z
MAX_MTIME = 253402300799.0  # 9999-12-31T23:59:59Z
MAX_REJECTED_KEPT = 20  # refusal reasons kept per node; the count is kept in full


def checked_entries(body: Any, within: str | None) -> tuple[list[PlannedFile], list[str]]:
    """(the safe file entries sorted by path, why others were refused).

    At most `MAX_REJECTED_KEPT` reasons are kept, then one line counting the rest.
    """
    entries = body.get("entries") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return [], ["the listing has no 'entries' list"]
    files: list[PlannedFile] = []
    rejected: list[str] = []
    refused = 0
    seen: set[str] = set()
    for entry in entries:
        try:
            planned = checked_entry(entry, within)
            if planned is not None and planned.path in seen:
                raise ValueError(f"{planned.path!r}: listed twice")
        except ValueError as exc:
            refused += 1
            if len(rejected) < MAX_REJECTED_KEPT:
                rejected.append(str(exc))
            continue
        if planned is not None:
            seen.add(planned.path)
            files.append(planned)
    files.sort(key=lambda f: f.path)
    if refused > len(rejected):
        rejected.append(f"... and {refused - len(rejected)} more refused entries")
    return files, rejected


def checked_entry(entry: Any, within: str | None) -> PlannedFile | None:
    """The `PlannedFile` of one listed entry, None for a directory; ValueError saying why
    it is refused."""
    if not isinstance(entry, dict):
        raise ValueError("an entry is not an object")
    path = checked_path(entry.get("path"), within)
    kind = entry.get("type", "file")
    if not isinstance(kind, str):
        raise ValueError(f"{path!r}: type {_short(kind)} is not a string")
    if kind != "file":
        return None  # directories are not archive entries
    return PlannedFile(path, checked_size(path, entry.get("size")),
                       checked_mtime(path, entry.get("mtime")))


def checked_path(path: Any, within: str | None) -> str:
    if not isinstance(path, str):
        raise ValueError(f"entry path {_short(path)} is not a string")
    try:
        check_relative_path(path)
    except ValueError as exc:
        raise ValueError(f"{_short(path)}: {exc}") from None
    if within and path != within and not path.startswith(within + "/"):
        raise ValueError(f"{_short(path)}: outside the requested path {within!r}")
    return path


def checked_size(path: str, size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        raise ValueError(f"{_short(path)}: size {_short(size)} is not an integer in "
                         f"0..{MAX_SIZE}")
    return size


def checked_mtime(path: str, mtime: Any) -> float:
    if isinstance(mtime, bool) or not isinstance(mtime, int | float):
        raise ValueError(f"{_short(path)}: mtime {_short(mtime)} is not a number")
    if not (math.isfinite(mtime) and MIN_MTIME <= mtime <= MAX_MTIME):
        raise ValueError(f"{_short(path)}: mtime {_short(mtime)} is not a time in years "
                         "1..9999")
    return float(mtime)


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to *limit* characters (a listed value can be megabytes long)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
