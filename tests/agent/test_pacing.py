"""How the agent paces a download to its client: piece sizes, read-ahead, bytes exact.

`PacePolicy` and `SpanSender` are driven directly (a real file, a real executor, a handler
whose ``flush()`` is as slow or fast as a client), and a real agent serves a client that
reads slowly, then fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from agent.budget import ReadBudget
from agent.files import PacePolicy, SpanSender
from tests.agent.conftest import AgentFactory, Tree

KIB, MIB = 1024, 1024 * 1024


# -- PacePolicy ---------------------------------------------------------------------------


def test_policy_starts_small_and_grows_to_max_for_a_fast_client() -> None:
    policy = PacePolicy(MIB, min_piece=64 * KIB, horizon=0.05)
    assert (policy.size, policy.read_ahead) == (64 * KIB, False)
    sizes = []
    for _ in range(6):
        policy.taken(policy.size, 0.001)  # took the piece in 1 ms: fast
        sizes.append(policy.size)
    assert sizes == [128 * KIB, 256 * KIB, 512 * KIB, MIB, MIB, MIB]  # at most doubles
    assert policy.read_ahead


def test_policy_shrinks_at_once_and_stops_reading_ahead_for_a_slow_client() -> None:
    policy = PacePolicy(MIB, min_piece=64 * KIB, horizon=0.05)
    for _ in range(4):
        policy.taken(policy.size, 0.001)
    assert (policy.size, policy.read_ahead) == (MIB, False)  # not before a full-size piece
    policy.taken(MIB, 0.001)
    assert (policy.size, policy.read_ahead) == (MIB, True)
    policy.taken(MIB, 0.2)  # 5 MiB/s: 256 KiB per horizon
    assert (policy.size, policy.read_ahead) == (256 * KIB, False)
    policy.taken(256 * KIB, 0.25)  # 1 MiB/s: 51 KiB per horizon, below the smallest piece
    assert (policy.size, policy.read_ahead) == (64 * KIB, False)
    policy.taken(64 * KIB, 0.06)  # still a little slower than a piece per horizon
    assert (policy.size, policy.read_ahead) == (64 * KIB, False)


def test_policy_keeps_a_steady_client_where_it_is_and_reads_ahead_only_at_full_size() -> None:
    policy = PacePolicy(MIB, min_piece=64 * KIB, horizon=0.05)
    policy.taken(64 * KIB, 0.001)
    policy.taken(128 * KIB, 0.04)  # 160 KiB per horizon: more than a piece, less than two
    assert (policy.size, policy.read_ahead) == (128 * KIB, False)
    at_max = PacePolicy(128 * KIB, min_piece=64 * KIB, horizon=0.05)
    at_max.taken(64 * KIB, 0.001)
    at_max.taken(128 * KIB, 0.04)  # the same pace, but 128 KiB is this policy's full size
    assert (at_max.size, at_max.read_ahead) == (128 * KIB, True)


def test_policy_small_chunk_size_is_both_bounds() -> None:
    policy = PacePolicy(16 * KIB, min_piece=64 * KIB)
    assert policy.size == 16 * KIB
    policy.taken(16 * KIB, 10.0)
    assert policy.size == 16 * KIB
    policy.taken(16 * KIB, 0.0)
    assert policy.size == 16 * KIB and policy.read_ahead


# -- SpanSender with a handler as slow or fast as a client -------------------------------


class PacedHandler:
    """Takes what `SpanSender` writes, at *delay* seconds per piece, and records what it got.

    `outstanding` is, at each piece, the bytes read from the file (or being read) and not yet
    sent: the memory the download holds.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.body = bytearray()
        self.writes: list[int] = []
        self.outstanding: list[int] = []
        self.sender: SpanSender | None = None
        self.start = 0
        self.flushes = 0

    async def flush(self) -> None:
        self.flushes += 1  # the headers

    async def write_piece(self, piece: memoryview) -> None:
        assert self.sender is not None
        self.body += piece
        self.writes.append(len(piece))
        self.outstanding.append(self.sender.offset - self.start - self.sender.sent)
        await asyncio.sleep(self.delay)


def send_file(
    path: Path, delay: float, start: int, stop: int, budget: ReadBudget | None = None
) -> tuple[PacedHandler, int]:
    handler = PacedHandler(delay)
    budget = budget or ReadBudget(32 * MIB, slots=4, max_piece=256 * KIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        sender = SpanSender(fd, start, stop, budget=budget)
        handler.sender, handler.start = sender, start
        sent = asyncio.run(sender.send(handler))
    finally:
        os.close(fd)
    assert handler.flushes == 1
    return handler, sent


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(3 * MIB + 12345)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


def test_slow_client_holds_one_piece(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    handler, sent = send_file(path, 0.06, 1000, 1000 + 600 * KIB)  # slower than the horizon
    assert bytes(handler.body) == data[1000 : 1000 + 600 * KIB] and sent == 600 * KIB
    # nothing read ahead: each piece is read only after the client took the one before
    assert all(held == size for held, size in zip(handler.outstanding, handler.writes, strict=True))


def test_fast_client_reads_ahead(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    handler, sent = send_file(path, 0.0, 0, len(data))
    assert bytes(handler.body) == data and sent == len(data)
    assert max(handler.writes) == 256 * KIB  # grew to chunk_size
    assert any(held > size for held, size in zip(handler.outstanding, handler.writes, strict=True))
    assert max(handler.outstanding) <= 2 * 256 * KIB


# -- a real agent, a client that reads slowly, then fast ---------------------------------


def test_slow_then_fast_reader_gets_exact_bytes(agent_factory: AgentFactory, tree: Tree) -> None:
    data = os.urandom(6 * MIB + 777)
    tree.write("paced.bin", data)
    agent = agent_factory(chunk_size="1MiB")
    host, port = agent.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)  # before connect
    sock.settimeout(10)
    sock.connect((host, int(port)))
    try:
        sock.sendall(b"GET /files/logs/paced.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = bytearray()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # ~1 MB/s for a second: the agent shrinks pieces
            received += sock.recv(16 * KIB)
            time.sleep(0.016)
        while chunk := sock.recv(256 * KIB):  # then as fast as it comes: pieces grow again
            received += chunk
    finally:
        sock.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert f"Content-Length: {len(data)}".encode() in head
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()


# -- the kernel's share: a stalled client does not get megabytes queued for it -----------


def kernel_send_queue(server_port: int, client_port: int) -> int | None:
    """Bytes queued in the kernel on the agent's side of a loopback connection (Linux)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if (int(local.split(":")[1], 16), int(remote.split(":")[1], 16)) == (
            server_port,
            client_port,
        ):
            return int(queues.split(":")[0], 16)
    return None


@pytest.mark.skipif(
    not Path("/proc/net/tcp").exists() or not hasattr(socket, "TCP_NOTSENT_LOWAT"),
    reason="reads the send queue from Linux /proc/net/tcp",
)
def test_stalled_client_gets_little_queued_in_the_kernel(
    agent_factory: AgentFactory, tree: Tree
) -> None:
    with (tree.root / "stalled.bin").open("wb") as f:
        f.truncate(64 * MIB)
    agent = agent_factory(chunk_size="1MiB")
    host, port = agent.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    try:
        # a range (206): the copying path, which sets the option; a plain download goes by
        # sendfile, holds no buffer and lets the kernel queue as nginx does
        sock.sendall(b"GET /files/logs/stalled.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-\r\n\r\n")
        assert sock.recv(12).startswith(b"HTTP/1.1 206")
        queued = []
        for _ in range(10):  # reads nothing more for a second; the agent fills what it may
            time.sleep(0.1)
            queued.append(kernel_send_queue(int(port), sock.getsockname()[1]) or 0)
    finally:
        sock.close()
    # TCP_NOTSENT_LOWAT 128 KiB + what is in flight to a 16 KiB window + one send's overshoot;
    # without the option the kernel takes several MiB (tcp_wmem) of the file at once
    assert 0 < max(queued) <= 512 * KIB, queued
