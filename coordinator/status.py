"""The status files of a merged ZIP: what each node delivered, as JSON, a table and
``SHA256SUMS``, and the fixed sizes a sized archive reserves for them.

Plain values and renderers, no I/O: the pipeline (`coordinator.archive`) fills an
`ArchiveStatus` while it streams and renders the three files at the end. A sized archive
must know their size before the first byte, so `StatusReservation` renders the plan's worst
case (every run-time field at its longest) and the real files are padded with whitespace
to exactly that; error messages are clipped so they always fit.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import common
from coordinator.model import NodePlan, Plan

STATUS_DIR = "_fleetzip"
STATUS_JSON = f"{STATUS_DIR}/status.json"
STATUS_TXT = f"{STATUS_DIR}/status.txt"
SHA256SUMS = f"{STATUS_DIR}/SHA256SUMS"

# Error messages are clipped so the reserved status files can always hold them.
FILE_ERROR_LIMIT = 120
NODE_ERROR_LIMIT = 200
HOST_LIMIT = 64
RESUMED_MAX = 9999  # "resumed" is clamped to this many digits
DURATION_MAX = 999999.999  # seconds; clamped, rendered with 3 decimals at most

NodeState = Literal["ok", "partial", "failed", "skipped"]


# ---------------------------------------------------------------------------------------------
# Status: what each node delivered


@dataclass
class FileStatus:
    path: str  # relative to the root
    entry: str  # name inside the archive
    size: int  # planned
    bytes: int = 0  # real bytes received from the agent and written
    sha256: str | None = None  # of the source bytes; only for a complete, verified entry
    resumed: int = 0
    error: str | None = None
    included: bool = True  # False: left out of the archive (unsized mode only)
    done: bool = False  # the archive is past this entry

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "size": self.size, "bytes": self.bytes, "sha256": self.sha256,
            "resumed": min(self.resumed, RESUMED_MAX), "error": self.error,
        }

    @property
    def complete(self) -> bool:
        return self.error is None and self.bytes == self.size and self.included


@dataclass
class NodeStatus:
    node: str
    url: str
    state: NodeState = "ok"
    error: str | None = None
    duration_s: float = 0.0
    files: list[FileStatus] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # listed entries refused at plan time

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "node": self.node, "url": self.url, "state": self.state, "error": self.error,
            "duration_s": _duration(self.duration_s),
            "files": [f.as_dict() for f in self.files],
        }
        if self.rejected:  # known at plan time: the reserved size accounts for it
            found["rejected"] = self.rejected
        return found

    def settle(self) -> None:
        """Derive the node's state from its files (skipped nodes keep theirs)."""
        if self.state == "skipped" or (self.state == "failed" and not self.files):
            return
        if all(f.complete for f in self.files):
            self.state = "ok" if self.error is None else "partial"
        elif any(f.bytes > 0 or (f.size == 0 and f.error is None) for f in self.files):
            self.state = "partial"
        else:
            self.state = "failed"

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def files_done(self) -> int:
        return sum(1 for f in self.files if f.done)


@dataclass
class ArchiveStatus:
    request: dict[str, Any]
    host: str
    started: float
    nodes: list[NodeStatus]
    finished: float | None = None
    version: str = common.__version__

    @classmethod
    def from_plan(cls, plan: Plan, *, started: float, host: str | None = None) -> ArchiveStatus:
        nodes = [_node_status(node) for node in plan.nodes]
        nodes += [
            NodeStatus(s.name, s.url, s.state, clip_error(s.error, NODE_ERROR_LIMIT))
            for s in plan.skipped
        ]
        host = (host or socket.gethostname())[:HOST_LIMIT]
        return cls(plan.selection.as_dict(), host, started, nodes)

    def files(self) -> Iterator[FileStatus]:
        for node in self.nodes:
            yield from node.files

    def as_dict(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "coordinator": {"version": self.version, "host": self.host},
            "started": iso_time(self.started),
            "finished": iso_time(self.finished) if self.finished is not None else None,
            "nodes": [n.as_dict() for n in self.nodes],
        }


def _node_status(node: NodePlan) -> NodeStatus:
    files = [FileStatus(f.path, node.entry_name(f), f.size) for f in node.files]
    rejected = [clip_error(r, FILE_ERROR_LIMIT) or "" for r in node.rejected]
    return NodeStatus(node.agent.name, node.agent.url, files=files, rejected=rejected)


def clip_error(message: str | None, limit: int) -> str | None:
    """*message* as printable ASCII without quotes or backslashes, at most *limit* chars.

    Each character then takes exactly one byte in JSON and in the text table, which is what
    lets the status files be reserved at a fixed size.
    """
    if message is None:
        return None
    safe = "".join(_safe_char(ch) for ch in message)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def _safe_char(ch: str) -> str:
    if ch == '"':
        return "'"
    if ch == "\\":
        return "/"
    return ch if 32 <= ord(ch) < 127 else "?"


def iso_time(ts: float) -> str:
    """Fixed-width UTC time, ``2024-05-01T12:00:00.000Z`` (always 24 characters)."""
    stamp = datetime.fromtimestamp(ts, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _duration(seconds: float) -> float:
    return round(min(max(seconds, 0.0), DURATION_MAX), 3)


# ---------------------------------------------------------------------------------------------
# Rendering the status files


def render_status_json(status: ArchiveStatus) -> bytes:
    return (json.dumps(status.as_dict(), indent=1) + "\n").encode("utf-8")


@dataclass(frozen=True)
class _Widths:
    node: int
    path: int
    digits: int


def _widths(status: ArchiveStatus) -> _Widths:
    """Column widths from the plan alone, so worst-case and real renders align the same."""
    nodes = [len(n.node) for n in status.nodes] + [4]
    paths = [len(f.path) for f in status.files()] + [4]
    digits = [len(str(f.size)) for f in status.files()] + [5]
    return _Widths(max(nodes), max(paths), max(digits))


def render_status_txt(status: ArchiveStatus) -> bytes:
    w = _widths(status)
    finished = iso_time(status.finished) if status.finished is not None else "-" * 24
    lines = [
        "fleetzip archive status",
        f"request:     {json.dumps(status.request, sort_keys=True)}",
        f"coordinator: {status.host} (fleetzip {status.version})",
        f"started:     {iso_time(status.started)}",
        f"finished:    {finished}",
        "",
        f"{'NODE':<{w.node}}  {'STATE':<7}  {'FILES':>13}  {'BYTES':>{w.digits + 8}}  "
        f"{'SECONDS':>10}  ERROR",
    ]
    for node in status.nodes:
        lines.append(_node_line(node, w))
    lines += ["", f"{'NODE':<{w.node}}  {'PATH':<{w.path}}  {'SIZE':>{w.digits}}  "
              f"{'BYTES':>{w.digits}}  {'RESUMED':>7}  {'SHA256':<64}  ERROR"]
    for node in status.nodes:
        lines += [_file_line(node.node, f, w) for f in node.files]
    refused = [f"{node.node:<{w.node}}  {reason}" for node in status.nodes
               for reason in node.rejected]
    if refused:
        lines += ["", f"{'NODE':<{w.node}}  LISTED ENTRY REFUSED", *refused]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _node_line(node: NodeStatus, w: _Widths) -> str:
    files = f"{node.files_done}/{len(node.files)}"
    return (
        f"{node.node:<{w.node}}  {node.state:<7}  {files:>13}  {node.bytes:>{w.digits + 8}}  "
        f"{_duration(node.duration_s):>10.3f}  {node.error or ''}"
    )


def _file_line(node: str, f: FileStatus, w: _Widths) -> str:
    return (
        f"{node:<{w.node}}  {f.path:<{w.path}}  {f.size:>{w.digits}}  {f.bytes:>{w.digits}}  "
        f"{min(f.resumed, RESUMED_MAX):>7}  {f.sha256 or '-':<64}  {f.error or ''}"
    )


NO_HASH = "0" * 64  # listed for an entry that is not its source file: no file has this hash


def render_sha256sums(status: ArchiveStatus) -> bytes:
    """``<sha256>  <entry>`` for every entry in the archive (`sha256sum -c` format).

    An entry that is not a true copy of its source (partial, padded, corrupt) is listed
    with `NO_HASH`, so ``sha256sum -c`` reports exactly those files as FAILED; the status
    files say why. A complete entry whose hash is not known (its agent could not give it) is
    not listed.
    """
    lines = [f"{f.sha256 or NO_HASH}  {f.entry}\n" for f in status.files()
             if f.included and (f.sha256 is not None or not f.complete)]
    return "".join(lines).encode("utf-8")


def worst_case(status: ArchiveStatus) -> ArchiveStatus:
    """The same plan with every run-time field at its longest possible value."""
    nodes = []
    for node in status.nodes:
        files = [
            FileStatus(f.path, f.entry, f.size, f.size, "0" * 64, RESUMED_MAX,
                       "x" * FILE_ERROR_LIMIT)
            for f in node.files
        ]
        nodes.append(NodeStatus(node.node, node.url, "partial", "x" * NODE_ERROR_LIMIT,
                                DURATION_MAX, files, node.rejected))
    return ArchiveStatus(status.request, "h" * HOST_LIMIT, status.started, nodes,
                         finished=status.started, version=status.version)


@dataclass(frozen=True)
class StatusReservation:
    """Fixed sizes of the three status files of a sized archive."""

    json: int
    txt: int
    sums: int

    @classmethod
    def for_status(cls, status: ArchiveStatus) -> StatusReservation:
        worst = worst_case(status)
        return cls(len(render_status_json(worst)), len(render_status_txt(worst)),
                   len(render_sha256sums(worst)))


def pad(content: bytes, size: int, filler: bytes = b" ") -> bytes:
    """*content* padded with *filler* (whitespace) to exactly *size* bytes."""
    if len(content) > size:  # cannot happen: reservations are worst cases
        raise ValueError(f"status content of {len(content)} bytes exceeds its {size}")
    missing = size - len(content)
    return content + (filler * missing)[:missing]
