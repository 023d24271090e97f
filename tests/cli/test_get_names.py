"""Where ``fleetzip get`` writes: the server's name made safe, ``-o`` file or directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.client.get import Selection, archive_name, output_path
from coordinator.client.http import ClientError


@pytest.mark.parametrize(("header", "expected"), [
    (None, "fleetzip-logs.zip"),
    ('attachment; filename="fleet.zip"', "fleet.zip"),
    ("attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.zip", "résumé.zip"),
    ('attachment; filename="../../etc/passwd"', "passwd"),
    ('attachment; filename="a\\\\b.zip"', "b.zip"),
    ('attachment; filename=".."', "fleetzip-logs.zip"),
    ('attachment; filename=".bashrc"', "bashrc"),
    ("attachment", "fleetzip-logs.zip"),
])
def test_archive_name_is_a_bare_safe_name(header: str | None, expected: str) -> None:
    assert archive_name(header, "logs") == expected


def test_output_path(tmp_path: Path) -> None:
    assert output_path(str(tmp_path), "a.zip") == tmp_path / "a.zip"
    assert output_path(str(tmp_path / "b.zip"), "a.zip") == tmp_path / "b.zip"
    with pytest.raises(ClientError, match="does not exist"):
        output_path(str(tmp_path / "missing") + "/", "a.zip")
    with pytest.raises(ClientError, match="does not exist"):
        output_path(str(tmp_path / "missing" / "b.zip"), "a.zip")


def test_selection_query_leaves_out_empty_values() -> None:
    query = Selection("logs", glob="**/*.log", nodes="a,b", since="").query()
    assert query == "root=logs&glob=%2A%2A%2F%2A.log&nodes=a%2Cb"
