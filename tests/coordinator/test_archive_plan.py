"""How a plan becomes entry specs and a size (``coordinator/archive.py``'s plan functions),
in-process and without agents: the entry mode of each node's features, each mode's ZIP
framing, the entry names, the status files of a sized archive and the planned size.

tests/coordinator/test_archive.py checks the same through written archives read by unzip
and 7z (the planned size equals the archive's); these are fast enough for ``make mutation``.
"""

from __future__ import annotations

from coordinator.archive import (
    archive_layout,
    entry_mode,
    file_spec,
    planned_archive_size,
    planned_entries,
    status_specs,
)
from coordinator.entry import Mode
from coordinator.model import AgentRef, NodePlan, Plan, PlannedFile, Selection
from coordinator.status import ArchiveStatus, StatusReservation
from coordinator.zipwriter import DEFLATED, STORED, EntrySpec, deflated, layout, stored

MTIME = 1_700_000_000.0
CREATED = 1_800_000_000.0


def node(name: str, features: frozenset[str], *files: PlannedFile) -> NodePlan:
    return NodePlan(AgentRef(name, f"http://127.0.0.1:1/{name}"), "logs", files,
                    features=features)


NEW = frozenset({"checksum", "deflate"})
FILES = (PlannedFile("a.log", 10, MTIME), PlannedFile("d/b.log", 0, MTIME + 1))


def test_entry_mode_follows_the_compression_and_the_agent_features() -> None:
    cases = [
        ("stored", NEW, Mode.AGENT_CRC), ("stored", frozenset({"checksum"}), Mode.AGENT_CRC),
        ("stored", frozenset({"deflate"}), Mode.OWN_STORED),
        ("stored", frozenset(), Mode.OWN_STORED),
        ("deflate", NEW, Mode.AGENT_DEFLATE),
        ("deflate", frozenset({"checksum"}), Mode.OWN_DEFLATE),
        ("deflate", frozenset({"deflate"}), Mode.OWN_DEFLATE),
        ("deflate", frozenset(), Mode.OWN_DEFLATE),
    ]
    assert [entry_mode(node("n", f), c) for c, f, _ in cases] == [m for *_, m in cases]


def test_each_mode_has_its_framing() -> None:
    file = PlannedFile("a.log", 10, MTIME)
    assert file_spec("e", file, Mode.AGENT_CRC) == EntrySpec("e", MTIME, 10, STORED, False)
    assert file_spec("e", file, Mode.OWN_STORED) == EntrySpec("e", MTIME, 10, STORED, True)
    for mode in (Mode.AGENT_DEFLATE, Mode.OWN_DEFLATE):
        assert file_spec("e", file, mode) == EntrySpec("e", MTIME, 10, DEFLATED, True, None)


def test_planned_entries_name_each_file_by_node_root_and_path() -> None:
    old, new = node("old", frozenset(), *FILES), node("new", NEW, FILES[0])
    plan = Plan(Selection("logs"), (old, new))
    assert list(planned_entries(plan)) == [
        (old, FILES[0], stored("old/logs/a.log", MTIME, 10, descriptor=True), Mode.OWN_STORED),
        (old, FILES[1], stored("old/logs/d/b.log", MTIME + 1, 0, descriptor=True),
         Mode.OWN_STORED),
        (new, FILES[0], stored("new/logs/a.log", MTIME, 10), Mode.AGENT_CRC),
    ]
    deflating = Plan(Selection("logs", compression="deflate"), (old, new))
    assert [(s.name, m) for _, _, s, m in planned_entries(deflating)] == [
        ("old/logs/a.log", Mode.OWN_DEFLATE), ("old/logs/d/b.log", Mode.OWN_DEFLATE),
        ("new/logs/a.log", Mode.AGENT_DEFLATE)]


def test_status_specs_are_stored_at_their_reserved_sizes_in_this_order() -> None:
    reserved = StatusReservation(json=101, txt=202, sums=303)
    assert status_specs(reserved, 5.0) == [
        stored("_fleetzip/status.json", 5.0, 101), stored("_fleetzip/status.txt", 5.0, 202),
        stored("_fleetzip/SHA256SUMS", 5.0, 303)]


def test_a_stored_layout_is_the_files_then_the_status_files_at_time_zero() -> None:
    plan = Plan(Selection("logs"), (node("new", NEW, *FILES),), created=CREATED)
    status = ArchiveStatus.from_plan(plan, started=CREATED, host="h")
    reserved = StatusReservation.for_status(status)
    expected = layout([stored("new/logs/a.log", MTIME, 10),
                       stored("new/logs/d/b.log", MTIME + 1, 0),
                       stored("_fleetzip/status.json", 0.0, reserved.json),
                       stored("_fleetzip/status.txt", 0.0, reserved.txt),
                       stored("_fleetzip/SHA256SUMS", 0.0, reserved.sums)])
    assert archive_layout(plan, status) == expected
    assert archive_layout(plan) == expected  # the status of the plan itself when not given
    assert expected.size is not None and planned_archive_size(plan) == expected.size


def test_a_deflate_plan_has_no_status_reservation_and_no_size() -> None:
    plan = Plan(Selection("logs", compression="deflate"), (node("new", NEW, *FILES),))
    assert archive_layout(plan) == layout([deflated("new/logs/a.log", MTIME, 10),
                                           deflated("new/logs/d/b.log", MTIME + 1, 0)])
    assert planned_archive_size(plan) is None


def test_a_plan_without_creation_time_still_has_a_layout() -> None:
    plan = Plan(Selection("logs"), (node("old", frozenset(), *FILES),))
    assert plan.created == 0.0
    size = planned_archive_size(plan)
    assert size is not None and size == archive_layout(plan).size
