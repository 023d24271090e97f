"""The zip pipeline without any server: entries fed by plain async producers.

Every archive is read back with `zipfile` (and `unzip -t` / `7z t` when installed).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import json
import os
import subprocess
import time
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zipstream.ng

from coordinator import archive
from coordinator import status as status_files
from coordinator.archive import (
    ArchiveStream,
    BufferGauge,
    EntryData,
    planned_archive_size,
)
from coordinator.model import AgentRef, NodePlan, Plan, PlannedFile, Selection, SkippedNode
from coordinator.status import ArchiveStatus
from tests.support import require_tool

CHUNK = 4096
# Zip steps of the pipeline: all in worker threads (inline_limit 0), or all on the event loop
# (INLINE_STEP: every step of a stored archive, and these tests' deflate steps).
STEP_MODES = {"threads": 0, "inline": archive.INLINE_STEP}


@pytest.fixture(params=sorted(STEP_MODES))
def inline_limit(request: pytest.FixtureRequest) -> int:
    return STEP_MODES[request.param]


def make_plan(sizes: dict[str, Sequence[int]], compression: str = "stored",
              skipped: Sequence[SkippedNode] = ()) -> Plan:
    nodes = tuple(
        NodePlan(AgentRef(node, f"http://127.0.0.{i + 2}:8701"), "logs",
                 tuple(PlannedFile(f"dir/f{j}.log", size, 0.0) for j, size in enumerate(files)))
        for i, (node, files) in enumerate(sizes.items())
    )
    selection = Selection(root="logs", glob="**/*.log", compression=compression)  # type: ignore[arg-type]
    return Plan(selection, nodes, tuple(skipped), created=time.time())


def content(entry: str, size: int) -> bytes:
    seed = hashlib.sha256(entry.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Sink:
    def __init__(self, delay: float = 0.0) -> None:
        self.buf = io.BytesIO()
        self.delay = delay
        self.writes = 0

    def write(self, data: bytes) -> Awaitable[None]:
        """Like tornado's write + flush: queued at once, the awaitable says "gone out"."""
        self.buf.write(data)
        self.writes += 1
        return asyncio.sleep(self.delay)


async def produce(entry: EntryData, data: bytes, *, stop_at: int | None = None,
                  error: str | None = None, piece: int = 1000) -> None:
    end = len(data) if stop_at is None else stop_at
    for start in range(0, end, piece):
        waiter = entry.feed(data[start:min(start + piece, end)])
        if waiter is not None:
            await waiter
        await asyncio.sleep(0)
    entry.finish(error)


def build(plan: Plan, *, limit: int = CHUNK, gauge: BufferGauge | None = None,
          inline_limit: int | None = None, executor: Executor | None = None,
          ) -> tuple[ArchiveStatus, list[EntryData], ArchiveStream]:
    sized = plan.selection.compression == "stored"
    status = ArchiveStatus.from_plan(plan, started=time.time())
    gauge = gauge or BufferGauge()
    entries = [EntryData(f, sized=sized, limit=limit, gauge=gauge) for f in status.files()]
    stream = ArchiveStream(status, entries, sized=sized, chunk_size=CHUNK, gauge=gauge,
                           inline_limit=inline_limit, executor=executor)
    return status, entries, stream


async def run_archive(plan: Plan, behaviour: dict[str, dict[str, object]] | None = None,
                      sink: Sink | None = None, gauge: BufferGauge | None = None,
                      inline_limit: int | None = None) -> tuple[bytes, ArchiveStream]:
    behaviour = behaviour or {}
    _, entries, stream = build(plan, gauge=gauge, inline_limit=inline_limit)
    sink = sink or Sink()
    producers = []
    for e in entries:
        data = content(e.status.entry, e.status.size)
        how = behaviour.get(e.status.entry, {})
        data = data + bytes(how.get("extra", 0))  # type: ignore[call-overload]
        producers.append(asyncio.create_task(produce(e, data, **{  # type: ignore[arg-type]
            k: v for k, v in how.items() if k != "extra"})))
    written = await stream.run(sink.write)
    await asyncio.gather(*producers)
    assert written == len(sink.buf.getvalue())
    return sink.buf.getvalue(), stream


def check_tools(path: Path) -> None:
    """`unzip -t` and `7z t` accept the archive (independent readers)."""
    for tool, args in (("unzip", ["-t", "-qq"]), ("7z", ["t", "-bd"])):
        result = subprocess.run([require_tool(tool), *args, str(path)], capture_output=True,
                                text=True)
        assert result.returncode == 0, (tool, result.stdout, result.stderr)


def test_sized_archive_matches_sources_and_planned_size(tmp_path: Path,
                                                       inline_limit: int) -> None:
    plan = make_plan({"n1": [0, 1, 10_000], "n2": [50_000]})
    data, stream = asyncio.run(run_archive(plan, inline_limit=inline_limit))
    assert len(data) == planned_archive_size(plan) == len(stream)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert names == ["n1/logs/dir/f0.log", "n1/logs/dir/f1.log", "n1/logs/dir/f2.log",
                         "n2/logs/dir/f0.log", status_files.STATUS_JSON, status_files.STATUS_TXT,
                         status_files.SHA256SUMS]
        for name in names[:4]:
            info = zf.getinfo(name)
            assert zf.read(name) == content(name, info.file_size)
        status = json.loads(zf.read(status_files.STATUS_JSON))
        sums = zf.read(status_files.SHA256SUMS).decode()
    assert [n["state"] for n in status["nodes"]] == ["ok", "ok"]
    assert status["nodes"][0]["files"][2] == {
        "path": "dir/f2.log", "size": 10_000, "bytes": 10_000,
        "sha256": hashlib.sha256(content("n1/logs/dir/f2.log", 10_000)).hexdigest(),
        "resumed": 0, "error": None}
    assert status["request"]["glob"] == "**/*.log"
    assert status["finished"] >= status["started"]
    assert len(sums.splitlines()) == 4
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    check_tools(path)
    out = tmp_path / "x"
    subprocess.run([require_tool("unzip"), "-qq", str(path), "-d", str(out)], check=True)
    check = subprocess.run(["sha256sum", "-c", "--strict", "_fleetzip/SHA256SUMS"], cwd=out,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_short_long_and_failed_entries_keep_the_size_promise(tmp_path: Path,
                                                            inline_limit: int) -> None:
    plan = make_plan({"n1": [10_000, 5_000, 3_000], "n2": [7_000]},
                     skipped=[SkippedNode("n3", "http://127.0.0.9:1", "failed", "refused")])
    behaviour: dict[str, dict[str, object]] = {
        "n1/logs/dir/f0.log": {"stop_at": 4_000, "error": "agent dropped at byte 4000"},
        "n1/logs/dir/f1.log": {"extra": 999},  # agent sends more than planned: cut
        "n2/logs/dir/f0.log": {"stop_at": 0, "error": "connection refused"},
    }
    data, _ = asyncio.run(run_archive(plan, behaviour, inline_limit=inline_limit))
    assert len(data) == planned_archive_size(plan)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        first = zf.read("n1/logs/dir/f0.log")
        assert first == content("n1/logs/dir/f0.log", 10_000)[:4000] + bytes(6000)
        assert zf.read("n1/logs/dir/f1.log") == content("n1/logs/dir/f1.log", 5000)
        assert zf.read("n2/logs/dir/f0.log") == bytes(7000)
        status = json.loads(zf.read(status_files.STATUS_JSON))
        text = zf.read(status_files.STATUS_TXT).decode()
    nodes = {n["node"]: n for n in status["nodes"]}
    assert nodes["n1"]["state"] == "partial"
    assert nodes["n1"]["files"][0]["bytes"] == 4000
    assert nodes["n1"]["files"][0]["error"] == "agent dropped at byte 4000"
    assert nodes["n1"]["files"][0]["sha256"] == hashlib.sha256(first).hexdigest()
    assert nodes["n2"]["state"] == "failed"
    assert nodes["n3"] == {"node": "n3", "url": "http://127.0.0.9:1", "state": "failed",
                           "error": "refused", "duration_s": 0.0, "files": []}
    assert "agent dropped at byte 4000" in text and "partial" in text
    path = tmp_path / "b.zip"
    path.write_bytes(data)
    check_tools(path)


def test_deflate_leaves_out_entries_that_never_started(tmp_path: Path,
                                                      inline_limit: int) -> None:
    plan = make_plan({"n1": [100_000, 2000], "n2": [3000]}, compression="deflate")
    assert planned_archive_size(plan) is None
    behaviour: dict[str, dict[str, object]] = {
        "n1/logs/dir/f0.log": {"stop_at": 30_000, "error": "dropped"},
        "n2/logs/dir/f0.log": {"stop_at": 0, "error": "connection refused"},
    }
    data, _ = asyncio.run(run_archive(plan, behaviour, inline_limit=inline_limit))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.namelist()[:2] == ["n1/logs/dir/f0.log", "n1/logs/dir/f1.log"]
        assert "n2/logs/dir/f0.log" not in zf.namelist()
        assert zf.getinfo("n1/logs/dir/f0.log").compress_type == zipfile.ZIP_DEFLATED
        assert zf.read("n1/logs/dir/f0.log") == content("n1/logs/dir/f0.log", 100_000)[:30_000]
        status = json.loads(zf.read(status_files.STATUS_JSON))
    nodes = {n["node"]: n for n in status["nodes"]}
    assert nodes["n1"]["state"] == "partial" and nodes["n1"]["files"][0]["bytes"] == 30_000
    assert nodes["n2"]["state"] == "failed" and nodes["n2"]["files"][0]["sha256"] is None
    path = tmp_path / "c.zip"
    path.write_bytes(data)
    check_tools(path)


def test_status_reservation_holds_the_longest_errors() -> None:
    plan = make_plan({"n1": [10], "n2": [20]})
    long = "é\"\\\n" * 500
    behaviour: dict[str, dict[str, object]] = {
        e: {"stop_at": 0, "error": long} for e in ("n1/logs/dir/f0.log", "n2/logs/dir/f0.log")}
    _, entries, stream = build(plan)
    for node in stream.status.nodes:
        node.error = status_files.clip_error(long, status_files.NODE_ERROR_LIMIT)
        node.duration_s = 1e12
    for e in entries:
        e.finish(long)
        e.status.resumed = 10**9

    async def go() -> bytes:
        sink = Sink()
        await stream.run(sink.write)
        return sink.buf.getvalue()

    data = asyncio.run(go())
    assert behaviour
    assert len(data) == planned_archive_size(plan)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        status = json.loads(zf.read(status_files.STATUS_JSON))
    error = status["nodes"][0]["files"][0]["error"]
    assert len(error) == status_files.FILE_ERROR_LIMIT and error.endswith("...")


def test_slow_client_keeps_the_pipeline_bounded(inline_limit: int) -> None:
    """Producers far faster than the client: buffered bytes stay at a few chunks."""
    plan = make_plan({"n1": [400_000], "n2": [400_000], "n3": [400_000]})
    gauge = BufferGauge()
    sink = Sink(delay=0.001)
    data, _ = asyncio.run(run_archive(plan, sink=sink, gauge=gauge, inline_limit=inline_limit))
    assert len(data) > 1_200_000
    # every entry may hold up to `limit` (+ one piece); the output holds the write in
    # flight (a chunk + a piece), the small pieces gathered (< a chunk) and the current zip
    # step (a chunk + a piece + an entry header)
    assert gauge.peak <= 3 * (CHUNK + 1000) + 3 * (CHUNK + 1000) + 200, gauge.peak
    assert sink.writes > 1_200_000 // (2 * CHUNK)  # written as it goes, not at the end


def test_zip64_when_thresholds_are_lowered(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setattr(zipstream.ng, "ZIP64_LIMIT", 5000)
    monkeypatch.setattr(zipstream.ng, "ZIP_FILECOUNT_LIMIT", 5)
    plan = make_plan({"n1": [6000, 100, 100], "n2": [9000, 100]})
    data, _ = asyncio.run(run_archive(plan))
    assert len(data) == planned_archive_size(plan)
    assert b"PK\x06\x06" in data[-200:]  # zip64 end of central directory record
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.read("n2/logs/dir/f0.log") == content("n2/logs/dir/f0.log", 9000)
    path = tmp_path / "z64.zip"
    path.write_bytes(data)
    check_tools(path)


def test_non_ascii_names_and_sizes(tmp_path: Path) -> None:
    status_plan = make_plan({"n1": [5]})
    node = status_plan.nodes[0]
    plan = Plan(status_plan.selection, (NodePlan(node.agent, "logs", (
        PlannedFile("jour/été.log", 300, 0.0), PlannedFile("a b/c.txt", 0, 0.0))),),
        created=time.time())
    data, _ = asyncio.run(run_archive(plan))
    assert len(data) == planned_archive_size(plan)
    path = tmp_path / "u.zip"
    path.write_bytes(data)
    check_tools(path)
    out = tmp_path / "x"
    subprocess.run([require_tool("unzip"), "-qq", str(path), "-d", str(out)], check=True)
    assert (out / "n1/logs/jour/été.log").read_bytes() == content("n1/logs/jour/été.log", 300)
    check = subprocess.run(["sha256sum", "-c", "--strict", "_fleetzip/SHA256SUMS"], cwd=out,
                           capture_output=True, text=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert check.returncode == 0, check.stdout + check.stderr


def test_cancel_while_zip_steps_run_frees_every_buffer(inline_limit: int) -> None:
    """Cancelling mid-archive (steps in worker threads or on the loop) ends the run with
    `Cancelled`, lets the producers finish, and leaves nothing counted in the gauge."""
    plan = make_plan({"n1": [300_000], "n2": [300_000]})
    gauge = BufferGauge()
    _, entries, stream = build(plan, gauge=gauge, inline_limit=inline_limit)
    sink = Sink(delay=0.001)

    async def go() -> None:
        producers = [asyncio.create_task(produce(e, content(e.status.entry, e.status.size)))
                     for e in entries]
        run = asyncio.create_task(stream.run(sink.write))
        while sink.writes < 10:
            await asyncio.sleep(0.001)
        stream.cancel()
        with pytest.raises(archive.Cancelled):
            await run
        await asyncio.wait_for(asyncio.gather(*producers), 5)
        await asyncio.sleep(0.1)  # a step still running in its thread ends and settles

    asyncio.run(go())
    assert 0 < len(sink.buf.getvalue()) < 600_000
    assert gauge.current == 0, gauge.current
    assert all(e.finished for e in entries)


class RecordingExecutor(ThreadPoolExecutor):
    """A real thread pool that records the entry of every zip step handed to it."""

    def __init__(self) -> None:
        super().__init__(1)
        self.entries: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.entries.append(args[1].status.entry)  # _zip_step(pieces, entry, budget)
        return super().submit(fn, *args, **kwargs)


def prefed(plan: Plan, executor: Executor | None = None, inline_limit: int | None = None,
           ) -> tuple[list[EntryData], ArchiveStream]:
    """Every entry's data already buffered and finished before the run starts."""
    _, entries, stream = build(plan, executor=executor, inline_limit=inline_limit)
    for entry in entries:
        data = content(entry.status.entry, entry.status.size)
        for start in range(0, len(data), 1000):
            waiter = entry.feed(data[start:start + 1000])
            if inspect.iscoroutine(waiter):
                waiter.close()  # over the limit: not waited for, the run takes it all
        entry.finish()
    return entries, stream


def test_small_steps_run_on_the_loop_big_ones_in_the_executor() -> None:
    """A step over fewer bytes than ``inline_limit`` never reaches the executor; the big
    entry's steps do until what is left of it is small; the archive is the same."""
    plan = make_plan({"n1": [500, 30_000], "n2": [0, 2_000]})
    executor = RecordingExecutor()
    _, stream = prefed(plan, executor, inline_limit=10_000)
    sink = Sink()
    try:
        asyncio.run(stream.run(sink.write))
    finally:
        executor.shutdown()
    assert set(executor.entries) == {"n1/logs/dir/f1.log"}
    assert 3 <= len(executor.entries) <= 5  # 30 000 bytes in ~5 000-byte steps, the rest inline
    data = sink.buf.getvalue()
    assert len(data) == planned_archive_size(plan)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.read("n1/logs/dir/f1.log") == content("n1/logs/dir/f1.log", 30_000)


def test_ready_small_entries_are_written_in_chunks_not_one_write_each() -> None:
    """Entries that are ready do not flush the output: 300 small files go out in about
    archive-size / chunk writes (one write per entry before)."""
    plan = make_plan({f"n{i:03d}": [200] for i in range(300)})
    _, stream = prefed(plan)
    sink = Sink()
    asyncio.run(stream.run(sink.write))
    size = len(sink.buf.getvalue())
    assert size == planned_archive_size(plan)
    assert sink.writes <= size // CHUNK + 3, (sink.writes, size)
