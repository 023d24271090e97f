"""A small real fleet for fault, hostile-input and load tests.

`Fleet` starts real agent and coordinator *processes* (``python -m agent`` /
``python -m coordinator``) on their own 127.x.y.z addresses, writes their configs, and
stops every process it started by PID. Next to them it can run two tiny misbehaving
servers, each faking only what it must:

* `SilentServer` accepts TCP connections and never sends a byte;
* `LyingProxy` forwards to a real agent and changes only what it is told to (the
  ``Content-Length`` of file answers, or going silent on file requests).

`fetch` downloads a response to a file and says whether the body was *complete* by HTTP's
own framing (Content-Length reached, or the terminating chunk seen) — the only way a
client can tell a cut-short archive from a finished one. `check_archive` reads an archive
back with three independent readers: Python's `zipfile`, ``unzip -t`` and ``7z t``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import json
import os
import selectors
import socket
import subprocess
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import ServerProcess, free_port, http_get, require_tool, write_yaml

_SUBNETS = itertools.count(1)
READ_SIZE = 64 * 1024


def subnet_base() -> str:
    """A 127.x.y prefix no other fleet of this test process uses (x from the PID)."""
    n = next(_SUBNETS)
    return f"127.{100 + os.getpid() % 100}.{n % 250 + 1}"


# ---------------------------------------------------------------------------- processes


@dataclass
class Node:
    name: str
    url: str
    root: Path
    server: ServerProcess | None = None  # None for fakes

    @property
    def pid(self) -> int:
        assert self.server is not None
        return self.server.pid


@dataclass
class Fleet:
    """Agents and a coordinator for one test; `close()` stops them all."""

    tmp: Path
    base: str = field(default_factory=subnet_base)
    agents: list[Node] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)  # (name, url) of fakes
    coordinator: ServerProcess | None = None
    fakes: list[Any] = field(default_factory=list)
    _hosts: Iterator[int] = field(default_factory=lambda: itertools.count(2))
    client_headers: dict[str, str] = field(default_factory=dict)  # auth for the coordinator

    def host(self) -> str:
        return f"{self.base}.{next(self._hosts)}"

    def add_agent(self, name: str, files: dict[str, bytes], **config: Any) -> Node:
        root = self.tmp / f"root-{name}"
        for rel, data in files.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        root.mkdir(parents=True, exist_ok=True)
        host = self.host()
        port = free_port(host)
        conf = {"node": name, "listen": f"{host}:{port}", "roots": {"logs": str(root)},
                "chunk_size": "64KiB", **config}
        path = write_yaml(self.tmp / f"agent-{name}.yml", conf)
        url = f"http://{host}:{port}"
        server = ServerProcess("agent", path, url, self.tmp / f"agent-{name}.log")
        node = Node(name, url, root, server)
        self.agents.append(node)
        return node

    def start_agents(self) -> None:
        for node in self.agents:
            if node.server is not None and node.server.proc is None:
                node.server.start()

    def restart(self, node: Node) -> None:
        """Start *node* again on the same address (after it was killed)."""
        assert node.server is not None
        old = node.server
        old.stop()
        node.server = ServerProcess("agent", old.config, old.url, old.log)
        deadline = time.monotonic() + 10
        while True:  # the old listening socket may linger for a moment
            try:
                node.server.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                node.server = ServerProcess("agent", old.config, old.url, old.log)
                time.sleep(0.1)

    def add_fake(self, name: str, fake: Any) -> None:
        self.fakes.append(fake)
        self.extra.append((name, fake.url))

    def start_coordinator(self, download: dict[str, Any] | None = None,
                          **config: Any) -> ServerProcess:
        host = self.host()
        port = free_port(host)
        agents = [{"name": n.name, "url": n.url, "labels": {"group": "real"}}
                  for n in self.agents]
        agents += [{"name": name, "url": url, "labels": {"group": "fake"}}
                   for name, url in self.extra]
        conf: dict[str, Any] = {
            "listen": f"{host}:{port}",
            "agents": agents,
            "health": {"interval": "1s", "timeout": "1s"},
            "audit_log": str(self.tmp / "audit.log"),
            "download": {"connect_timeout": "2s", "idle_timeout": "2s",
                         "resume_attempts": 3, **(download or {})},
            **config,
        }
        path = write_yaml(self.tmp / "coordinator.yml", conf)
        self.coordinator = ServerProcess(
            "coordinator", path, f"http://{host}:{port}", self.tmp / "coordinator.log"
        ).start()
        return self.coordinator

    @property
    def url(self) -> str:
        assert self.coordinator is not None
        return self.coordinator.url

    def wait_healthy(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until *count* agents show ``health == "pass"`` on /api/agents."""
        deadline = time.monotonic() + timeout
        agents: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            status, _, body = http_get(self.url + "/api/agents", headers=self.client_headers)
            if status == 200:
                agents = json.loads(body)["agents"]
                if sum(a["health"] == "pass" for a in agents) >= count:
                    return agents
            time.sleep(0.2)
        raise AssertionError(f"{count} healthy agents expected, got {agents}")

    def processes(self) -> list[ServerProcess]:
        found = [n.server for n in self.agents if n.server is not None and n.server.proc]
        if self.coordinator is not None:
            found.append(self.coordinator)
        return [p for p in found if p.proc is not None and p.proc.poll() is None]

    def logs(self) -> str:
        parts = []
        for server in [*(n.server for n in self.agents), self.coordinator]:
            if server is not None and server.log.exists():
                parts.append(f"--- {server.log.name}\n{server.output()[-4000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for fake in self.fakes:
            fake.close()
        if self.coordinator is not None:
            self.coordinator.stop()
        for node in self.agents:
            if node.server is not None:
                node.server.stop()


@contextlib.contextmanager
def fleet(tmp: Path) -> Iterator[Fleet]:
    f = Fleet(tmp)
    try:
        yield f
    finally:
        f.close()


# ---------------------------------------------------------------------------- fds


def fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors of *pid* by kind: socket, pipe, file, other."""
    kinds = {"socket": 0, "pipe": 0, "file": 0, "other": 0}
    folder = f"/proc/{pid}/fd"
    for fd in os.listdir(folder):
        try:
            target = os.readlink(f"{folder}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("/"):
            kinds["file"] += 1
        else:
            kinds["other"] += 1
    return kinds


def describe_sockets(pids: list[int]) -> str:
    """The TCP connections of *pids* (local -> remote, state), for a failure message."""
    import psutil

    lines = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            lines.append(f"pid {pid} {' '.join(process.cmdline()[-3:])}:")
            for conn in process.net_connections(kind="tcp"):
                remote = f"{conn.raddr.ip}:{conn.raddr.port}" if conn.raddr else "-"
                lines.append(f"  {conn.laddr.ip}:{conn.laddr.port} -> {remote} {conn.status}")
    return "\n".join(lines)


def fd_baseline(processes: list[ServerProcess]) -> dict[int, dict[str, int]]:
    return {p.pid: fd_kinds(p.pid) for p in processes}


def assert_fds_back(baseline: dict[int, dict[str, int]], timeout: float = 3.0) -> None:
    """Every process of *baseline* still alive is back to its descriptor counts."""
    deadline = time.monotonic() + timeout
    while True:
        now = {pid: fd_kinds(pid) for pid in baseline if os.path.exists(f"/proc/{pid}")}
        excess = {pid: (baseline[pid], kinds) for pid, kinds in now.items()
                  if any(kinds[k] > baseline[pid][k] for k in kinds)}
        if not excess:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"descriptors left open (pid: (before, after)): {excess}; "
                                 f"{describe_sockets(list(excess))}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------- client


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    path: Path
    size: int
    complete: bool  # the HTTP framing says the body ended where it should
    error: str | None
    seconds: float


def fetch(url: str, dest: Path, *, timeout: float = 60.0, headers: dict[str, str] | None = None,
          on_bytes: Callable[[int], None] | None = None) -> Fetched:
    """GET *url* into *dest*; never raises for a short body, reports it in `complete`."""
    parts = urllib.parse.urlsplit(url)
    started = time.monotonic()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    size, error = 0, None
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        length = response.getheader("Content-Length")
        with dest.open("wb") as out:
            try:
                while chunk := response.read(READ_SIZE):
                    out.write(chunk)
                    size += len(chunk)
                    if on_bytes is not None:
                        on_bytes(size)
                complete = True
            except (http.client.IncompleteRead, OSError) as exc:
                complete, error = False, f"{type(exc).__name__}: {exc}"
        if length is not None and size != int(length):
            complete = False
            error = error or f"body {size} bytes, Content-Length {length}"
        return Fetched(response.status, dict(response.getheaders()), dest, size, complete,
                       error, time.monotonic() - started)
    finally:
        conn.close()


# ---------------------------------------------------------------------------- archives


def check_archive(path: Path) -> zipfile.ZipFile:
    """*path* read back by zipfile (CRCs), ``unzip -t`` and ``7z t``; the open ZipFile."""
    archive = zipfile.ZipFile(path)
    bad = archive.testzip()
    assert bad is None, f"zipfile: bad CRC in {bad}"
    unzip = require_tool("unzip")
    result = subprocess.run([unzip, "-t", "-qq", str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"unzip -t: {result.stdout}{result.stderr}"
    sevenz = require_tool("7z")
    result = subprocess.run([sevenz, "t", "-bd", str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"7z t: {result.stdout}{result.stderr}"
    return archive


def status_of(archive: zipfile.ZipFile) -> dict[str, Any]:
    return json.loads(archive.read("_fleetzip/status.json"))


def node_status(status: dict[str, Any], name: str) -> dict[str, Any]:
    for node in status["nodes"]:
        if node["node"] == name:
            return node
    raise AssertionError(f"node {name} missing from status.json: {status}")


def file_status(node: dict[str, Any], path: str) -> dict[str, Any]:
    for entry in node["files"]:
        if entry["path"] == path:
            return entry
    raise AssertionError(f"{path} missing from the status of {node['node']}: {node}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_entry_truthful(archive: zipfile.ZipFile, status: dict[str, Any], node: str,
                          rel: str, original: bytes, root: str = "logs") -> dict[str, Any]:
    """The entry of *rel* from *node* agrees with the file and with what the status says.

    ``bytes`` says how much of the file arrived: those bytes are the file's first bytes,
    the rest of the entry (zero-fill in a sized archive) is zeros, and ``ok`` status is
    only claimed when every byte arrived.
    """
    entry = file_status(node_status(status, node), rel)
    got = entry["bytes"]
    name = f"{node}/{root}/{rel}"
    names = archive.namelist()
    if name in names:
        data = archive.read(name)
        assert data[:got] == original[:got], f"{name}: the first {got} bytes differ"
        tail = data[got:]
        if len(tail) >= 4:  # the last 4 bytes of a padding may hold a promised CRC-32
            tail = tail[:-4]
        assert tail == b"\0" * len(tail), f"{name}: tail beyond {got} not zeros"
        if got == len(original) and len(data) == got and entry.get("sha256"):
            assert entry["sha256"] == sha256(original)
    else:
        assert got == 0, f"{name} missing but status says {got} bytes arrived"
    if got < len(original):
        assert node_status(status, node)["state"] in ("partial", "failed"), status
        assert entry.get("error"), f"{name}: short entry without an error: {entry}"
    return entry


# ---------------------------------------------------------------------------- fakes


class _Listener:
    """A thread accepting connections on its own 127.x.y.z port."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self.connections.append(conn)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.close()


class SilentServer(_Listener):
    """Accepts every connection and never sends a byte (until closed)."""

    def handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set() and conn.recv(65536):
                pass


def _read_head(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return None
        data += piece
    return data


class LyingProxy(_Listener):
    """Forwards to a real agent; file answers get *length_delta* added to Content-Length.

    ``silent_files=True`` instead reads file requests and never answers them. Everything
    else (listings, health) is passed through untouched, one request per connection.
    """

    def __init__(self, host: str, upstream: str, *, length_delta: int = 0,
                 silent_files: bool = False) -> None:
        up = urllib.parse.urlsplit(upstream)
        self.upstream = (up.hostname or "", up.port or 80)
        self.length_delta = length_delta
        self.silent_files = silent_files
        self.lies = 0
        super().__init__(host)

    def handle(self, conn: socket.socket) -> None:
        with contextlib.closing(conn), contextlib.suppress(OSError):
            head = _read_head(conn)
            if head is None:
                return
            request_line = head.split(b"\r\n", 1)[0]
            is_file = b" /files/" in request_line and request_line.startswith(b"GET")
            if is_file and self.silent_files:
                while not self._stop.is_set() and conn.recv(65536):
                    pass
                return
            head = head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            with socket.create_connection(self.upstream, timeout=30) as up:
                up.sendall(head)
                self._relay(up, conn, lie=is_file)

    def _relay(self, up: socket.socket, conn: socket.socket, *, lie: bool) -> None:
        answer = _read_head(up)
        if answer is None:
            return
        head, _, rest = answer.partition(b"\r\n\r\n")
        if lie and self.length_delta:
            head = self._rewrite_length(head)
        conn.sendall(head + b"\r\n\r\n" + rest)
        # Pass the body on until either side closes: a client that hangs up ends the
        # upstream request at once, as a real agent's client would.
        with selectors.DefaultSelector() as selector:
            selector.register(up, selectors.EVENT_READ)
            selector.register(conn, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(0.2):
                    piece = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not piece:
                        return
                    if key.fileobj is up:
                        conn.sendall(piece)

    def _rewrite_length(self, head: bytes) -> bytes:
        lines = head.split(b"\r\n")
        for i, line in enumerate(lines):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                new = max(0, int(value) + self.length_delta)
                lines[i] = b"Content-Length: " + str(new).encode()
                self.lies += 1
        return b"\r\n".join(lines)


def make_bytes(size: int, seed: int = 0) -> bytes:
    """*size* deterministic, incompressible-ish bytes (so deflate cannot hide a bug)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])
