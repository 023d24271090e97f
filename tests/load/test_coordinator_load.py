"""20 concurrent merged downloads against one real coordinator and three real agents.

Each request gets a whole, valid archive (zipfile + unzip -t + 7z t on every one) or a
429 with ``Retry-After``; none hangs; the coordinator's peak RSS is printed and bounded;
descriptors return to their baseline and ``/api/downloads`` empties.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.harness import (
    Fetched,
    Fleet,
    assert_fds_back,
    check_archive,
    fd_baseline,
    fetch,
    make_bytes,
    node_status,
    status_of,
)
from tests.load.test_agent_load import RssSampler
from tests.support import http_get

CLIENTS = 20
MAX_CONCURRENT = 8
RSS_GROWTH_LIMIT = 100 * 1024 * 1024

pytestmark = pytest.mark.timeout(120)


def test_20_concurrent_merged_downloads(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    try:
        files = {f"f{i}.log": make_bytes(200 * 1024, seed=i) for i in range(4)}
        for name in ("l1", "l2", "l3"):
            fleet.add_agent(name, files, max_bandwidth="4MiB", max_concurrent_downloads=64)
        fleet.start_agents()
        # Every client comes from one address with auth off: max_per_user (per address
        # then) is raised so that max_concurrent is the limit under test.
        coordinator = fleet.start_coordinator(download={"max_concurrent": MAX_CONCURRENT,
                                                        "max_per_user": MAX_CONCURRENT})
        fleet.wait_healthy(3)
        baseline = fd_baseline(fleet.processes())
        sampler = RssSampler(coordinator.pid)
        sampler.start()
        url = fleet.url + "/api/download?" + urllib.parse.urlencode({"root": "logs"})
        results: list[Fetched | None] = [None] * CLIENTS
        barrier = threading.Barrier(CLIENTS)

        def run(i: int) -> None:
            barrier.wait(10)
            results[i] = fetch(url, tmp_path / f"out-{i}.zip", timeout=60)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(CLIENTS)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        elapsed = time.monotonic() - began
        sampler.stop()
        assert not any(t.is_alive() for t in threads), "a download hung"
        statuses = Counter(r.status if r else None for r in results)
        print(f"\ncoordinator load: {CLIENTS} merged downloads in {elapsed:.1f}s, statuses "
              f"{dict(statuses)}, coordinator peak RSS {sampler.peak / 2**20:.1f} MiB "
              f"(baseline {sampler.baseline / 2**20:.1f} MiB)")
        assert set(statuses) <= {200, 429}, statuses
        assert statuses[200] >= MAX_CONCURRENT, statuses
        for result in results:
            assert result is not None
            if result.status == 429:
                assert int(result.headers["Retry-After"]) >= 0
                assert json.loads(result.path.read_bytes())["error"]["message"]
                continue
            assert result.complete, result.error
            archive = check_archive(result.path)
            status = status_of(archive)
            for node in ("l1", "l2", "l3"):
                assert node_status(status, node)["state"] == "ok", node_status(status, node)
                for name, data in files.items():
                    assert archive.read(f"{node}/logs/{name}") == data
        assert sampler.peak - sampler.baseline < RSS_GROWTH_LIMIT
        deadline = time.monotonic() + 5
        while json.loads(http_get(fleet.url + "/api/downloads")[2])["downloads"]:
            assert time.monotonic() < deadline, "downloads still listed"
            time.sleep(0.1)
        assert_fds_back(baseline)
    finally:
        fleet.close()
