"""Values passed between discovery, planning and streaming. Plain, frozen, no I/O.

    Selection ──planner──▶ Plan(nodes: NodePlan[PlannedFile], skipped: SkippedNode)
                                 │
                                 └──archive──▶ the merged ZIP + status files

The entry name of a planned file is ``{node}/{root}/{path}`` (`PlannedFile.path` has been
checked by `common.names.check_relative_path`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Compression = Literal["stored", "deflate"]
Source = Literal["static", "file", "registered"]


@dataclass(frozen=True)
class AgentRef:
    """An agent as discovery knows it."""

    name: str
    url: str  # base URL, no trailing slash, e.g. "http://127.0.0.2:8701"
    labels: Mapping[str, str] = field(default_factory=dict)
    source: Source = "static"


@dataclass(frozen=True)
class Selection:
    """What an operator asked for (the query of /api/plan and /api/download)."""

    root: str
    path: str | None = None  # a file or a directory below the root
    glob: str | None = None  # relative to the root (or to `path`), "**" allowed
    since: float | None = None  # epoch seconds: only files modified at or after it
    nodes: tuple[str, ...] = ()  # empty: every node
    labels: Mapping[str, str] = field(default_factory=dict)
    compression: Compression = "stored"
    name: str | None = None  # archive file name

    def as_dict(self) -> dict[str, object]:
        return {
            "root": self.root, "path": self.path, "glob": self.glob, "since": self.since,
            "nodes": list(self.nodes), "labels": dict(self.labels),
            "compression": self.compression, "name": self.name,
        }


@dataclass(frozen=True)
class PlannedFile:
    path: str  # relative to the root
    size: int  # bytes at plan time: what a sized archive promises
    mtime: float
    etag: str | None = None  # the agent's ETag when the plan knows it: If-Range of resumes


@dataclass(frozen=True)
class NodePlan:
    agent: AgentRef
    root: str
    files: tuple[PlannedFile, ...]
    rejected: tuple[str, ...] = ()  # unsafe or malformed entries the agent listed, and why
    # The agent's features when planned ("checksum": CRC-32 before the data, so stored entries
    # need no data descriptor; "deflate": it compresses). They decide the archive's layout.
    features: frozenset[str] = frozenset()

    def entry_name(self, file: PlannedFile) -> str:
        return f"{self.agent.name}/{self.root}/{file.path}"

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class SkippedNode:
    """A selected node that cannot take part, and why (recorded in the status files)."""

    name: str
    url: str
    state: Literal["failed", "skipped"]  # failed: it broke; skipped: nothing to send
    error: str


@dataclass(frozen=True)
class Plan:
    selection: Selection
    nodes: tuple[NodePlan, ...]
    skipped: tuple[SkippedNode, ...] = ()
    created: float = 0.0  # epoch seconds

    @property
    def file_count(self) -> int:
        return sum(len(node.files) for node in self.nodes)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for node in self.nodes for f in node.files)
