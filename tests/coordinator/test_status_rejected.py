"""Listed entries refused at plan time in the status files: ``rejected`` in status.json (only
for a node that has some), the "LISTED ENTRY REFUSED" table at the end of status.txt, each
reason clipped like any error, and the reserved sizes still exact when they are there."""

from __future__ import annotations

import json

from coordinator.model import AgentRef, NodePlan, Plan, PlannedFile, Selection
from coordinator.status import (
    FILE_ERROR_LIMIT,
    NODE_ERROR_LIMIT,
    ArchiveStatus,
    StatusReservation,
    clip_error,
    render_sha256sums,
    render_status_json,
    render_status_txt,
)

REASON = "refused 'sub-secret/x': outside the requested path"


def status_of(rejected: dict[str, tuple[str, ...]], host: str = "h") -> ArchiveStatus:
    nodes = tuple(NodePlan(AgentRef(name, f"http://127.0.0.1:1/{name}"), "logs",
                           (PlannedFile("f.log", 3, 0.0),), reasons)
                  for name, reasons in rejected.items())
    return ArchiveStatus.from_plan(Plan(Selection("logs"), nodes), started=0.0, host=host)


def test_refused_entries_are_listed_per_node_in_status_json() -> None:
    long = "r" * 300 + "\u00e9\""
    status = status_of({"a": (REASON, long), "node-2": ()})
    body = json.loads(render_status_json(status))
    first, second = body["nodes"]
    assert first["rejected"] == [REASON, clip_error(long, FILE_ERROR_LIMIT)]
    assert len(first["rejected"][1]) == FILE_ERROR_LIMIT and first["rejected"][1].endswith(
        "...")
    assert "rejected" not in second  # no refusals: no key


def test_refused_entries_end_status_txt_in_their_own_table() -> None:
    status = status_of({"a": (REASON, "second reason"), "node-2": ("third",)})
    lines = render_status_txt(status).decode().splitlines()
    assert lines[-5:] == ["", "NODE    LISTED ENTRY REFUSED", f"a       {REASON}",
                          "a       second reason", "node-2  third"]
    assert render_status_txt(status).endswith(b"node-2  third\n")
    # the rest is the status of the same nodes without refusals
    plain = render_status_txt(status_of({"a": (), "node-2": ()})).decode().splitlines()
    assert lines[:-5] == plain and plain[0] == "fleetzip archive status"


def test_without_refused_entries_there_is_no_refused_table() -> None:
    text = render_status_txt(status_of({"a": ()})).decode()
    assert "LISTED ENTRY REFUSED" not in text
    assert text.splitlines()[-1].startswith("a     f.log ")


def test_reservation_is_exact_with_refused_entries() -> None:
    """The refusals are known at plan time; the worst case keeps them, so the reserved
    sizes stay exact when every run-time field is at its longest."""
    status = status_of({"node-1": (REASON, "x" * 500), "n2": ("y",)}, host="x" * 80)
    reserved = StatusReservation.for_status(status)
    for node in status.nodes:
        for f in node.files:
            f.bytes, f.sha256, f.resumed = f.size, "9" * 64, 10**6
            f.error = clip_error("e" * 500, FILE_ERROR_LIMIT)
        node.error = clip_error("n" * 500, NODE_ERROR_LIMIT)
        node.duration_s = 10**9
        node.settle()
    status.finished = 1.0
    assert (len(render_status_json(status)), len(render_status_txt(status)),
            len(render_sha256sums(status))) == (reserved.json, reserved.txt, reserved.sums)
