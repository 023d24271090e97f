"""Plain-text tables, and the per-node summary of a downloaded archive's ``status.json``.

Exit codes of ``fleetzip get`` come from here: 0 when every node is ``ok`` or ``skipped``
(a skipped node had nothing to send: no such root or path there, or no matching file) and
at least one node is ``ok``; 1 when any node is ``partial`` or ``failed``, when no node
delivered anything (all skipped), or when the status file cannot be read.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATUS_ENTRY = "_fleetzip/status.json"
STATUS_LIMIT = 256 * 1024 * 1024  # refuse to parse an absurd status file
EXIT_OK = 0
EXIT_INCOMPLETE = 1
GOOD_STATES = frozenset({"ok", "skipped"})
_NUMBER_RE = re.compile(r"^\d+(\.\d+)?( (B|KiB|MiB|GiB|TiB))?$")


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns left-aligned, numbers right-aligned, two spaces apart; no trailing blanks."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in cells:
        lines.append("  ".join(_align(text, widths[i]) for i, text in enumerate(row)).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return str(value).replace("\n", " ")


def _align(text: str, width: int) -> str:
    return text.rjust(width) if _is_number(text) else text.ljust(width)


def _is_number(text: str) -> bool:
    return bool(_NUMBER_RE.match(text))


def human_bytes(count: int | float) -> str:
    """1536 → ``1.5 KiB``; exact bytes below 1 KiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class NodeSummary:
    node: str
    state: str
    files: int
    bytes: int
    error: str | None


@dataclass(frozen=True)
class ArchiveSummary:
    nodes: tuple[NodeSummary, ...]
    started: str | None = None
    finished: str | None = None

    @property
    def exit_code(self) -> int:
        bad = any(node.state not in GOOD_STATES for node in self.nodes)
        delivered = any(node.state == "ok" for node in self.nodes)
        return EXIT_INCOMPLETE if bad or not delivered else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "finished": self.finished,
            "nodes": [asdict(node) for node in self.nodes],
        }


class StatusUnreadable(Exception):
    """The archive holds no usable ``_fleetzip/status.json``."""


def summarize(status: Mapping[str, Any]) -> ArchiveSummary:
    """The per-node summary of a parsed ``status.json`` (SPEC §4)."""
    nodes = status.get("nodes")
    if not isinstance(nodes, list):
        raise StatusUnreadable("status.json has no 'nodes' list")
    return ArchiveSummary(
        nodes=tuple(_node_summary(node) for node in nodes if isinstance(node, dict)),
        started=_text(status.get("started")),
        finished=_text(status.get("finished")),
    )


def _node_summary(node: Mapping[str, Any]) -> NodeSummary:
    files = node.get("files") if isinstance(node.get("files"), list) else []
    assert isinstance(files, list)
    total = sum(f.get("bytes") or 0 for f in files if isinstance(f, dict))
    return NodeSummary(
        node=str(node.get("node", "?")),
        state=str(node.get("state", "unknown")),
        files=len(files),
        bytes=int(total),
        error=_text(node.get("error")),
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def read_status(archive: Path) -> ArchiveSummary:
    """Summary of the status file inside the zip at *archive*; `StatusUnreadable` if none."""
    try:
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(STATUS_ENTRY)
            if info.file_size > STATUS_LIMIT:
                raise StatusUnreadable(f"{STATUS_ENTRY} is too large ({info.file_size} bytes)")
            with zf.open(info) as handle:
                status = json.load(handle)
    except KeyError:
        raise StatusUnreadable(f"the archive holds no {STATUS_ENTRY}") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise StatusUnreadable(f"cannot read {STATUS_ENTRY}: {exc}") from None
    if not isinstance(status, dict):
        raise StatusUnreadable(f"{STATUS_ENTRY} is not a JSON object")
    return summarize(status)


def node_table(summary: ArchiveSummary) -> str:
    rows = [
        (n.node, n.state, n.files, human_bytes(n.bytes), n.error) for n in summary.nodes
    ]
    return render_table(("NODE", "STATE", "FILES", "BYTES", "ERROR"), rows)
