"""Archive edge cases through real agents and a real coordinator, stored and deflate.

0-byte files, non-ASCII names, 255-byte name segments, and the same relative path on two
nodes (two distinct entries) — each archive read back by zipfile, ``unzip -t`` and
``7z t`` and compared byte for byte. The > 4 GiB entry and > 65,535 entries cases
(zip64) live in tests/heavy (``make test-heavy``).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from tests.faults.harness import Fleet, check_archive, fetch, make_bytes, node_status, status_of

LONG = "é" * 127 + "x"  # 255 bytes in UTF-8: the longest name segment Linux allows
FILES = {
    "empty.log": b"",
    "sub/empty-too.log": b"",
    "ünïcödé/日本語 ログ.txt": b"non-ascii\n" * 10,
    f"{LONG}/{LONG}": make_bytes(3000, seed=5),
    "same.log": None,  # different content per node, same path
    "sp ace & %25 #hash.log": b"odd characters\n",
}


@pytest.mark.parametrize("compression", ["stored", "deflate"])
def test_edge_names_and_sizes(tmp_path: Path, compression: str) -> None:
    fleet = Fleet(tmp_path)
    try:
        contents: dict[str, dict[str, bytes]] = {}
        for name in ("e1", "e2"):
            files = {rel: data if data is not None else f"from {name}\n".encode() * 50
                     for rel, data in FILES.items()}
            contents[name] = files
            fleet.add_agent(name, files)
        fleet.start_agents()
        fleet.start_coordinator()
        fleet.wait_healthy(2)
        query = urllib.parse.urlencode({"root": "logs", "glob": "**",
                                        "compression": compression})
        result = fetch(f"{fleet.url}/api/download?{query}", tmp_path / "out.zip")
        assert result.status == 200 and result.complete, result
        if compression == "stored":
            assert int(result.headers["Content-Length"]) == result.size
        archive = check_archive(result.path)
        status = status_of(archive)
        for node, files in contents.items():
            assert node_status(status, node)["state"] == "ok", status
            for rel, data in files.items():
                assert archive.read(f"{node}/logs/{rel}") == data, rel
        assert archive.read("e1/logs/same.log") != archive.read("e2/logs/same.log")
        names = archive.namelist()
        assert len(names) == len(set(names)), "duplicate entry names"
        expected_method = 0 if compression == "stored" else 8
        info = archive.getinfo("e1/logs/same.log")
        assert info.compress_type == expected_method
        non_ascii = archive.getinfo("e1/logs/ünïcödé/日本語 ログ.txt")
        assert non_ascii.flag_bits & 0x800, "UTF-8 names must set the language encoding flag"
    finally:
        fleet.close()
