"""`/api/download` end to end: real agent processes on 127.0.0.x, the coordinator app
(`coordinator.app.make_app`) served from a thread of this process so the tests can read
its pipeline gauge, and clients that are plain sockets / urllib.

Faults are real: agents are SIGKILLed, restarted, SIGSTOPped; a client hangs up.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from tornado.httpserver import HTTPServer

from coordinator import archive
from coordinator import status as status_files
from coordinator.app import make_app
from coordinator.config import CoordinatorConfig, DownloadConfig, StaticAgent
from tests.support import ServerProcess, free_port, http_get, require_tool, write_yaml

pytestmark = pytest.mark.timeout(60)


def data_for(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest() * 64
    return (seed * (size // len(seed) + 1))[:size]


class Fleet:
    """Agents as processes, one per 127.0.0.N address, each with a root "logs"."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.agents: dict[str, ServerProcess] = {}
        self.roots: dict[str, Path] = {}

    def add(self, name: str, files: dict[str, int], **settings: Any) -> ServerProcess:
        index = len(self.agents) + 2
        host = f"127.0.0.{index}"
        port = free_port(host)
        root = self.base / name / "logs"
        root.mkdir(parents=True)
        for rel, size in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data_for(f"{name}/{rel}", size))
        config = write_yaml(self.base / f"{name}.yml", {
            "node": name, "listen": f"{host}:{port}", "roots": {"logs": str(root)},
            "chunk_size": "64KiB", **settings})
        agent = ServerProcess("agent", config, f"http://{host}:{port}",
                              self.base / f"{name}.log")
        self.agents[name] = agent.start()
        self.roots[name] = root
        return agent

    def restart(self, name: str) -> None:
        old = self.agents[name]
        old.stop()
        self.agents[name] = ServerProcess("agent", old.config, old.url, old.log).start()

    def static(self) -> tuple[StaticAgent, ...]:
        return tuple(StaticAgent(n, a.url) for n, a in self.agents.items())

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()


class Coordinator:
    """The real coordinator app on 127.0.0.1, in a thread with its own event loop."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.app: Any = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.app = make_app(self.config)
        self.server = HTTPServer(self.app)
        self.server.listen(self.port, "127.0.0.1")

    def start(self) -> Coordinator:
        """Serve, poll the agents (their features decide how entries are framed) and return
        once every agent was polled."""
        self.thread.start()
        assert self.ready.wait(10)
        self.loop.call_soon_threadsafe(self.app.settings["service"].start)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, _, body = http_get(self.url + "/api/agents")
            if all(a["health"] != "unknown" for a in json.loads(body)["agents"]):
                break
            time.sleep(0.05)
        return self

    @property
    def manager(self) -> Any:
        return self.app.settings["downloads"]

    def peak_buffered(self) -> int:
        return max((d.gauge.peak for d in list(self.manager.active.values())), default=0)

    def stop(self) -> None:
        async def close() -> None:
            self.server.stop()
            await self.app.settings["service"].stop()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def coordinator(fleet: Fleet, tmp_path: Path) -> Iterator[Callable[..., Coordinator]]:
    started: list[Coordinator] = []

    def start(**download: Any) -> Coordinator:
        config = CoordinatorConfig(
            listen="127.0.0.1:0", agents=fleet.static(),
            download=DownloadConfig(**{"chunk_size": 256 * 1024, **download}),
            audit_log=str(tmp_path / "audit.log"))
        started.append(Coordinator(config).start())
        return started[-1]

    try:
        yield start
    finally:
        for c in started:
            c.stop()


def query(**params: str) -> str:
    return "/api/download?" + urllib.parse.urlencode({"root": "logs", **params})


def fetch_zip(url: str) -> tuple[dict[str, str], bytes]:
    status, headers, body = http_get(url, timeout=30)
    assert status == 200, body[:500]
    return headers, body


def open_stream(c: Coordinator, path: str) -> tuple[http.client.HTTPConnection,
                                                    http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200, response.read()[:500]
    return conn, response


def read_status(body: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        return dict(json.loads(zf.read(status_files.STATUS_JSON)))


def node_status(status: dict[str, Any], node: str) -> dict[str, Any]:
    return next(n for n in status["nodes"] if n["node"] == node)


def check_with_tools(body: bytes, tmp_path: Path, *, sha_check: bool = True,
                     failed: frozenset[str] = frozenset()) -> Path:
    """unzip -t and 7z t pass; after extraction, ``sha256sum -c`` flags exactly *failed*
    (the entries that are not true copies of their source: partial, zero-filled)."""
    path = tmp_path / "out.zip"
    path.write_bytes(body)
    for tool, args in (("unzip", ["-t", "-qq"]), ("7z", ["t", "-bd"])):
        result = subprocess.run([require_tool(tool), *args, str(path)], capture_output=True,
                                text=True)
        assert result.returncode == 0, (tool, result.stdout, result.stderr)
    out = tmp_path / "extracted"
    subprocess.run([require_tool("unzip"), "-qq", "-o", str(path), "-d", str(out)], check=True)
    if sha_check:
        result = subprocess.run(["sha256sum", "-c", "--strict", "_fleetzip/SHA256SUMS"],
                                cwd=out, capture_output=True, text=True)
        flagged = {line.rsplit(": ", 1)[0] for line in result.stdout.splitlines()
                   if line.endswith(": FAILED")}
        assert flagged == failed, result.stdout + result.stderr
        assert result.returncode == (1 if failed else 0), result.stdout + result.stderr
    return out


def established(pid: int) -> int:
    """Established TCP connections of process *pid* (its agent clients)."""
    return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
               if c.status == psutil.CONN_ESTABLISHED)


# ---------------------------------------------------------------------------------------------


def test_merged_zip_from_three_agents(fleet: Fleet, coordinator: Callable[..., Coordinator],
                                      tmp_path: Path) -> None:
    fleet.add("alpha", {"app.log": 300_000, "sub/b.log": 10, "empty.log": 0})
    fleet.add("beta", {"app.log": 1_000_000})
    fleet.add("gamma", {"other.txt": 5})
    c = coordinator()
    url = c.url + query(glob="**/*.log", name="night")
    status_code, head, body = http_get(url.replace("/api/download", "/api/download"),
                                       timeout=30)
    assert status_code == 200
    assert head["Content-Type"] == "application/zip"
    assert int(head["Content-Length"]) == len(body)
    assert head["Content-Disposition"].startswith('attachment; filename="night.zip"')
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        names = zf.namelist()
        for node, root in fleet.roots.items():
            for path in root.rglob("*.log"):
                rel = path.relative_to(root).as_posix()
                assert zf.read(f"{node}/logs/{rel}") == path.read_bytes()
    assert "gamma/logs/other.txt" not in names
    status = read_status(body)
    assert [n["state"] for n in status["nodes"]] == ["ok", "ok", "skipped"]
    assert node_status(status, "beta")["files"][0]["bytes"] == 1_000_000
    assert status["request"]["glob"] == "**/*.log"
    check_with_tools(body, tmp_path)
    # HEAD: the same headers, no body
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    conn.request("HEAD", query(glob="**/*.log", name="night"))
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    assert response.getheader("Content-Length") == head["Content-Length"]
    conn.close()
    audit = (tmp_path / "audit.log").read_text().splitlines()
    line = json.loads(audit[-1])
    assert line["event"] == "download" and line["result"] == "ok"
    assert line["bytes_sent"] == len(body)


def test_deflate_and_limits(fleet: Fleet, coordinator: Callable[..., Coordinator],
                            tmp_path: Path) -> None:
    fleet.add("alpha", {"app.log": 200_000})
    fleet.add("beta", {"app.log": 100_000})
    c = coordinator(max_archive_size=250_000)
    status, _, body = http_get(c.url + query(), timeout=30)
    assert status == 413
    assert "download.max_archive_size" in json.loads(body)["error"]["message"]
    status, headers, body = http_get(c.url + query(nodes="alpha", compression="deflate"),
                                     timeout=30)
    assert status == 200 and "Content-Length" not in headers
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.getinfo("alpha/logs/app.log").compress_type == zipfile.ZIP_DEFLATED
        assert zf.read("alpha/logs/app.log") == (fleet.roots["alpha"] / "app.log").read_bytes()
    check_with_tools(body, tmp_path)
    status, _, body = http_get(c.url + query(nodes="nobody"), timeout=10)
    assert status == 400 and b"nodes" in body


def test_growing_log_is_captured_at_its_planned_size(
        fleet: Fleet, coordinator: Callable[..., Coordinator]) -> None:
    fleet.add("alpha", {"app.log": 600_000}, max_bandwidth="400KiB")
    c = coordinator()
    log = fleet.roots["alpha"] / "app.log"
    planned = log.read_bytes()
    conn, response = open_stream(c, query())
    with log.open("ab") as f:  # the plan is made: the log keeps growing
        f.write(b"x" * 300_000)
    body = response.read()
    conn.close()
    assert len(body) == int(response.getheader("Content-Length") or -1)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.read("alpha/logs/app.log") == planned
    assert node_status(read_status(body), "alpha")["state"] == "ok"


def test_too_many_downloads_get_429(fleet: Fleet,
                                    coordinator: Callable[..., Coordinator]) -> None:
    fleet.add("alpha", {"app.log": 400_000}, max_bandwidth="200KiB")
    c = coordinator(max_concurrent=1)
    conn, response = open_stream(c, query())
    status, headers, body = http_get(c.url + query(), timeout=10)
    assert status == 429 and headers["Retry-After"] == "5"
    assert b"max_concurrent" in body
    status, _, listing = http_get(c.url + "/api/downloads", timeout=10)
    downloads = json.loads(listing)["downloads"]
    assert len(downloads) == 1 and downloads[0]["nodes"][0]["node"] == "alpha"
    assert downloads[0]["archive_size"] == int(response.getheader("Content-Length") or 0)
    response.read()
    conn.close()


@pytest.mark.parametrize("compression", ["stored", "deflate"])
def test_agent_killed_mid_entry_and_restarted_is_resumed(
        fleet: Fleet, coordinator: Callable[..., Coordinator], tmp_path: Path,
        compression: str) -> None:
    """Stored: resumed with Range from the byte reached. Deflate (the agent's frames): from
    the last complete frame, with its running CRC; the entry is one valid deflate stream."""
    fleet.add("alpha", {"big.log": 1_500_000}, max_bandwidth="500KiB")
    (fleet.roots["alpha"] / "big.log").write_bytes(os.urandom(1_500_000))  # incompressible
    c = coordinator(resume_attempts=10, idle_timeout=5)
    conn, response = open_stream(c, query(compression=compression))
    first = response.read(300_000)
    os.kill(fleet.agents["alpha"].pid, signal.SIGKILL)
    fleet.restart("alpha")
    body = first + response.read()
    conn.close()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.read("alpha/logs/big.log") == (fleet.roots["alpha"] / "big.log").read_bytes()
    files = node_status(read_status(body), "alpha")["files"]
    assert files[0]["resumed"] >= 1 and files[0]["bytes"] == 1_500_000
    assert files[0]["error"] is None
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.getinfo("alpha/logs/big.log").compress_type == (
            zipfile.ZIP_DEFLATED if compression == "deflate" else zipfile.ZIP_STORED)
    check_with_tools(body, tmp_path)


def test_agent_killed_for_good_leaves_a_valid_partial_archive(
        fleet: Fleet, coordinator: Callable[..., Coordinator], tmp_path: Path) -> None:
    fleet.add("alpha", {"big.log": 1_500_000, "later.log": 1000}, max_bandwidth="500KiB")
    fleet.add("beta", {"ok.log": 2000})
    c = coordinator(resume_attempts=1, idle_timeout=5, parallel=1)  # later.log after the kill
    conn, response = open_stream(c, query())
    first = response.read(300_000)
    os.kill(fleet.agents["alpha"].pid, signal.SIGKILL)
    body = first + response.read()
    conn.close()
    assert len(body) == int(response.getheader("Content-Length") or -1)
    status = read_status(body)
    alpha = node_status(status, "alpha")
    big = next(f for f in alpha["files"] if f["path"] == "big.log")
    assert alpha["state"] == "partial" and 0 < big["bytes"] < 1_500_000
    assert "resume" in big["error"]
    source = (fleet.roots["alpha"] / "big.log").read_bytes()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        got = zf.read("alpha/logs/big.log")  # zipfile checks the promised CRC-32
        # zero-filled; the last 4 bytes make the CRC promised before the data hold
        assert got[:-4] == source[: big["bytes"]] + bytes(1_500_000 - big["bytes"] - 4)
        assert zlib.crc32(got) == zlib.crc32(source)
        assert zf.read("alpha/logs/later.log")[:-4] == bytes(996)  # node down: zero-filled
        assert zf.read("beta/logs/ok.log") == (fleet.roots["beta"] / "ok.log").read_bytes()
    assert node_status(status, "beta")["state"] == "ok"
    check_with_tools(body, tmp_path, failed=frozenset({"alpha/logs/big.log",
                                                       "alpha/logs/later.log"}))


def test_frozen_agent_hits_the_idle_timeout(fleet: Fleet,
                                            coordinator: Callable[..., Coordinator],
                                            tmp_path: Path) -> None:
    fleet.add("alpha", {"big.log": 1_500_000}, max_bandwidth="500KiB")
    fleet.add("beta", {"ok.log": 2000})
    c = coordinator(resume_attempts=1, idle_timeout=1)
    pid = fleet.agents["alpha"].pid
    conn, response = open_stream(c, query())
    try:
        first = response.read(200_000)
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        body = first + response.read()
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
        conn.close()
    assert elapsed < 15
    status = read_status(body)
    big = node_status(status, "alpha")["files"][0]
    assert "idle_timeout" in big["error"] and big["bytes"] < 1_500_000
    assert node_status(status, "beta")["state"] == "ok"
    check_with_tools(body, tmp_path, failed=frozenset({"alpha/logs/big.log"}))


def test_client_leaving_closes_every_agent_connection(
        fleet: Fleet, coordinator: Callable[..., Coordinator]) -> None:
    for name in ("alpha", "beta", "gamma"):
        fleet.add(name, {"big.log": 3_000_000}, max_bandwidth="300KiB")
    c = coordinator(parallel=3)
    conn, response = open_stream(c, query())
    response.read(100_000)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # every agent streams (parallel=3)
        if all(established(a.pid) >= 1 for a in fleet.agents.values()):
            break
        time.sleep(0.05)
    assert all(established(a.pid) >= 1 for a in fleet.agents.values())
    conn.sock.close()  # type: ignore[union-attr]
    conn.close()
    left = time.monotonic()
    while time.monotonic() - left < 1.0:
        if sum(established(a.pid) for a in fleet.agents.values()) == 0:
            break
        time.sleep(0.02)
    assert sum(established(a.pid) for a in fleet.agents.values()) == 0
    deadline = time.monotonic() + 2
    while c.manager.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not c.manager.active
    audit = json.loads((Path(c.config.audit_log)).read_text().splitlines()[-1])
    assert audit["result"] == "cancelled"


def test_slow_client_keeps_the_pipeline_bounded(
        fleet: Fleet, coordinator: Callable[..., Coordinator]) -> None:
    """Agents far faster than the client: the coordinator buffers a few chunks, no more."""
    size = 6 * 1024 * 1024
    fleet.add("alpha", {"big.log": size})
    fleet.add("beta", {"big.log": size})
    chunk = 64 * 1024  # also the agent read size (download.chunk_size)
    parallel = 2
    c = coordinator(parallel=parallel, chunk_size=chunk)
    conn, response = open_stream(c, query())
    received = 0
    peak = 0
    while True:  # about 4 MB/s
        piece = response.read(64 * 1024)
        if not piece:
            break
        received += len(piece)
        peak = max(peak, c.peak_buffered())
        time.sleep(0.015)
    conn.close()
    assert received == int(response.getheader("Content-Length") or -1)
    # Each entry stops its agent once it holds two chunks (not yet both zipped and hashed),
    # so it holds under 3 (one read more); the output holds the current zip step (under 2
    # chunks), small pieces gathered (under a chunk) and the write before them (a chunk
    # plus small pieces < archive.SMALL_PIECE).
    bound = (3 * parallel + 4) * chunk + archive.SMALL_PIECE
    assert 0 < peak <= bound, (peak, bound)
    assert 2 * size > 16 * bound  # the archive is far bigger than anything held



def test_client_leaving_while_the_agents_stall_closes_them_at_once(
        fleet: Fleet, coordinator: Callable[..., Coordinator]) -> None:
    """No byte flows when the client leaves, so no failed write can notice it: the closed
    connection itself must cancel the download and close every agent connection."""
    for name in ("alpha", "beta"):
        fleet.add(name, {"big.log": 3_000_000}, max_bandwidth="300KiB")
    c = coordinator(parallel=2, idle_timeout=60)  # the idle watchdog would take a minute
    conn, response = open_stream(c, query())
    response.read(50_000)
    pids = [a.pid for a in fleet.agents.values()]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(established(p) >= 1 for p in pids):
        time.sleep(0.05)
    assert all(established(p) >= 1 for p in pids)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(0.5)  # the coordinator drains what was in flight and waits
        conn.sock.close()  # type: ignore[union-attr]
        conn.close()
        left = time.monotonic()
        while time.monotonic() - left < 2.0 and sum(established(p) for p in pids):
            time.sleep(0.02)
        # a stopped agent cannot close; ESTABLISHED ends once the coordinator closes its side
        assert sum(established(p) for p in pids) == 0
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 2
    while c.manager.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not c.manager.active
    audit = json.loads((Path(c.config.audit_log)).read_text().splitlines()[-1])
    assert audit["result"] == "cancelled"


def test_client_pausing_longer_than_idle_timeout_with_a_healthy_agent_completes(
        fleet: Fleet, coordinator: Callable[..., Coordinator]) -> None:
    """`idle_timeout` is about silent agents: an agent held back because the client does not
    read is not idle, and the entry completes without an error or a resume."""
    size = 16 * 1024 * 1024  # far more than the socket buffers and the pipeline hold
    fleet.add("alpha", {"big.log": size})
    c = coordinator(idle_timeout=0.5, resume_attempts=0, chunk_size=64 * 1024)
    conn, response = open_stream(c, query())
    first = response.read(64 * 1024)
    time.sleep(2.0)  # the client stalls for four idle timeouts
    (download,) = c.manager.active.values()
    (held,) = download.progress()["nodes"]
    assert held["state"] == "running" and held["bytes"] < size  # the agent was held back
    body = first + response.read()
    conn.close()
    assert len(body) == int(response.getheader("Content-Length") or -1)
    big = node_status(read_status(body), "alpha")["files"][0]
    assert (big["error"], big["bytes"], big["resumed"]) == (None, size, 0)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.read("alpha/logs/big.log") == (fleet.roots["alpha"] / "big.log").read_bytes()
