"""Plain-TCP downloads by ``os.sendfile`` (agent/sendfile.py), on real agent processes.

Which path served a download is read from ``fleetzip_agent_sendfile_bytes_total``: the bytes
sendfile put in the socket. Plain downloads over TCP take it; a range download (206: the
send pass hashes its bytes for the coordinator) and anything over TLS keep the copying path.
`SendfileSpan` itself is also run on a socket pair, for the arithmetic of spans that do not
start at 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
import socket
import ssl
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from agent.bandwidth import TokenBucket
from agent.sendfile import SendfileSpan
from tests.agent.conftest import AgentFactory, Tree, raw_get
from tests.agent.test_tls_auth import client_context, tls_files
from tests.support import ServerProcess, http_get

KIB, MIB = 1024, 1024 * 1024
SENDFILE = "fleetzip_agent_sendfile_bytes_total"
SERVED = "fleetzip_agent_bytes_served_total"


def data(size: int, seed: int = 1) -> bytes:
    """*size* bytes that differ at every offset (a misplaced span cannot match by chance)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def metric(agent: ServerProcess, name: str, context: Any = None) -> int:
    status, _, body = http_get(agent.url + "/metrics", context=context)
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{name} not in /metrics")


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def connection(agent: ServerProcess) -> http.client.HTTPConnection:
    host, port = agent.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=20)


# -- which path, and the bytes -------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 64 * KIB + 3, 3 * MIB + 17])
def test_plain_download_goes_by_sendfile_byte_exact(
    agent_factory: AgentFactory, tree: Tree, size: int
) -> None:
    body = data(size)
    tree.write("sf/plain.bin", body)
    agent = agent_factory()
    before, served = metric(agent, SENDFILE), metric(agent, SERVED)
    status, headers, got = raw_get(agent.url, "/files/logs/sf/plain.bin")
    assert status == 200
    assert headers["Content-Length"] == str(size)
    assert "Connection" not in headers  # kept alive
    assert got == body
    assert metric(agent, SENDFILE) == before + size
    assert metric(agent, SERVED) == served + size
    assert "Traceback" not in agent.output()


def test_range_download_keeps_the_hashing_path(agent_factory: AgentFactory, tree: Tree) -> None:
    body = data(2 * MIB + 5)
    tree.write("sf/range.bin", body)
    agent = agent_factory()
    before = metric(agent, SENDFILE)
    start, last = 1000, 2 * MIB - 1
    status, headers, got = raw_get(
        agent.url, "/files/logs/sf/range.bin", {"Range": f"bytes={start}-{last}"}
    )
    assert (status, got) == (206, body[start : last + 1])
    assert headers["Content-Range"] == f"bytes {start}-{last}/{len(body)}"
    assert metric(agent, SENDFILE) == before  # the send pass saw every byte
    # If-Range that no longer holds: the whole file, 200, by sendfile
    status, _, got = raw_get(
        agent.url, "/files/logs/sf/range.bin", {"Range": "bytes=5-9", "If-Range": '"stale"'}
    )
    assert (status, got) == (200, body)
    assert metric(agent, SENDFILE) == before + len(body)


def test_connection_is_kept_alive_after_a_sendfile_body(
    agent_factory: AgentFactory, tree: Tree
) -> None:
    big = data(2 * MIB + 11)
    tree.write("sf/alive.bin", big)
    agent = agent_factory()
    before = metric(agent, SENDFILE)
    conn = connection(agent)
    port = None
    for path, expected in [
        ("/files/logs/sf/alive.bin", big),
        ("/files/logs/app.log", b"hello from logs\n"),
        ("/files/logs/sf/alive.bin", big),
    ]:
        conn.request("GET", path)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, expected)
        assert response.getheader("Connection") is None
        assert conn.sock is not None
        port = port or conn.sock.getsockname()[1]
        assert conn.sock.getsockname()[1] == port  # the same connection throughout
    conn.close()
    assert metric(agent, SENDFILE) == before + 2 * len(big) + len(b"hello from logs\n")
    assert agent.output().count("200 GET /files/logs/sf/alive.bin") == 2  # logged as finish() would
    # pipelined: the second request is already in the stream's buffer when the first ends
    host, port_s = agent.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port_s)), timeout=20) as sock:
        request = b"GET /files/logs/sf/alive.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
    first, rest = received.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 200")
    assert rest[: len(big)] == big
    second, body = rest[len(big) :].split(b"\r\n\r\n", 1)
    assert second.startswith(b"HTTP/1.1 200") and b"Connection: close" in second
    assert body == big  # then the agent closed the connection, as asked
    assert "Traceback" not in agent.output()


def run_span(path: Path, start: int, stop: int, bucket: TokenBucket | None = None) -> bytes:
    """Send ``[start, stop)`` of *path* with `SendfileSpan` over a socket pair; what arrived."""
    received = bytearray()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * KIB)  # many EAGAINs

    def read() -> None:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)
        while chunk := theirs.recv(7000):
            received.extend(chunk)
            time.sleep(0.0005)

    reader = threading.Thread(target=read)
    reader.start()
    fd = os.open(path, os.O_RDONLY)
    try:

        async def send() -> int:
            span = SendfileSpan(
                fd, start, stop, out_fd=ours.fileno(), closed=lambda: False, bucket=bucket,
                slice_size=100 * KIB,
            )

            async def flush() -> None:
                return None

            return await span.send(flush)

        assert asyncio.run(send()) == stop - start
    finally:
        os.close(fd)
        ours.close()
        reader.join(10)
        theirs.close()
    return bytes(received)


@pytest.mark.parametrize("span", [(0, 0), (0, 1), (1, 300 * KIB + 1), (123_457, 1 * MIB)])
def test_sendfile_span_sends_exactly_its_bytes(tmp_path: Path, span: tuple[int, int]) -> None:
    body = data(1 * MIB)
    path = tmp_path / "f.bin"
    path.write_bytes(body)
    assert run_span(path, *span) == body[span[0] : span[1]]


# -- pacing ------------------------------------------------------------------------------


def test_sendfile_is_paced_by_max_bandwidth(agent_factory: AgentFactory, tree: Tree) -> None:
    rate = 2 * MIB
    body = data(3 * MIB)
    tree.write("sf/paced.bin", body)
    agent = agent_factory(max_bandwidth="2MiB")  # burst: chunk_size 64 KiB
    before = metric(agent, SENDFILE)
    started = time.monotonic()
    status, _, got = raw_get(agent.url, "/files/logs/sf/paced.bin")
    elapsed = time.monotonic() - started
    assert (status, got) == (200, body)
    assert metric(agent, SENDFILE) == before + len(body)
    expected = (len(body) - 64 * KIB) / rate  # ~1.47 s; unpaced it takes milliseconds
    assert 0.85 * expected <= elapsed <= 4 * expected, elapsed


# -- clients that leave, files that shrink -----------------------------------------------


def test_client_vanishing_mid_file_leaves_no_descriptor(
    agent_factory: AgentFactory, tree: Tree
) -> None:
    (tree.root / "sf").mkdir(exist_ok=True)
    with (tree.root / "sf" / "big.bin").open("wb") as f:
        f.truncate(512 * MIB)  # sparse: far more than the socket buffers hold
    agent = agent_factory()
    raw_get(agent.url, "/livez")
    time.sleep(0.2)
    idle = agent.open_fds()
    before = metric(agent, SENDFILE)
    host, port = agent.url.removeprefix("http://").split(":")
    socks = []
    for _ in range(3):
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /files/logs/sf/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        socks.append(sock)
    # a socket, the file and the socket's duplicate each, while they wait on full sockets
    assert wait_for(lambda: agent.open_fds() >= idle + 9), (idle, agent.open_fds())
    time.sleep(0.5)  # all three now wait for a full socket, on the loop
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST: gone mid-file
    assert wait_for(lambda: agent.open_fds() <= idle), (idle, agent.open_fds())
    status, _, info = raw_get(agent.url, "/info")
    assert status == 200 and b'"active_downloads":0' in info
    assert 0 < metric(agent, SENDFILE) - before < 3 * 512 * MIB
    assert "Traceback" not in agent.output()


def test_file_truncated_mid_send_ends_the_response_short(
    agent_factory: AgentFactory, tree: Tree
) -> None:
    size = 64 * MIB
    path = tree.root / "sf" / "shrinks.log"
    path.parent.mkdir(exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
    agent = agent_factory()
    before = metric(agent, SENDFILE)
    conn = connection(agent)
    conn.request("GET", "/files/logs/sf/shrinks.log")
    response = conn.getresponse()
    assert response.getheader("Content-Length") == str(size)
    assert response.read(64 * KIB) == bytes(64 * KIB)
    os.truncate(path, 1 * MIB)  # copytruncate log rotation
    with pytest.raises(http.client.IncompleteRead) as info:
        response.read()
    conn.close()
    got = 64 * KIB + len(info.value.partial)
    assert got < size
    assert wait_for(lambda: "sf/shrinks.log shrank while being sent" in agent.output())
    assert wait_for(lambda: metric(agent, SENDFILE) - before == got), (got, metric(agent, SENDFILE))
    assert "Traceback" not in agent.output()
    status, _, info_body = raw_get(agent.url, "/info")
    assert status == 200 and b'"active_downloads":0' in info_body


# -- TLS ---------------------------------------------------------------------------------


def test_tls_keeps_the_copying_path(
    agent_factory: AgentFactory, tree: Tree, tmp_path: Path
) -> None:
    ca = trustme.CA()
    files = tls_files(ca, tmp_path)
    context: ssl.SSLContext = client_context(ca, with_cert=False)
    agent = agent_factory(
        tls={"cert": files["cert"], "key": files["key"]}, scheme="https", context=context
    )
    body = data(3 * MIB + 1)
    tree.write("sf/tls.bin", body)
    status, _, got = http_get(agent.url + "/files/logs/sf/tls.bin", context=context)
    assert (status, got) == (200, body)
    assert metric(agent, SENDFILE, context) == 0
    assert metric(agent, SERVED, context) == len(body)
