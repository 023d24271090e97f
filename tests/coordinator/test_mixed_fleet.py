"""A rolling upgrade: one agent of this release (``checksum``, ``deflate``) and one of the
previous release — its real code, taken from release 0.1's last commit and run as a
process — behind one coordinator.

What a user sees: exact ``Content-Length`` (= ``/api/plan``'s size), entries with the
sources' mtimes, every reader accepting the archive (zipfile, unzip, 7z, bsdtar, and Java's
``ZipInputStream`` wherever no stored entry needs a descriptor), ``sha256sum -c`` passing
after ``7z x``; the new agent's stored entries carry their CRC in the local header, the old
agent's use data descriptors; deflate works from both (frames from the new one, compressed
by the coordinator for the old one).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.coordinator.test_download import (
    Coordinator,
    Fleet,
    coordinator,  # noqa: F401 (fixture)
    data_for,
    fleet,  # noqa: F401 (fixture)
    query,
)
from tests.coordinator.test_zipwriter import java_read, java_reader  # noqa: F401 (fixture)
from tests.support import ServerProcess, free_port, http_get, require_tool, write_yaml

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
MTIME = 1709642096  # 2024-03-05T12:34:56Z
# The last commit of release 0.1 (before the agents had features): main has moved on.
OLD_RELEASE = "ca4fe12"


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent of the previous release: ``agent`` and ``common`` at `OLD_RELEASE`."""
    tree = tmp_path_factory.mktemp("old-release")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_RELEASE, "agent", "common"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    health = (tree / "agent" / "health.py").read_text()
    assert "features" not in health, "the old release already has features: not an old agent"
    return tree


def add_old_agent(fleet: Fleet, old_release: Path, name: str,  # noqa: F811
                  files: dict[str, int]) -> ServerProcess:
    index = len(fleet.agents) + 2
    host = f"127.0.0.{index}"
    port = free_port(host)
    root = fleet.base / name / "logs"
    root.mkdir(parents=True)
    for rel, size in files.items():
        (root / rel).write_bytes(data_for(f"{name}/{rel}", size))
    config = write_yaml(fleet.base / f"{name}.yml", {
        "node": name, "listen": f"{host}:{port}", "roots": {"logs": str(root)},
        "chunk_size": "64KiB"})
    # PYTHONSAFEPATH: the working directory (this checkout) does not shadow the old tree
    env = {"PYTHONPATH": str(old_release), "PYTHONSAFEPATH": "1"}
    agent = ServerProcess("agent", config, f"http://{host}:{port}", fleet.base / f"{name}.log",
                          env=env).start()
    fleet.agents[name] = agent
    fleet.roots[name] = root
    return agent


def set_mtimes(fleet: Fleet) -> None:  # noqa: F811
    for root in fleet.roots.values():
        for path in root.rglob("*"):
            os.utime(path, (MTIME, MTIME))


def wait_for_features(c: Coordinator) -> dict[str, list[str]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, _, body = http_get(c.url + "/api/agents")
        agents = {a["name"]: a for a in json.loads(body)["agents"]}
        if all(a["health"] == "pass" for a in agents.values()):
            return {name: a["features"] for name, a in agents.items()}
        time.sleep(0.1)
    raise TimeoutError(f"agents not polled: {agents}")


@pytest.fixture
def mixed(fleet: Fleet, old_release: Path,  # noqa: F811
          coordinator: Callable[..., Coordinator]) -> Iterator[Coordinator]:  # noqa: F811
    fleet.add("fresh", {"app.log": 700_000, "small.log": 10, "empty.log": 0})
    add_old_agent(fleet, old_release, "legacy", {"app.log": 500_000, "b.log": 3})
    set_mtimes(fleet)
    c = coordinator()
    assert wait_for_features(c) == {"fresh": ["checksum", "deflate"], "legacy": []}
    yield c


def readers(path: Path) -> None:
    for args in (["unzip", "-t", "-qq"], ["7z", "t", "-bd"], ["bsdtar", "-tf"]):
        result = subprocess.run([require_tool(args[0]), *args[1:], str(path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, (args, result.stdout, result.stderr)


def check_sources(fleet: Fleet, zf: zipfile.ZipFile) -> None:  # noqa: F811
    assert zf.testzip() is None
    for node, root in fleet.roots.items():
        for path in root.rglob("*.log"):
            name = f"{node}/logs/{path.relative_to(root).as_posix()}"
            assert zf.read(name) == path.read_bytes(), name
            assert zf.getinfo(name).date_time == time.localtime(MTIME)[:6]


def test_stored_from_a_mixed_fleet(fleet: Fleet, mixed: Coordinator,  # noqa: F811
                                   tmp_path: Path, java_reader: list[str]) -> None:  # noqa: F811
    status, headers, body = http_get(mixed.url + query(), timeout=60)
    assert status == 200
    assert int(headers["Content-Length"]) == len(body)
    _, _, plan = http_get(mixed.url + query().replace("/api/download", "/api/plan"))
    assert json.loads(plan)["archive_size"] == len(body)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        check_sources(fleet, zf)
        flags = {i.filename: i.flag_bits & 0x08 for i in zf.infolist()}
        status_json = json.loads(zf.read("_fleetzip/status.json"))
    assert flags["fresh/logs/app.log"] == 0 and flags["legacy/logs/app.log"] == 0x08
    assert [n["state"] for n in status_json["nodes"]] == ["ok", "ok"]
    path = tmp_path / "stored.zip"
    path.write_bytes(body)
    readers(path)
    listing = subprocess.run([require_tool("bsdtar"), "-tvf", str(path)], capture_output=True,
                             text=True, env={**os.environ, "TZ": "UTC"}).stdout
    assert all("Mar  5  2024" in line for line in listing.splitlines() if "/logs/" in line)
    out = tmp_path / "x"
    subprocess.run([require_tool("7z"), "x", "-bd", f"-o{out}", str(path)], check=True,
                   capture_output=True)
    check = subprocess.run(["sha256sum", "-c", "--strict", "_fleetzip/SHA256SUMS"], cwd=out,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # the new agent alone: no descriptor anywhere, so Java's streaming reader takes it all
    _, _, only_new = http_get(mixed.url + query(nodes="fresh"), timeout=60)
    path = tmp_path / "fresh.zip"
    path.write_bytes(only_new)
    rows = java_read(java_reader, path)
    with zipfile.ZipFile(path) as zf:
        assert [(n, size, crc) for n, size, crc, _ in rows] == [
            (i.filename, i.file_size, i.CRC) for i in zf.infolist()]


def test_deflate_from_a_mixed_fleet(fleet: Fleet, mixed: Coordinator,  # noqa: F811
                                    tmp_path: Path,
                                    java_reader: list[str]) -> None:  # noqa: F811
    status, headers, body = http_get(mixed.url + query(compression="deflate"), timeout=60)
    assert status == 200 and "Content-Length" not in headers
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        check_sources(fleet, zf)
        for name in ("fresh/logs/app.log", "legacy/logs/app.log"):
            info = zf.getinfo(name)
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.compress_size < info.file_size
        status_json = json.loads(zf.read("_fleetzip/status.json"))
    assert [n["state"] for n in status_json["nodes"]] == ["ok", "ok"]
    path = tmp_path / "deflate.zip"
    path.write_bytes(body)
    readers(path)
    rows = java_read(java_reader, path)
    with zipfile.ZipFile(path) as zf:
        assert [(n, size, crc) for n, size, crc, _ in rows] == [
            (i.filename, i.file_size, i.CRC) for i in zf.infolist()]
    assert {t for name, _, _, t in rows if "/logs/" in name} == {MTIME}
    assert sys.version_info >= (3, 11)
