"""Download slots, client disconnects and the shared bandwidth cap, on real agent processes."""

from __future__ import annotations

import http.client
import socket
import threading
import time

from tests.agent.conftest import AgentFactory, Tree, raw_get

BIG = 64 * 1024 * 1024  # sparse: costs no disk, more than socket buffers hold


def sparse(tree: Tree, name: str, size: int = BIG) -> str:
    with (tree.root / name).open("wb") as f:
        f.truncate(size)
    return f"/files/logs/{name}"


def open_stalled_download(url: str, path: str) -> socket.socket:
    """Start a download and read nothing more: the agent blocks on a full socket."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert sock.recv(12).startswith(b"HTTP/1.1 200")
    return sock


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_past_max_concurrent_downloads_is_429(agent_factory: AgentFactory, tree: Tree) -> None:
    agent = agent_factory(max_concurrent_downloads=2)
    path = sparse(tree, "big.bin")
    stalled = [open_stalled_download(agent.url, path) for _ in range(2)]
    try:
        status, headers, body = raw_get(agent.url, path)
        assert status == 429
        assert headers["Retry-After"] == "1"
        assert b"too_many_requests" in body
        # HEAD and small answers need no slot; readiness reports the full slots
        assert raw_get(agent.url, path, method="HEAD")[0] == 200
        status, _, body = raw_get(agent.url, "/readyz")
        assert status == 503 and b"download slots" in body
    finally:
        for sock in stalled:
            sock.close()
    assert wait_for(lambda: raw_get(agent.url, "/readyz")[0] == 200)
    assert raw_get(agent.url, "/files/logs/app.log")[0] == 200


def test_client_leaving_frees_the_file(agent_factory: AgentFactory, tree: Tree) -> None:
    agent = agent_factory()
    path = sparse(tree, "leave.bin")
    raw_get(agent.url, "/livez")
    time.sleep(0.2)
    before = agent.open_fds()
    socks = [open_stalled_download(agent.url, path) for _ in range(3)]
    assert wait_for(lambda: agent.open_fds() >= before + 6)  # a socket and a file each
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST: the client is gone mid-file
    assert wait_for(lambda: agent.open_fds() <= before), (before, agent.open_fds())
    status, _, body = raw_get(agent.url, "/info")
    assert status == 200 and b'"active_downloads":0' in body
    assert "Traceback" not in agent.output()


def timed_download(url: str, path: str, results: list[tuple[int, float]]) -> None:
    host, port = url.removeprefix("http://").split(":")
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path)
    body = conn.getresponse().read()
    results.append((len(body), time.monotonic() - start))
    conn.close()


def test_bandwidth_cap_is_shared_by_all_downloads(agent_factory: AgentFactory, tree: Tree) -> None:
    rate = 2 * 1024 * 1024
    agent = agent_factory(max_bandwidth="2MiB")
    size = 2 * 1024 * 1024
    paths = [sparse(tree, f"bw{i}.bin", size) for i in range(2)]
    results: list[tuple[int, float]] = []
    threads = [threading.Thread(target=timed_download, args=(agent.url, p, results)) for p in paths]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    elapsed = time.monotonic() - start
    assert [r[0] for r in results] == [size, size]
    # together 4 MiB at 2 MiB/s: ~2 s. A cap per download would take ~1 s; allow slack
    # for the one-chunk burst and a busy machine.
    expected = 2 * size / rate
    assert 0.75 * expected <= elapsed <= 3 * expected, elapsed
