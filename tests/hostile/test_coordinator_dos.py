"""Attacks on the coordinator's time and slots, against real processes (S3, S8, S9).

Each attack runs while a `Watch` keeps asking ``/livez`` and keeps reading a running,
bandwidth-limited download: both must keep answering within `BOUND` seconds the whole
time (these attacks once stalled them 3 s and more). Attack traffic comes from its own
loopback address, so per-address limits never touch the watch or other tests.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import json
import os
import selectors
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from coordinator.users import FAILURE_LIMIT, hash_password
from tests.faults.harness import Fleet, check_archive, fetch
from tests.support import http_get

pytestmark = pytest.mark.timeout(120)

BOUND = 1.0  # s: the longest /livez or a running download may pause during an attack
TOKEN = "dos-test-token-" + "y" * 24
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SLOW = 4 * 1024 * 1024  # the watched download: 4 MiB at 256 KiB/s, ~16 s


def basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def request(url: str, path: str, *, headers: dict[str, str] | None = None,
            source: str | None = None, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET from the loopback address *source*."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def assert_json_error(status: int, headers: dict[str, str], body: bytes, code: int) -> None:
    assert status == code, (status, body[:300])
    error = json.loads(body)["error"]
    assert error["code"] and error["message"], body
    if code == 429:
        assert int(headers["retry-after"]) >= 1, headers


class Watch:
    """Polls /livez and reads a slow download in threads; records the longest pauses."""

    def __init__(self, fleet: Fleet, dest: Path) -> None:
        self.url = fleet.url
        self.stop = threading.Event()
        self.livez_worst = 0.0
        self.download_worst = 0.0
        self.download_bytes = 0
        self.errors: list[str] = []
        self._last_byte = time.monotonic()
        self._threads = [threading.Thread(target=self._livez, daemon=True),
                         threading.Thread(target=self._download, args=(dest,), daemon=True)]

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 10
        while self.download_bytes < 64 * 1024 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.download_bytes, f"the watched download did not start: {self.errors}"
        self.livez_worst = self.download_worst = 0.0  # count from here: the attack starts
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(20)

    def _livez(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status, _, _ = request(self.url, "/livez", timeout=10)
                if status != 200:
                    self.errors.append(f"/livez answered {status}")
            except OSError as exc:
                self.errors.append(f"/livez: {exc}")
            self.livez_worst = max(self.livez_worst, time.monotonic() - started)
            time.sleep(0.05)

    def _download(self, dest: Path) -> None:
        def progress(size: int) -> None:
            now = time.monotonic()
            if not self.stop.is_set():
                self.download_worst = max(self.download_worst, now - self._last_byte)
            self._last_byte = now
            self.download_bytes = size

        try:
            fetch(self.url + "/api/download?root=logs&path=slow.bin", dest, headers=BEARER,
                  on_bytes=progress)
        except OSError as exc:
            self.errors.append(f"download: {exc}")

    def assert_responsive(self) -> None:
        assert not self.errors, self.errors
        assert self.livez_worst < BOUND, f"/livez took {self.livez_worst:.2f}s"
        assert self.download_worst < BOUND, f"the download paused {self.download_worst:.2f}s"
        assert self.download_bytes < SLOW + 4096, "the watched download ended before the attack"


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Fleet]:
    """A coordinator with a bearer token and Basic users (real 600,000-iteration hashes),
    in front of one agent whose downloads are slow (256 KiB/s)."""
    token_file = tmp_path / "tokens"
    token_file.write_text(TOKEN + "\n")
    users_file = tmp_path / "users"
    users_file.write_text(f"alice:{hash_password('correct horse')}\n")
    fleet = Fleet(tmp_path, client_headers=BEARER)
    try:
        fleet.add_agent("n1", {"slow.bin": b"s" * SLOW, "small.log": b"small\n" * 100},
                        max_bandwidth="256KiB")
        fleet.start_agents()
        fleet.start_coordinator(token_file=str(token_file), users_file=str(users_file))
        fleet.wait_healthy(1)
        yield fleet
    finally:
        fleet.close()


# ---------------------------------------------------------------------------- S3


def test_wrong_passwords_in_parallel_neither_freeze_nor_pass(guarded: Fleet,
                                                             tmp_path: Path) -> None:
    attacker, browser = guarded.host(), guarded.host()
    status, _, _ = request(guarded.url, "/api/agents", headers=basic("alice", "correct horse"),
                           source=browser)
    assert status == 200  # a browser signed in before the attack

    guesses = [basic("alice", f"guess-{i}") for i in range(8)]
    guesses += [basic(f"nobody-{i}", "guess") for i in range(8)]  # unknown users, same cost
    with Watch(guarded, tmp_path / "watched.zip") as watch, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda h: request(guarded.url, "/api/agents", headers=h, source=attacker), guesses))
        watch.assert_responsive()

    statuses = sorted(a[0] for a in answers)
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= FAILURE_LIMIT, statuses  # at most the limit were checked
    for status, headers, body in answers:
        assert_json_error(status, headers, body, status)
    # Past the limit the address is refused before any hashing, whatever it sends ...
    assert_json_error(*request(guarded.url, "/api/agents", headers=basic("eve", "x"),
                               source=attacker), 429)
    # ... except a password verified before (a signed-in browser behind the same address).
    assert request(guarded.url, "/api/agents", headers=basic("alice", "correct horse"),
                   source=attacker)[0] == 200
    # Tokens are not limited (generated secrets, checked for next to nothing).
    assert request(guarded.url, "/api/agents", headers=BEARER, source=attacker)[0] == 200
    # Other addresses are not affected: still a plain 401.
    assert_json_error(*request(guarded.url, "/api/agents", headers=basic("eve", "x"),
                               source=browser), 401)


# ---------------------------------------------------------------------------- S9


def test_half_sent_requests_are_closed_after_the_header_timeout(guarded: Fleet,
                                                                tmp_path: Path) -> None:
    from coordinator.__main__ import HEADER_TIMEOUT

    attacker = guarded.host()
    parts = urllib.parse.urlsplit(guarded.url)
    sockets = []
    for _ in range(20):
        sock = socket.create_connection((parts.hostname, parts.port), timeout=30,
                                        source_address=(attacker, 0))
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)
    started = time.monotonic()
    try:
        with Watch(guarded, tmp_path / "watched.zip") as watch:
            closed_after = _wait_closed(sockets[::2], sockets[1::2], started)
            watch.assert_responsive()
    finally:
        for sock in sockets:
            sock.close()
    assert max(closed_after) < HEADER_TIMEOUT + 3, closed_after
    assert min(closed_after) > HEADER_TIMEOUT - 1, closed_after


def _wait_closed(silent: list[socket.socket], dripping: list[socket.socket],
                 started: float) -> list[float]:
    """Seconds from *started* until the server closed each socket, while the *dripping*
    ones send one more header byte every second (a slowloris). None may be answered."""
    closed: dict[socket.socket, float] = {}
    last_drip = time.monotonic()
    with selectors.DefaultSelector() as selector:
        for sock in silent + dripping:
            selector.register(sock, selectors.EVENT_READ)
        while len(closed) < len(silent) + len(dripping):
            assert time.monotonic() - started < 30, "half-sent requests stayed open 30 s"
            for key, _ in selector.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(1024)
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"a half-sent request was answered: {data[:200]!r}"
                closed[sock] = time.monotonic() - started
                selector.unregister(sock)
            if time.monotonic() - last_drip >= 1:
                last_drip = time.monotonic()
                for sock in dripping:
                    if sock not in closed:
                        with contextlib.suppress(OSError):
                            sock.sendall(b"X")
    return list(closed.values())


def test_oversized_headers_are_refused(guarded: Fleet) -> None:
    parts = urllib.parse.urlsplit(guarded.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        answer = b""
        try:
            while piece := sock.recv(65536):
                answer += piece
        except ConnectionResetError:
            pass
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]


# ---------------------------------------------------------------------------- S8


class StalledClient:
    """Asks for a download, then reads nothing (a tiny receive buffer, never drained)."""

    def __init__(self, url: str, path: str, source: str,
                 headers: dict[str, str] | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind((source, 0))
        self.sock.connect((parts.hostname, parts.port))
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def drained(self, timeout: float = 30) -> int:
        """Read until the server closes; the bytes received (head included)."""
        self.sock.settimeout(timeout)
        total = 0
        try:
            while piece := self.sock.recv(1 << 20):
                total += len(piece)
        except ConnectionResetError:
            pass
        return total

    def close(self) -> None:
        self.sock.close()


def active_downloads(fleet: Fleet, headers: dict[str, str] | None = None) -> list[Any]:
    status, _, body = http_get(fleet.url + "/api/downloads", headers=headers)
    assert status == 200, body
    return list(json.loads(body)["downloads"])


def wait_active(fleet: Fleet, count: int, headers: dict[str, str] | None = None,
                timeout: float = 20) -> float:
    """Wait until exactly *count* downloads run; the seconds it took."""
    started = time.monotonic()
    while len(active_downloads(fleet, headers)) != count:
        assert time.monotonic() - started < timeout, active_downloads(fleet, headers)
        time.sleep(0.1)
    return time.monotonic() - started


@functools.cache
def big() -> bytes:
    return os.urandom(24 * 1024 * 1024)  # more than the socket buffers hold


def test_per_user_download_limit(tmp_path: Path) -> None:
    users_file = tmp_path / "users"
    users_file.write_text("".join(f"{u}:{hash_password(u + '-pw', iterations=1000)}\n"
                                  for u in ("alice", "bob")))
    alice, bob = basic("alice", "alice-pw"), basic("bob", "bob-pw")
    fleet = Fleet(tmp_path, client_headers=alice)
    stalled: list[StalledClient] = []
    try:
        fleet.add_agent("n1", {"big.bin": big(), "small.log": b"small\n" * 100})
        fleet.start_agents()
        fleet.start_coordinator(users_file=str(users_file), download={
            "max_concurrent": 8, "max_per_user": 2, "idle_timeout": "30s"})
        fleet.wait_healthy(1)
        here = fleet.host()
        stalled = [StalledClient(fleet.url, "/api/download?root=logs&path=big.bin", here, alice)
                   for _ in range(2)]
        wait_active(fleet, 2, alice)
        status, headers, body = request(fleet.url, "/api/download?root=logs&path=small.log",
                                        headers=alice, source=here)
        assert_json_error(status, headers, body, 429)
        assert "download.max_per_user = 2" in json.loads(body)["error"]["message"]
        got = fetch(fleet.url + "/api/download?root=logs&path=small.log",
                    tmp_path / "bob.zip", headers=bob)
        assert got.status == 200 and got.complete
        assert check_archive(got.path).read("n1/logs/small.log") == b"small\n" * 100
    finally:
        for client in stalled:
            client.close()
        fleet.close()


def test_clients_that_stop_reading_are_dropped_and_free_their_slots(tmp_path: Path) -> None:
    """Auth off: the limit counts per client address. Two stalled clients fill every slot
    (429 for everyone); after ``client_timeout`` they are dropped, their agent fetches
    cancelled, and the next client is served."""
    fleet = Fleet(tmp_path)
    stalled: list[StalledClient] = []
    try:
        node = fleet.add_agent("n1", {"big.bin": big(), "small.log": b"small\n" * 100})
        fleet.start_agents()
        fleet.start_coordinator(download={"max_concurrent": 3, "max_per_user": 2,
                                          "client_timeout": "3s", "idle_timeout": "30s"})
        fleet.wait_healthy(1)
        attacker, other = fleet.host(), fleet.host()
        stalled = [StalledClient(fleet.url, "/api/download?root=logs&path=big.bin", attacker)
                   for _ in range(2)]
        wait_active(fleet, 2)
        status, headers, body = request(fleet.url, "/api/download?root=logs&path=small.log",
                                        source=attacker)
        assert_json_error(status, headers, body, 429)
        assert "download.max_per_user = 2" in json.loads(body)["error"]["message"]
        assert request(fleet.url, "/api/download?root=logs&path=small.log",
                       source=other)[0] == 200  # another address has its own count

        waited = wait_active(fleet, 0, timeout=30)
        assert waited < 20, waited
        for client in stalled:
            assert client.drained() < len(big())  # cut short: the server closed it
        _, _, health = http_get(node.url + "/health")
        agent_active = json.loads(health)["checks"]["downloads:active"][0]["observedValue"]
        assert agent_active == 0, health  # the agent fetches were cancelled too

        got = fetch(fleet.url + "/api/download?root=logs&path=big.bin", tmp_path / "next.zip")
        assert got.status == 200 and got.complete  # the stalled client's address, served
        assert check_archive(got.path).read("n1/logs/big.bin") == big()
        audit = (tmp_path / "audit.log").read_text().splitlines()
        results = [json.loads(line)["result"] for line in audit]
        assert results.count("cancelled") == 2 and results[-1] == "ok", results
    finally:
        for client in stalled:
            client.close()
        fleet.close()
