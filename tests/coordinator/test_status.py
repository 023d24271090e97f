"""The status files of a merged ZIP, as plain values: node states, renderings, reservations."""

from __future__ import annotations

import json
import socket
import time

import pytest

import common
from coordinator.model import AgentRef, NodePlan, Plan, PlannedFile, Selection, SkippedNode
from coordinator.status import (
    DURATION_MAX,
    FILE_ERROR_LIMIT,
    HOST_LIMIT,
    NODE_ERROR_LIMIT,
    RESUMED_MAX,
    ArchiveStatus,
    NodeStatus,
    StatusReservation,
    clip_error,
    iso_time,
    pad,
    render_sha256sums,
    render_status_json,
    render_status_txt,
    worst_case,
)


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


def test_node_states_follow_what_the_files_delivered() -> None:
    def settled(node: NodeStatus) -> str:
        node.settle()
        return node.state

    status = ArchiveStatus.from_plan(plan_of({"a": [10, 5], "b": [10, 5], "c": [10, 0],
                                              "d": [10], "e": [0]}), started=0.0, host="h")
    a, b, c, d, e = status.nodes
    assert settled(delivered(a, 10, 5)) == "ok"
    b.files[0].bytes = 10
    b.files[0].sha256 = "0" * 64
    b.files[1].error = "gone"
    assert settled(b) == "partial"  # some bytes arrived
    c.files[0].error = "refused"
    assert settled(c) == "partial"  # the empty file is complete without a byte
    c.files[1].error = "refused"
    c.state = "ok"
    assert settled(c) == "failed"  # nothing at all
    delivered(d, 9)
    assert settled(d) == "partial"  # one byte short
    d.files[0].bytes = 10
    d.files[0].included = False
    d.state = "ok"
    assert settled(d) == "partial"  # left out of an unsized archive
    assert settled(delivered(e, 0)) == "ok"


def test_skipped_and_failed_nodes_without_files_keep_their_state() -> None:
    skipped = (SkippedNode("s", "http://s", "skipped", "no matching files"),
               SkippedNode("f", "http://f", "failed", "connection refused"))
    status = ArchiveStatus.from_plan(plan_of({}, skipped), started=0.0, host="h")
    for node in status.nodes:
        node.settle()
    assert [(n.node, n.state, n.error) for n in status.nodes] == [
        ("s", "skipped", "no matching files"), ("f", "failed", "connection refused")]


def test_files_done_counts_the_entries_the_archive_is_past() -> None:
    node = ArchiveStatus.from_plan(plan_of({"n": [1, 2, 3]}), started=0.0, host="h").nodes[0]
    assert node.files_done == 0
    node.files[0].sha256 = "a" * 64  # a hash alone does not finish an entry
    assert node.files_done == 0
    node.files[0].done = True
    node.files[1].included, node.files[1].done = False, True  # left out, and passed
    assert node.files_done == 2
    node.files[0].bytes, node.files[2].bytes = 1, 2
    assert node.bytes == 3


def test_status_json_document() -> None:
    skipped = (SkippedNode("down", "http://x", "failed", 'bad "quote"\\ \x01 é'),)
    status = ArchiveStatus.from_plan(plan_of({"n1": [10]}, skipped), started=1_700_000_000.25,
                                     host="coord-1")
    f = status.nodes[0].files[0]
    f.bytes, f.sha256, f.resumed, f.error = 10, "ab" * 32, 12_345, None
    status.nodes[0].duration_s = 1.23456
    status.finished = 1_700_000_001.0
    document = json.loads(render_status_json(status))
    assert document == {
        "request": Selection(root="logs").as_dict(),
        "coordinator": {"version": common.__version__, "host": "coord-1"},
        "started": "2023-11-14T22:13:20.250Z",
        "finished": "2023-11-14T22:13:21.000Z",
        "nodes": [
            {"node": "n1", "url": "http://127.0.0.2:8701", "state": "ok", "error": None,
             "duration_s": 1.235, "files": [
                 {"path": "f0.log", "size": 10, "bytes": 10, "sha256": "ab" * 32,
                  "resumed": RESUMED_MAX, "error": None}]},
            {"node": "down", "url": "http://x", "state": "failed",
             "error": "bad 'quote'/ ? ?", "duration_s": 0.0, "files": []},
        ],
    }
    assert render_status_json(status).endswith(b"}\n")
    status.finished = None
    assert json.loads(render_status_json(status))["finished"] is None


def test_clip_error() -> None:
    assert clip_error(None, 10) is None
    assert clip_error("", 10) == ""
    assert clip_error("x" * 10, 10) == "x" * 10
    assert clip_error("x" * 11, 10) == "xxxxxxx..."
    assert clip_error('a"b\\c\td~\x7f', 20) == "a'b/c?d~?"
    assert clip_error(" !~", 3) == " !~"  # the printable edges stay


def test_iso_time_is_fixed_width_utc_with_milliseconds() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1_700_000_000.999) == "2023-11-14T22:13:20.999Z"
    assert iso_time(1_700_000_000.0005) == "2023-11-14T22:13:20.000Z"  # truncated, not rounded


def test_status_txt_layout() -> None:
    plan = plan_of({"node-1": [123456, 0]})
    status = ArchiveStatus.from_plan(plan, started=1_700_000_000.0, host="c")
    node = status.nodes[0]
    node.files[0].bytes, node.files[0].sha256, node.files[0].resumed = 123456, "f" * 64, 2
    node.files[0].done = True
    node.files[1].error = "boom"
    node.duration_s = 2.5
    node.settle()
    lines = render_status_txt(status).decode().splitlines()
    assert lines[:6] == [
        "fleetzip archive status",
        "request:     " + json.dumps(Selection(root="logs").as_dict(), sort_keys=True),
        f"coordinator: c (fleetzip {common.__version__})",
        "started:     2023-11-14T22:13:20.000Z",
        "finished:    " + "-" * 24,
        "",
    ]
    widths = 6, 7, 13, 6 + 8, 10  # node, state, files, bytes (digits + 8), seconds
    assert lines[6] == "  ".join(["NODE".ljust(widths[0]), "STATE".ljust(widths[1]),
                                  "FILES".rjust(widths[2]), "BYTES".rjust(widths[3]),
                                  "SECONDS".rjust(widths[4]), "ERROR"])
    assert lines[7] == "  ".join(["node-1", "partial", "1/2".rjust(13), "123456".rjust(14),
                                  "2.500".rjust(10), ""])
    assert lines[8] == ""
    assert lines[9] == "  ".join(["NODE  ", "PATH  ", "  SIZE", " BYTES", "RESUMED",
                                  "SHA256".ljust(64), "ERROR"])
    assert lines[10] == "  ".join(["node-1", "f0.log", "123456", "123456", "      2", "f" * 64,
                                   ""])
    assert lines[11] == "  ".join(["node-1", "f1.log", "     0", "     0", "      0",
                                   "-".ljust(64), "boom"])
    assert len(lines) == 12


def test_sha256sums_lists_hashed_entries_in_sha256sum_format() -> None:
    """Complete entries with their hash; an entry that is not a true copy (here n1's f1,
    never received) with the all-zero hash, so ``sha256sum -c`` flags exactly it; a
    complete entry whose hash is unknown (n2's f1) is not listed."""
    status = ArchiveStatus.from_plan(plan_of({"n1": [1, 2], "n2": [3, 4]}), started=0.0,
                                     host="h")
    (a, short), (b, unhashed) = status.nodes[0].files, status.nodes[1].files
    a.bytes, a.sha256 = 1, "a" * 64
    b.bytes, b.sha256 = 3, "b" * 64
    unhashed.bytes = 4
    short.bytes = 1
    assert render_sha256sums(status) == (
        f"{'a' * 64}  n1/logs/f0.log\n{'0' * 64}  n1/logs/f1.log\n"
        f"{'b' * 64}  n2/logs/f0.log\n").encode()


def test_reservation_is_the_worst_case_and_real_files_pad_to_it() -> None:
    status = ArchiveStatus.from_plan(plan_of({"n1": [10, 99999]}), started=0.0, host="h")
    reserved = StatusReservation.for_status(status)
    worst = worst_case(status)
    assert worst.host == "h" * HOST_LIMIT
    node = worst.nodes[0]
    assert (node.state, node.error, node.duration_s) == (
        "partial", "x" * NODE_ERROR_LIMIT, DURATION_MAX)
    assert [(f.bytes, f.sha256, f.resumed, f.error) for f in node.files] == [
        (f.size, "0" * 64, RESUMED_MAX, "x" * FILE_ERROR_LIMIT) for f in node.files]
    assert (reserved.json, reserved.txt, reserved.sums) == (
        len(render_status_json(worst)), len(render_status_txt(worst)),
        len(render_sha256sums(worst)))
    node = status.nodes[0]
    for f in node.files:
        f.bytes, f.sha256, f.resumed = f.size, "c" * 64, 3
    node.files[1].error = clip_error("e" * 500, FILE_ERROR_LIMIT)
    node.error = clip_error("n" * 500, NODE_ERROR_LIMIT)
    node.duration_s = 10**9
    node.settle()
    status.finished = 10.0
    for render, size in ((render_status_json, reserved.json), (render_status_txt, reserved.txt),
                         (render_sha256sums, reserved.sums)):
        assert len(render(status)) <= size


def test_pad() -> None:
    assert pad(b"ab", 5) == b"ab   "
    assert pad(b"ab", 5, b"\n") == b"ab\n\n\n"
    assert pad(b"ab", 2) == b"ab"
    with pytest.raises(ValueError, match="status content of 3 bytes exceeds its 2"):
        pad(b"abc", 2)


def test_durations_are_clamped_and_rounded() -> None:
    status = ArchiveStatus.from_plan(plan_of({"a": [1], "b": [1], "c": [1]}), started=0.0,
                                     host="h")
    for node, seconds in zip(status.nodes, (-5.0, 0.12345, 10**9), strict=True):
        node.duration_s = seconds
    assert [n["duration_s"] for n in json.loads(render_status_json(status))["nodes"]] == [
        0.0, 0.123, DURATION_MAX]


def test_host_is_clipped_and_defaults_to_this_machine() -> None:
    assert ArchiveStatus.from_plan(plan_of({}), started=0.0, host="h" * 100).host == "h" * 64
    assert ArchiveStatus.from_plan(plan_of({}), started=0.0).host == (
        socket.gethostname()[:HOST_LIMIT])


def test_state_is_derived_again_on_each_settle() -> None:
    node = ArchiveStatus.from_plan(plan_of({"n": [10]}), started=0.0, host="h").nodes[0]
    node.files[0].error = "refused"
    node.settle()
    assert node.state == "failed"
    node.files[0].error = None  # resumed later and delivered in full
    delivered(node, 10)
    node.settle()
    assert node.state == "ok"


def test_a_single_byte_makes_a_node_partial_not_failed() -> None:
    node = ArchiveStatus.from_plan(plan_of({"n": [10]}), started=0.0, host="h").nodes[0]
    node.files[0].bytes, node.files[0].error = 1, "reset"
    node.settle()
    assert node.state == "partial"


def test_times_are_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_status_json_is_indented_for_people() -> None:
    status = ArchiveStatus.from_plan(plan_of({"n1": [1]}), started=0.0, host="h")
    assert render_status_json(status).startswith(b'{\n "request": {\n  "root": "logs",\n')


def test_status_txt_columns_are_never_narrower_than_their_headings() -> None:
    status = ArchiveStatus.from_plan(plan_of({"a": [1]}), started=0.0, host="h")
    status.finished = 1_700_000_000.0
    lines = render_status_txt(status).decode().splitlines()
    assert lines[4] == "finished:    2023-11-14T22:13:20.000Z"
    assert lines[6] == "NODE  STATE            FILES          BYTES     SECONDS  ERROR"
    assert lines[7] == "a     ok                 0/1              0       0.000  "
    assert lines[9].startswith("NODE  PATH     SIZE  BYTES  RESUMED  SHA256 ")
    assert lines[10].startswith("a     f0.log      1      0        0  - ")


def test_reservation_is_exact_when_every_field_is_at_its_longest() -> None:
    """The worst case is a real status with every field at its longest: same sizes exactly."""
    status = ArchiveStatus.from_plan(plan_of({"node-1": [10, 12345], "n2": [7]}),
                                     started=1_700_000_000.0, host="x" * 80)
    reserved = StatusReservation.for_status(status)
    for node in status.nodes:
        for f in node.files:
            f.bytes, f.sha256, f.resumed = f.size, "9" * 64, 10**6
            f.error = clip_error("e" * 500, FILE_ERROR_LIMIT)
        node.error = clip_error("n" * 500, NODE_ERROR_LIMIT)
        node.duration_s = 10**9
        node.settle()
    status.finished = 1_800_000_000.0
    assert (len(render_status_json(status)), len(render_status_txt(status)),
            len(render_sha256sums(status))) == (reserved.json, reserved.txt, reserved.sums)


def test_path_column_is_never_narrower_than_its_heading() -> None:
    plan = Plan(Selection(root="logs"), (NodePlan(AgentRef("a", "http://a"), "logs",
                                                  (PlannedFile("x", 1, 0.0),)),))
    lines = render_status_txt(ArchiveStatus.from_plan(plan, started=0.0, host="h")).decode()
    assert "\nNODE  PATH   SIZE  BYTES  RESUMED  SHA256 " in lines
    assert "\na     x         1      0        0  - " in lines
