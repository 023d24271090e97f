"""Faults during a merged download across real agent processes.

Each case starts two or three real agents (``max_bandwidth`` makes their streams slow and
deterministic) and a real coordinator (small ``idle_timeout``), starts a download, injects
one fault at a known point (a node has sent some bytes, seen on ``/api/downloads``), and
then checks what a user sees:

* the archive is valid for ``zipfile``, ``unzip -t`` and ``7z t`` — or, when the response
  could not be completed, the client can tell (short body / unterminated chunking);
* ``_fleetzip/status.json`` tells the truth: an entry's first ``bytes`` bytes are the
  file's, the rest is zero-fill, and a short entry is never reported ``ok``;
* nothing is left behind: every surviving process is back to its descriptor counts,
  ``/api/downloads`` is empty and no agent reports an active download.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import (
    Fetched,
    Fleet,
    LyingProxy,
    SilentServer,
    assert_entry_truthful,
    assert_fds_back,
    check_archive,
    fd_baseline,
    fetch,
    make_bytes,
    node_status,
    status_of,
)
from tests.support import http_get

BIG = 512 * 1024
RATE = "128KiB"  # each agent: 4 s for BIG, slow enough to hit mid-entry
SMALL = b"small log line\n" * 200

pytestmark = pytest.mark.timeout(90)


class Background:
    """A download running in a thread; `result()` waits for it."""

    def __init__(self, url: str, dest: Path) -> None:
        self.received = 0
        self._result: Fetched | None = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._result = fetch(url, dest, timeout=60, on_bytes=self._count)
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def _count(self, n: int) -> None:
        self.received = n

    def result(self, timeout: float = 60) -> Fetched:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the download did not end within {timeout}s"
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    except BaseException:
        print(f.logs())
        raise
    finally:
        f.close()


def two_agents(fleet: Fleet, **agent_config: Any) -> dict[str, bytes]:
    data = {"n1": make_bytes(BIG, seed=1), "n2": make_bytes(BIG, seed=2)}
    for name, big in data.items():
        fleet.add_agent(name, {"big.bin": big, "small.log": SMALL}, max_bandwidth=RATE,
                        chunk_size="16KiB", **agent_config)
    fleet.start_agents()
    return data


def download_url(fleet: Fleet, **query: str) -> str:
    params = {"root": "logs", **query}
    return fleet.url + "/api/download?" + urllib.parse.urlencode(params)


def node_progress(fleet: Fleet, name: str) -> dict[str, Any] | None:
    _, _, body = http_get(fleet.url + "/api/downloads")
    for download in json.loads(body)["downloads"]:
        for node in download["nodes"]:
            if node["node"] == name:
                return node
    return None


def wait_for_bytes(fleet: Fleet, name: str, at_least: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = node_progress(fleet, name)
        if progress and progress["bytes"] >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not send {at_least} bytes within {timeout}s")


def assert_nothing_left(fleet: Fleet, baseline: dict[int, dict[str, int]]) -> None:
    deadline = time.monotonic() + 5
    while True:
        _, _, body = http_get(fleet.url + "/api/downloads")
        if not json.loads(body)["downloads"]:
            break
        assert time.monotonic() < deadline, f"downloads still listed: {body!r}"
        time.sleep(0.1)
    for node in fleet.agents:
        if node.server is not None and node.server.proc and node.server.proc.poll() is None:
            _, _, health = http_get(node.url + "/health")
            active = json.loads(health)["checks"]["downloads:active"][0]["observedValue"]
            assert active == 0, f"{node.name} still has {active} download(s)"
    assert_fds_back(baseline)


def start(fleet: Fleet, tmp: Path, healthy: int, **query: str) -> tuple[Background, dict]:
    fleet.wait_healthy(healthy)
    baseline = fd_baseline(fleet.processes())
    return Background(download_url(fleet, **query), tmp / "out.zip"), baseline


def finish(background: Background) -> tuple[Fetched, Any, dict[str, Any]]:
    result = background.result()
    assert result.status == 200, result
    assert result.complete, f"incomplete response: {result.error}"
    archive = check_archive(result.path)
    return result, archive, status_of(archive)


# ---------------------------------------------------------------------------- cases

# Resumes back off 0.25, 0.5, 1, 2, 2, 2 s: an agent restarted on a loaded 2-core machine
# (Python start-up, imports) is back well within them; 3 attempts (1.75 s) were not always.
RESTART_ATTEMPTS = 6


def test_sigkill_and_restart_mid_entry(fleet: Fleet, tmp_path: Path) -> None:
    data = two_agents(fleet)
    fleet.start_coordinator(download={"resume_attempts": RESTART_ATTEMPTS})
    background, baseline = start(fleet, tmp_path, 2, glob="*.bin")
    victim = fleet.agents[0]
    wait_for_bytes(fleet, "n1", 96 * 1024)
    os.kill(victim.pid, signal.SIGKILL)
    fleet.restart(victim)
    _result, archive, status = finish(background)
    for name in ("n1", "n2"):
        entry = assert_entry_truthful(archive, status, name, "big.bin", data[name])
        print(f"{name}: state {node_status(status, name)['state']}, {entry}")
    n1 = file_entry(status, "n1")
    assert n1["bytes"] == BIG and n1["resumed"] >= 1, f"expected a resume: {n1}"
    assert node_status(status, "n2")["state"] == "ok"
    assert_nothing_left(fleet, baseline)


def test_sigkill_without_restart_is_partial(fleet: Fleet, tmp_path: Path) -> None:
    data = two_agents(fleet)
    fleet.start_coordinator()
    background, baseline = start(fleet, tmp_path, 2, glob="*.bin")
    wait_for_bytes(fleet, "n1", 96 * 1024)
    os.kill(fleet.agents[0].pid, signal.SIGKILL)
    result, archive, status = finish(background)
    entry = assert_entry_truthful(archive, status, "n1", "big.bin", data["n1"])
    assert 0 < entry["bytes"] < BIG
    assert node_status(status, "n1")["state"] == "partial"
    assert_entry_truthful(archive, status, "n2", "big.bin", data["n2"])
    assert node_status(status, "n2")["state"] == "ok"
    assert result.size == int(result.headers["Content-Length"])  # the size promise held
    assert_nothing_left(fleet, baseline)


@pytest.mark.parametrize("pause", [0.8, 3.5], ids=["shorter-than-idle", "longer-than-idle"])
def test_sigstop_sigcont(fleet: Fleet, tmp_path: Path, pause: float) -> None:
    data = two_agents(fleet)
    fleet.start_coordinator(download={"idle_timeout": "2s"})
    background, baseline = start(fleet, tmp_path, 2, glob="*.bin")
    victim = fleet.agents[0]
    wait_for_bytes(fleet, "n1", 96 * 1024)
    os.kill(victim.pid, signal.SIGSTOP)
    time.sleep(pause)
    os.kill(victim.pid, signal.SIGCONT)
    _, archive, status = finish(background)
    for name in ("n1", "n2"):
        assert_entry_truthful(archive, status, name, "big.bin", data[name])
    if pause < 2:
        assert node_status(status, "n1")["state"] == "ok", status
    assert_nothing_left(fleet, baseline)


def test_agent_that_accepts_and_sends_nothing(fleet: Fleet, tmp_path: Path) -> None:
    data = two_agents(fleet)
    silent = SilentServer(fleet.host())
    fleet.add_fake("silent", silent)
    fleet.start_coordinator(health={"interval": "1s", "timeout": "1s"})
    background, baseline = start(fleet, tmp_path, 2, glob="*.bin")
    result, archive, status = finish(background)
    assert silent.accepted >= 1, "the coordinator never tried the silent agent"
    silent_status = node_status(status, "silent")
    assert silent_status["state"] in ("failed", "skipped") and silent_status["error"]
    assert not [n for n in archive.namelist() if n.startswith("silent/")]
    for name in ("n1", "n2"):
        assert_entry_truthful(archive, status, name, "big.bin", data[name])
        assert node_status(status, name)["state"] == "ok"
    assert result.seconds < 30, f"the silent agent held the download for {result.seconds:.0f}s"
    assert_nothing_left(fleet, baseline)


def test_agent_silent_on_file_requests(fleet: Fleet, tmp_path: Path) -> None:
    """Lists and health answer (through a proxy), file requests never do: idle_timeout."""
    data = two_agents(fleet)
    proxy = LyingProxy(fleet.host(), fleet.agents[0].url, silent_files=True)
    fleet.add_fake("mute", proxy)
    fleet.start_coordinator(download={"idle_timeout": "2s"})
    background, baseline = start(fleet, tmp_path, 3, glob="*.bin")
    result, archive, status = finish(background)
    mute = node_status(status, "mute")
    assert mute["state"] in ("failed", "partial") and mute["error"], mute
    assert_entry_truthful(archive, status, "mute", "big.bin", data["n1"])
    assert file_entry(status, "mute")["bytes"] == 0
    for name in ("n1", "n2"):
        assert_entry_truthful(archive, status, name, "big.bin", data[name])
    assert result.seconds < 40
    assert_nothing_left(fleet, baseline)


@pytest.mark.parametrize("delta", [4096, -4096], ids=["claims-more", "claims-less"])
def test_agent_lying_about_content_length(fleet: Fleet, tmp_path: Path, delta: int) -> None:
    data = two_agents(fleet)
    proxy = LyingProxy(fleet.host(), fleet.agents[0].url, length_delta=delta)
    fleet.add_fake("liar", proxy)
    fleet.start_coordinator()
    background, baseline = start(fleet, tmp_path, 3, glob="*.bin")
    _, archive, status = finish(background)
    assert proxy.lies >= 1
    entry = assert_entry_truthful(archive, status, "liar", "big.bin", data["n1"])
    print(f"liar ({delta:+d}): state {node_status(status, 'liar')['state']}, {entry}")
    assert entry["bytes"] <= BIG
    assert node_status(status, "liar")["state"] != "ok" or entry["bytes"] == BIG, status
    for name in ("n1", "n2"):
        assert_entry_truthful(archive, status, name, "big.bin", data[name])
        assert node_status(status, name)["state"] == "ok"
    assert_nothing_left(fleet, baseline)


def test_file_truncated_during_download(fleet: Fleet, tmp_path: Path) -> None:
    data = two_agents(fleet)
    fleet.start_coordinator()
    background, baseline = start(fleet, tmp_path, 2, glob="*.bin")
    wait_for_bytes(fleet, "n1", 160 * 1024)
    os.truncate(fleet.agents[0].root / "big.bin", 64 * 1024)
    _, archive, status = finish(background)
    entry = assert_entry_truthful(archive, status, "n1", "big.bin", data["n1"])
    assert entry["bytes"] < BIG
    assert node_status(status, "n1")["state"] == "partial"
    assert_entry_truthful(archive, status, "n2", "big.bin", data["n2"])
    assert_nothing_left(fleet, baseline)


def test_file_rotated_during_download(fleet: Fleet, tmp_path: Path) -> None:
    """Renamed and recreated: the agent keeps sending the file it opened."""
    data = two_agents(fleet)
    fleet.start_coordinator()
    background, baseline = start(fleet, tmp_path, 2, glob="*.bin")
    wait_for_bytes(fleet, "n1", 96 * 1024)
    path = fleet.agents[0].root / "big.bin"
    path.rename(path.with_suffix(".bin.1"))
    path.write_bytes(make_bytes(BIG + 1000, seed=99))
    _, archive, status = finish(background)
    entry = assert_entry_truthful(archive, status, "n1", "big.bin", data["n1"])
    assert entry["bytes"] == BIG, entry
    assert node_status(status, "n1")["state"] == "ok"
    assert_nothing_left(fleet, baseline)


def test_file_rotated_while_its_agent_is_down_is_not_spliced(fleet: Fleet,
                                                             tmp_path: Path) -> None:
    """Killed mid-entry, and the file rotated (renamed, recreated with other bytes) before
    the agent is back: the resume finds another file at the path. Its bytes must not be
    spliced onto the first file's; the entry ends where the first file's bytes end."""
    data = two_agents(fleet)
    fleet.start_coordinator(download={"resume_attempts": RESTART_ATTEMPTS})
    background, baseline = start(fleet, tmp_path, 2, glob="*.bin")
    victim = fleet.agents[0]
    wait_for_bytes(fleet, "n1", 96 * 1024)
    os.kill(victim.pid, signal.SIGKILL)
    path = victim.root / "big.bin"
    path.rename(path.with_suffix(".bin.1"))
    path.write_bytes(make_bytes(BIG + 1000, seed=99))
    fleet.restart(victim)
    _, archive, status = finish(background)
    entry = assert_entry_truthful(archive, status, "n1", "big.bin", data["n1"])
    print(f"n1: state {node_status(status, 'n1')['state']}, {entry}")
    assert 0 < entry["bytes"] < BIG
    assert "file replaced on the agent" in entry["error"]
    assert node_status(status, "n1")["state"] == "partial"
    assert_entry_truthful(archive, status, "n2", "big.bin", data["n2"])
    assert node_status(status, "n2")["state"] == "ok"
    assert_nothing_left(fleet, baseline)


@pytest.mark.parametrize("compression", ["stored", "deflate"])
def test_coordinator_sigterm_mid_download(fleet: Fleet, tmp_path: Path,
                                          compression: str) -> None:
    """Cut off by shutdown_timeout: the client can tell; never a short 'valid' archive."""
    two_agents(fleet)
    fleet.start_coordinator(shutdown_timeout="1s")
    background, _ = start(fleet, tmp_path, 2, glob="*.bin", compression=compression)
    wait_for_bytes(fleet, "n1", 64 * 1024)
    assert fleet.coordinator is not None
    fleet.coordinator.signal(signal.SIGTERM)
    result = background.result()
    assert fleet.coordinator.proc is not None
    assert fleet.coordinator.proc.wait(15) == 0
    assert result.status == 200
    if compression == "stored":
        assert "Content-Length" in result.headers
    print(f"SIGTERM ({compression}): complete={result.complete} size={result.size} "
          f"error={result.error}")
    if result.complete:
        check_archive(result.path)  # drained in time: it must then be whole
    else:
        with pytest.raises(Exception):  # noqa: B017 - any reader error will do
            check_archive(result.path)
    for node in fleet.agents:  # the agents let go of the coordinator's fetches
        deadline = time.monotonic() + 5
        while True:
            _, _, health = http_get(node.url + "/health")
            if json.loads(health)["checks"]["downloads:active"][0]["observedValue"] == 0:
                break
            assert time.monotonic() < deadline, f"{node.name} kept a download running"
            time.sleep(0.1)


def test_coordinator_sigterm_drains_a_short_download(fleet: Fleet, tmp_path: Path) -> None:
    """With time enough to drain, the running download finishes whole."""
    data = two_agents(fleet)
    fleet.start_coordinator(shutdown_timeout="20s")
    background, _ = start(fleet, tmp_path, 2, glob="*.bin")
    wait_for_bytes(fleet, "n1", 64 * 1024)
    assert fleet.coordinator is not None
    fleet.coordinator.signal(signal.SIGTERM)
    _, archive, status = finish(background)
    for name in ("n1", "n2"):
        assert_entry_truthful(archive, status, name, "big.bin", data[name])
        assert node_status(status, name)["state"] == "ok"


def file_entry(status: dict[str, Any], node: str, path: str = "big.bin") -> dict[str, Any]:
    for entry in node_status(status, node)["files"]:
        if entry["path"] == path:
            return entry
    raise AssertionError(f"{path} not in {node}'s status")
