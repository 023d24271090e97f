"""Zip64 through real agents and a real coordinator (slow: ``make test-heavy`` only).

* one entry over 4 GiB (a sparse file on the agent's side; the 4 GiB archive is written to
  the test's temporary folder and deleted at the end);
* more than 65,535 entries in one archive.

Both are read back by zipfile, ``unzip -t`` and ``7z t``.
"""

from __future__ import annotations

import os
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from tests.faults.harness import Fleet, check_archive, fetch, node_status, status_of

pytestmark = pytest.mark.timeout(1800)

BIG = 4 * 1024**3 + 12345  # just over 4 GiB
MANY = 66_000


def test_entry_over_4_gib(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    try:
        node = fleet.add_agent("big", {}, chunk_size="1MiB")
        sparse = node.root / "huge.bin"
        with sparse.open("wb") as out:
            out.truncate(BIG)
            out.seek(BIG - 5)
            out.write(b"tail!")
        fleet.start_agents()
        fleet.start_coordinator(download={"idle_timeout": "30s"})
        fleet.wait_healthy(1)
        query = urllib.parse.urlencode({"root": "logs", "path": "huge.bin"})
        result = fetch(f"{fleet.url}/api/download?{query}", tmp_path / "out.zip", timeout=900)
        assert result.status == 200 and result.complete, result
        print(f"\n>4 GiB entry: archive {result.size} bytes in {result.seconds:.0f}s")
        archive = check_archive(result.path)
        info = archive.getinfo("big/logs/huge.bin")
        assert info.file_size == BIG
        with archive.open(info) as entry:
            entry.seek(BIG - 5)
            assert entry.read() == b"tail!"
        assert node_status(status_of(archive), "big")["state"] == "ok"
    finally:
        fleet.close()
        for path in tmp_path.glob("*.zip"):
            os.unlink(path)


def test_more_than_65535_entries(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    try:
        node = fleet.add_agent("many", {})
        for i in range(MANY):
            folder = node.root / f"d{i // 1000:03d}"
            if i % 1000 == 0:
                folder.mkdir()
            (folder / f"f{i:05d}.log").write_bytes(b"%d\n" % i)
        fleet.start_agents()
        fleet.start_coordinator(download={"idle_timeout": "30s"})
        fleet.wait_healthy(1)
        query = urllib.parse.urlencode({"root": "logs", "glob": "**"})
        result = fetch(f"{fleet.url}/api/download?{query}", tmp_path / "out.zip", timeout=1500)
        assert result.status == 200 and result.complete, result
        print(f"\n{MANY} entries: archive {result.size} bytes in {result.seconds:.0f}s")
        archive = check_archive(result.path)
        names = archive.namelist()
        assert len(names) == MANY + 3
        assert archive.read("many/logs/d065/f65999.log") == b"65999\n"
        assert node_status(status_of(archive), "many")["state"] == "ok"
        assert isinstance(archive, zipfile.ZipFile)
    finally:
        fleet.close()
