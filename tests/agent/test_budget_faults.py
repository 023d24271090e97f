"""The read budget on a real agent process, under clients that stall, trickle, vanish.

A small budget (``read_budget: 2MiB`` for 12 slots) and ``chunk_size: 1MiB``, so the budget,
not the pace, sizes the pieces. Clients that read nothing, that read one byte a second
(both with a tiny receive window, so the agent really waits on them), that hang up mid-file
with a reset, that read slowly with the kernel's default buffers — and one that reads as fast
as it can and must get every byte while the others hold their pieces. ``/metrics`` must never
show more in use than the budget, and when the clients are gone nothing is held, nothing
mapped, and the descriptors are back to their idle count.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from tests.agent.conftest import AgentFactory, Tree, raw_get

KIB, MIB = 1024, 1024 * 1024
BUDGET = 2 * MIB
SLOTS = 12


def metrics(url: str) -> dict[str, float]:
    status, _, body = raw_get(url, "/metrics")
    assert status == 200
    values = {}
    for line in body.decode().splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("fleetzip_agent_read_"):
            values[name.removeprefix("fleetzip_agent_")] = float(value)
    return values


def connect(url: str, path: str, rcvbuf: int | None) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf is not None:  # before connect: the window stays that small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect((host, int(port)))
    # A range (206) takes the path through the read budget: a plain download goes by
    # sendfile and borrows nothing (tests/agent/test_sendfile.py).
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-\r\nConnection: close\r\n\r\n".encode()
    )
    assert sock.recv(12).startswith(b"HTTP/1.1 206")
    return sock


def reset(sock: socket.socket) -> None:
    """Close with RST: the client is gone, mid-file."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextmanager
def background(target: object, *args: object) -> Iterator[threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(*args, stop), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(10)


def trickle(sock: socket.socket, stop: threading.Event) -> None:
    """One byte a second."""
    while not stop.wait(1.0):
        sock.recv(1)


def slow_reader(sock: socket.socket, stop: threading.Event) -> None:
    """About 2 MB/s with the kernel's default buffers."""
    while not stop.wait(0.008):
        if not sock.recv(16 * KIB):
            return


def fast_download(url: str, path: str) -> bytes:
    sock = connect(url, path, None)
    received = bytearray()
    with sock:
        while chunk := sock.recv(256 * KIB):
            received += chunk
    return bytes(received).partition(b"\r\n\r\n")[2]


def test_budget_holds_under_stalled_trickling_vanishing_clients(
    agent_factory: AgentFactory, tree: Tree
) -> None:
    data = os.urandom(24 * MIB)
    tree.write("big.bin", data)
    path = "/files/logs/big.bin"
    agent = agent_factory(chunk_size="1MiB", read_budget="2MiB", max_concurrent_downloads=SLOTS)
    raw_get(agent.url, "/livez")
    time.sleep(0.3)
    idle_fds = agent.open_fds()
    assert metrics(agent.url)["read_budget_bytes"] == BUDGET

    seen: list[dict[str, float]] = []

    def sample(stop: threading.Event) -> None:
        while not stop.wait(0.05):
            seen.append(metrics(agent.url))

    with ExitStack() as stack:
        stack.enter_context(background(sample))
        stalled = [connect(agent.url, path, 4 * KIB) for _ in range(3)]
        trickling = [connect(agent.url, path, 4 * KIB) for _ in range(3)]
        slow = [connect(agent.url, path, None) for _ in range(3)]
        for sock in stalled + trickling + slow:
            stack.callback(sock.close)
        for sock in trickling:
            stack.enter_context(background(trickle, sock))
        for sock in slow:
            stack.enter_context(background(slow_reader, sock))
        vanishing = [connect(agent.url, path, None) for _ in range(2)]
        for sock in vanishing:
            sock.recv(100 * KIB)
            reset(sock)
        # the others hold their pieces: a fast download still gets every byte
        body = fast_download(agent.url, path)
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        time.sleep(1.0)
        assert agent.output().count("Traceback") == 0

    held = [m["read_budget_in_use_bytes"] for m in seen]
    final = metrics(agent.url)
    assert len(held) > 10 and max(held) > BUDGET // 2, held  # it was sampled, and it was busy
    assert max(held) <= BUDGET, held
    assert 0 < final["read_budget_high_water_bytes"] <= BUDGET, final
    assert final["read_buffers_mapped_high_water_bytes"] <= BUDGET, final
    assert final["read_budget_squeezed_total"] > 0, final  # the budget really was short

    # every client gone: nothing held, nothing mapped, descriptors back to idle
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = metrics(agent.url)
        if (now["read_budget_in_use_bytes"], now["read_buffers_mapped_bytes"]) == (0, 0) and (
            agent.open_fds() <= idle_fds
        ):
            break
        time.sleep(0.1)
    assert (now["read_budget_in_use_bytes"], now["read_buffers_mapped_bytes"]) == (0, 0), now
    assert agent.open_fds() <= idle_fds, (idle_fds, agent.open_fds())
    status, _, info = raw_get(agent.url, "/info")
    assert status == 200 and b'"active_downloads":0' in info
    assert f'"bytes":{BUDGET}'.encode() in info
