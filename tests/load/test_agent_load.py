"""200 concurrent downloads against one real agent process.

Every request either gets the whole file (checked by hash) or a 429 with ``Retry-After``
and a JSON error; none hangs; the agent's resident memory stays bounded while 200
clients read slowly; descriptors and the download count return to their baseline.
The figures (peak RSS, outcome counts, time) are printed for the report.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.faults.harness import Fleet, Node, assert_fds_back, fd_baseline, make_bytes
from tests.support import http_get

CLIENTS = 200
FILE_SIZE = 1024 * 1024
SLOTS = 32
RSS_GROWTH_LIMIT = 64 * 1024 * 1024  # 32 slots x (a few 64 KiB pieces) is far below this


@dataclass
class Outcome:
    status: int | None = None
    retry_after: str | None = None
    body_ok: bool = False
    error: str | None = None
    seconds: float = 0.0


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.baseline = self.peak
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.02):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return

    def stop(self) -> None:
        self._done.set()
        self.join(2)


@pytest.fixture
def loaded_agent(tmp_path: Path) -> Iterator[tuple[Fleet, Node, bytes]]:
    data = make_bytes(FILE_SIZE, seed=7)
    fleet = Fleet(tmp_path)
    node = fleet.add_agent("busy", {"big.bin": data}, max_concurrent_downloads=SLOTS,
                           chunk_size="64KiB")
    try:
        fleet.start_agents()
        yield fleet, node, data
    finally:
        fleet.close()


def download(url: str, digest: str, start: threading.Barrier, slow: bool) -> Outcome:
    host, port = url.removeprefix("http://").split(":")
    outcome = Outcome()
    began = time.monotonic()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        start.wait(10)
        conn.request("GET", "/files/logs/big.bin")
        response = conn.getresponse()
        outcome.status = response.status
        outcome.retry_after = response.getheader("Retry-After")
        hasher = hashlib.sha256()
        small = b""
        while piece := response.read(16 * 1024):
            hasher.update(piece)
            if len(small) < 4096:
                small += piece
            if slow:
                time.sleep(0.01)  # a slow reader keeps its slot busy
        if response.status == 200:
            outcome.body_ok = hasher.hexdigest() == digest
        else:
            outcome.body_ok = bool(json.loads(small)["error"]["message"])
    except Exception as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
        outcome.seconds = time.monotonic() - began
    return outcome


def test_200_concurrent_downloads(loaded_agent: tuple[Fleet, Node, bytes]) -> None:
    fleet, node, data = loaded_agent
    digest = hashlib.sha256(data).hexdigest()
    baseline = fd_baseline(fleet.processes())
    sampler = RssSampler(node.pid)
    sampler.start()
    outcomes: list[Outcome] = [Outcome() for _ in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS)

    def run(i: int) -> None:
        outcomes[i] = download(node.url, digest, barrier, slow=True)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(CLIENTS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - began
    sampler.stop()

    hung = sum(t.is_alive() for t in threads)
    statuses = Counter(o.status for o in outcomes)
    print(f"\nagent load: {CLIENTS} clients in {elapsed:.1f}s, statuses {dict(statuses)}, "
          f"peak RSS {sampler.peak / 2**20:.1f} MiB (baseline {sampler.baseline / 2**20:.1f} MiB)")
    assert hung == 0, f"{hung} downloads hung"
    errors = [o.error for o in outcomes if o.error]
    assert not errors, errors[:5]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] >= SLOTS, statuses
    assert all(o.body_ok for o in outcomes), "a body was wrong (file bytes or JSON error)"
    for o in outcomes:
        if o.status == 429:
            assert o.retry_after is not None and int(o.retry_after) >= 0, o
    assert sampler.peak - sampler.baseline < RSS_GROWTH_LIMIT, sampler.peak

    _status, _, body = http_get(node.url + "/health")
    active = json.loads(body)["checks"]["downloads:active"][0]["observedValue"]
    assert active == 0, body
    assert_fds_back(baseline)


def test_429_clients_that_retry_all_finish(loaded_agent: tuple[Fleet, Node, bytes]) -> None:
    """Clients that honour Retry-After all get the file in the end (60 clients, 32 slots)."""
    _fleet, node, data = loaded_agent
    digest = hashlib.sha256(data).hexdigest()
    clients = 60
    results: list[int] = [0] * clients
    barrier = threading.Barrier(clients)

    def run(i: int) -> None:
        tries = 0
        while tries < 30:
            tries += 1
            outcome = download(node.url, digest, barrier if tries == 1 else _NO_WAIT, slow=False)
            if outcome.status == 200 and outcome.body_ok:
                results[i] = tries
                return
            assert outcome.status == 429, outcome
            time.sleep(min(float(outcome.retry_after or 1), 1.0) / 4)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(results), f"{results.count(0)} clients never got the file"


class _NoWait:
    def wait(self, timeout: float | None = None) -> int:
        return 0


_NO_WAIT: threading.Barrier = _NoWait()  # type: ignore[assignment]
