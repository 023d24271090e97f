"""The status files of a merged ZIP, as plain values: node states, renderings, reservations."""

from __future__ import annotations

import json
import time

from coordinator.model import AgentRef, NodePlan, Plan, PlannedFile, Selection, SkippedNode
from coordinator.status import ArchiveStatus, NodeStatus, render_status_json, render_status_txt


def plan_of(sizes: dict[str, list[int]], skipped: tuple[SkippedNode, ...] = ()) -> Plan:
    nodes = tuple(
        NodePlan(AgentRef(node, f"http://127.0.0.{i + 2}:8701"), "logs",
                 tuple(PlannedFile(f"f{j}.log", size, 0.0) for j, size in enumerate(files)))
        for i, (node, files) in enumerate(sizes.items()))
    return Plan(Selection(root="logs"), nodes, skipped, created=time.time())


def delivered(node: NodeStatus, *received: int) -> NodeStatus:
    """*node* with each file received up to the given byte count and hashed."""
    for f, count in zip(node.files, received, strict=True):
        f.bytes = count
        f.sha256 = "0" * 64
    return node


def test_node_error_with_every_file_complete_reads_partial() -> None:
    """A node-level error is never hidden behind complete files: the node is partial."""
    status = ArchiveStatus.from_plan(plan_of({"n1": [10, 0], "n2": [10]}), started=0.0,
                                     host="h")
    n1, n2 = status.nodes
    delivered(n1, 10, 0)
    delivered(n2, 10)
    n1.error = "node down after its last file (health poll)"
    for node in status.nodes:
        node.settle()
    assert (n1.state, n2.state) == ("partial", "ok")
    document = json.loads(render_status_json(status))
    assert [(n["node"], n["state"]) for n in document["nodes"]] == [("n1", "partial"),
                                                                    ("n2", "ok")]
    table = render_status_txt(status).decode()
    assert [line.split()[:2] for line in table.splitlines()[7:9]] == [["n1", "partial"],
                                                                      ["n2", "ok"]], table
