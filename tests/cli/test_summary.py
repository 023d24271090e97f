"""The per-node summary of ``status.json`` and the exit code it gives, without a server."""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path

import pytest

from coordinator.client.agents import agents_table
from coordinator.client.summary import (
    StatusUnreadable,
    human_bytes,
    node_table,
    read_status,
    render_table,
    summarize,
)


def status(*states: str) -> dict[str, object]:
    return {"started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:01Z", "nodes": [
        {"node": f"n{i}", "state": state, "error": None if state == "ok" else "boom",
         "files": [{"path": "a", "size": 10, "bytes": 10 if state == "ok" else 4}]}
        for i, state in enumerate(states)]}


@pytest.mark.parametrize(("states", "code"), [
    (("ok", "ok"), 0),
    (("ok", "skipped"), 0),  # a node with nothing to send is not a failure
    (("ok", "partial"), 1),
    (("failed", "ok"), 1),
    (("skipped", "skipped"), 1),  # nothing delivered at all
    ((), 1),
])
def test_exit_code(states: tuple[str, ...], code: int) -> None:
    assert summarize(status(*states)).exit_code == code


def test_node_table_counts_files_and_received_bytes() -> None:
    table = node_table(summarize(status("ok", "partial")))
    lines = table.splitlines()
    assert lines[0].split() == ["NODE", "STATE", "FILES", "BYTES", "ERROR"]
    assert lines[1].split() == ["n0", "ok", "1", "10", "B", "-"]
    assert lines[2].split() == ["n1", "partial", "1", "4", "B", "boom"]


def test_read_status_from_a_zip(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("n0/logs/a", b"x" * 10)
        zf.writestr("_fleetzip/status.json", json.dumps(status("ok")))
    assert read_status(good).nodes[0].bytes == 10
    missing = tmp_path / "missing.zip"
    with zipfile.ZipFile(missing, "w") as zf:
        zf.writestr("n0/logs/a", b"x")
    with pytest.raises(StatusUnreadable, match="holds no"):
        read_status(missing)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(StatusUnreadable):
        read_status(broken)


def test_render_table_aligns_numbers_right() -> None:
    text = render_table(("A", "N"), [("x", 5), ("yy", 1234), ("z", None)])
    assert text.splitlines() == ["A   N", "x      5", "yy  1234", "z   -"]
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(12) == "12 B"


def test_agents_table_ages_and_labels() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    agents = [
        {"name": "b", "url": "http://b", "labels": {"z": "1", "a": "2"}, "health": "pass",
         "last_seen": "2026-01-01T11:55:00Z", "version": "0.1.0", "source": "static",
         "error": None},
        {"name": "a", "url": "http://a", "labels": {}, "health": "unknown",
         "last_seen": None, "version": None, "source": "registered", "error": None},
    ]
    rows = [line.split() for line in agents_table(agents, now).splitlines()[1:]]
    assert rows[0][:5] == ["a", "http://a", "-", "unknown", "never"]
    assert rows[1][:6] == ["b", "http://b", "a=2,z=1", "pass", "5m", "ago"]
