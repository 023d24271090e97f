"""Deflate-frame downloads borrow their frame buffer from the read budget (agent/deflate.py)."""

from __future__ import annotations

import os
import socket
import struct
import time

from tests.agent.conftest import AgentFactory, Tree
from tests.agent.test_budget_faults import metrics

MIB = 1024 * 1024


def test_a_deflate_download_holds_its_frame_buffer_in_the_budget(
    agent_factory: AgentFactory, tree: Tree
) -> None:
    tree.write("random.bin", os.urandom(32 * MIB))  # incompressible: frames fill the socket
    agent = agent_factory(chunk_size="1MiB", read_budget="4MiB", max_concurrent_downloads=8)
    host, port = agent.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    try:
        sock.sendall(
            b"GET /files/logs/random.bin?compress=deflate HTTP/1.1\r\nHost: x\r\n"
            b"Range: bytes=0-\r\n\r\n"
        )
        assert sock.recv(12).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)  # stalled on a full socket, one frame's buffer borrowed
        held = metrics(agent.url)
        assert held["read_budget_in_use_bytes"] == 1 * MIB, held  # alone: a chunk_size piece
        assert held["read_buffers_mapped_bytes"] >= 1 * MIB, held
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    deadline = time.monotonic() + 10
    while metrics(agent.url)["read_budget_in_use_bytes"] != 0:
        assert time.monotonic() < deadline, metrics(agent.url)
        time.sleep(0.05)
    assert metrics(agent.url)["read_buffers_mapped_bytes"] == 0  # no download: pool unmapped
    assert "Traceback" not in agent.output()
