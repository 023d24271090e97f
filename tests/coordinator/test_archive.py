"""The zip pipeline without any server: entries fed by plain async producers that play the
agents (a release-0.2 agent promises the CRC-32 first and gives the SHA-256 after; an old
one gives neither; a deflate agent sends frames).

Every archive is read back with `zipfile` (and `unzip -t` / `7z t`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import time
import zipfile
import zlib
from collections.abc import Awaitable, Sequence
from pathlib import Path

import pytest

from coordinator import status as status_files
from coordinator import zipwriter
from coordinator.archive import ArchiveStream, Cancelled, planned_archive_size, planned_entries
from coordinator.entry import BufferGauge, Entry, Mode
from coordinator.fetch import FrameError, FrameParser
from coordinator.model import AgentRef, NodePlan, Plan, PlannedFile, Selection, SkippedNode
from coordinator.status import ArchiveStatus
from tests.support import require_tool

CHUNK = 4096
MTIME = 1709642096.0  # 2024-03-05T12:34:56Z
NEW = frozenset({"checksum", "deflate"})
OLD: frozenset[str] = frozenset()


def make_plan(sizes: dict[str, Sequence[int]], compression: str = "stored",
              skipped: Sequence[SkippedNode] = (),
              features: dict[str, frozenset[str]] | None = None) -> Plan:
    features = features or {}
    nodes = tuple(
        NodePlan(AgentRef(node, f"http://127.0.0.{i + 2}:8701"), "logs",
                 tuple(PlannedFile(f"dir/f{j}.log", size, MTIME + j)
                       for j, size in enumerate(files)),
                 features=features.get(node, NEW))
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


async def produce(entry: Entry, data: bytes, *, stop_at: int | None = None,
                  error: str | None = None, piece: int = 1000,
                  promise: int | None = None, after: bool = True) -> None:
    """Play the agent: promise the CRC (new agents), send, finish, give the SHA-256."""
    if entry.mode is Mode.AGENT_CRC:
        entry.promise(zlib.crc32(data[:entry.status.size]) if promise is None else promise)
    end = len(data) if stop_at is None else stop_at
    if entry.mode is Mode.AGENT_DEFLATE:
        await produce_frames(entry, data[:end], piece)
    else:
        for start in range(0, end, piece):
            waiter = entry.feed(data[start:min(start + piece, end)])
            if waiter is not None:
                await waiter
            await asyncio.sleep(0)
    entry.finish(error)
    if entry.mode.agent_checksums and stop_at is None and after:
        entry.agent_sha256 = hashlib.sha256(data[:entry.status.size]).hexdigest()
        entry.agent_crc32 = zlib.crc32(data[:entry.status.size])
    entry.verified.set()


def frames_of(data: bytes, piece: int) -> list[bytes]:
    """The agent's ``compress=deflate`` body: frames of raw deflate at sync-flush points."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body, crc = [], 0
    for start in range(0, len(data), piece):
        raw = data[start:start + piece]
        crc = zlib.crc32(raw, crc)
        packed = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
        body.append(zipwriter_frame(packed, len(raw), crc))
    return body


def zipwriter_frame(packed: bytes, raw: int, crc: int) -> bytes:
    from coordinator.fetch import FRAME_HEADER
    return FRAME_HEADER.pack(len(packed), raw, crc) + packed


async def produce_frames(entry: Entry, data: bytes, piece: int) -> None:
    parser = FrameParser(entry.remaining)
    for frame in frames_of(data, piece):
        for packed, raw, crc in parser.feed(frame):
            waiter = entry.feed(packed, raw, crc)
            if waiter is not None:
                await waiter
        await asyncio.sleep(0)


def build(plan: Plan, *, limit: int = CHUNK, gauge: BufferGauge | None = None,
          ) -> tuple[ArchiveStatus, list[Entry], ArchiveStream]:
    sized = plan.selection.compression == "stored"
    status = ArchiveStatus.from_plan(plan, started=time.time())
    gauge = gauge or BufferGauge()
    entries = [Entry(f, spec, mode, sized=sized, limit=limit, gauge=gauge)
               for f, (_, _, spec, mode) in zip(status.files(), planned_entries(plan),
                                                strict=True)]
    stream = ArchiveStream(status, entries, sized=sized, chunk_size=CHUNK, gauge=gauge)
    return status, entries, stream


async def run_archive(plan: Plan, behaviour: dict[str, dict[str, object]] | None = None,
                      sink: Sink | None = None, gauge: BufferGauge | None = None,
                      ) -> tuple[bytes, ArchiveStream]:
    behaviour = behaviour or {}
    _, entries, stream = build(plan, gauge=gauge)
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


def sha_check(path: Path, tmp_path: Path) -> set[str]:
    """Extract with unzip (a corrupt entry is extracted all the same), run ``sha256sum -c``;
    the entries it flags."""
    out = tmp_path / "x"
    subprocess.run([require_tool("unzip"), "-qq", "-o", str(path), "-d", str(out)],
                   capture_output=True)
    check = subprocess.run(["sha256sum", "-c", "--strict", "_fleetzip/SHA256SUMS"], cwd=out,
                           capture_output=True, text=True,
                           env={**os.environ, "LC_ALL": "C.UTF-8"})
    # --strict: a malformed line fails the check too; no FAILED line must hide it
    assert "improperly formatted" not in check.stderr, check.stderr
    return {line.rsplit(": ", 1)[0] for line in check.stdout.splitlines()
            if line.endswith(": FAILED")}


MIXED = {"n1": NEW, "n2": OLD}  # one release-0.2 agent, one of the previous release


def test_sized_archive_of_a_mixed_fleet_matches_sources_and_planned_size(
        tmp_path: Path) -> None:
    plan = make_plan({"n1": [0, 1, 10_000], "n2": [50_000]}, features=MIXED)
    data, stream = asyncio.run(run_archive(plan))
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
        # new agent: CRC in the local header, no descriptor; old agent: descriptor
        assert [zf.getinfo(n).flag_bits & 0x08 for n in names[:4]] == [0, 0, 0, 0x08]
        assert zf.getinfo("n1/logs/dir/f2.log").date_time == time.localtime(MTIME + 2)[:6]
        status = json.loads(zf.read(status_files.STATUS_JSON))
    assert [n["state"] for n in status["nodes"]] == ["ok", "ok"]
    assert status["nodes"][0]["files"][2] == {
        "path": "dir/f2.log", "size": 10_000, "bytes": 10_000,
        "sha256": hashlib.sha256(content("n1/logs/dir/f2.log", 10_000)).hexdigest(),
        "resumed": 0, "error": None}
    assert status["nodes"][1]["files"][0]["sha256"] == hashlib.sha256(
        content("n2/logs/dir/f0.log", 50_000)).hexdigest()  # computed here (old agent)
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    check_tools(path)
    assert sha_check(path, tmp_path) == set()


@pytest.mark.parametrize("features", [NEW, OLD], ids=["new", "old"])
def test_short_long_and_failed_entries_keep_the_size_and_crc_promise(
        tmp_path: Path, features: frozenset[str]) -> None:
    """A short entry is padded; with a new agent the padding's last 4 bytes make the
    promised CRC hold (zipfile and unzip check it); sha256sum flags exactly those files."""
    plan = make_plan({"n1": [10_000, 5_000, 3_000], "n2": [7_000]},
                     skipped=[SkippedNode("n3", "http://127.0.0.9:1", "failed", "refused")],
                     features={"n1": features, "n2": features})
    behaviour: dict[str, dict[str, object]] = {
        "n1/logs/dir/f0.log": {"stop_at": 4_000, "error": "agent dropped at byte 4000"},
        "n1/logs/dir/f1.log": {"extra": 999},  # agent sends more than planned: cut
        "n2/logs/dir/f0.log": {"stop_at": 0, "error": "connection refused"},
    }
    data, _ = asyncio.run(run_archive(plan, behaviour))
    assert len(data) == planned_archive_size(plan)
    tail = 4 if features else 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        first = zf.read("n1/logs/dir/f0.log")
        source = content("n1/logs/dir/f0.log", 10_000)
        assert first[:-tail or None] == source[:4000] + bytes(6000 - tail)
        if features:  # the promised CRC, held by the last 4 bytes
            assert zlib.crc32(first) == zlib.crc32(source)
        assert zf.read("n1/logs/dir/f1.log") == content("n1/logs/dir/f1.log", 5000)
        assert zf.read("n2/logs/dir/f0.log")[:7000 - tail] == bytes(7000 - tail)
        status = json.loads(zf.read(status_files.STATUS_JSON))
        text = zf.read(status_files.STATUS_TXT).decode()
    nodes = {n["node"]: n for n in status["nodes"]}
    assert nodes["n1"]["state"] == "partial"
    assert nodes["n1"]["files"][0]["bytes"] == 4000
    assert nodes["n1"]["files"][0]["error"] == "agent dropped at byte 4000"
    assert nodes["n1"]["files"][0]["sha256"] is None
    assert nodes["n2"]["state"] == "failed"
    assert nodes["n3"] == {"node": "n3", "url": "http://127.0.0.9:1", "state": "failed",
                           "error": "refused", "duration_s": 0.0, "files": []}
    assert "agent dropped at byte 4000" in text and "partial" in text
    path = tmp_path / "b.zip"
    path.write_bytes(data)
    check_tools(path)
    assert sha_check(path, tmp_path) == {"n1/logs/dir/f0.log", "n2/logs/dir/f0.log"}


@pytest.mark.parametrize("after", [True, False], ids=["agent-says", "agent-silent"])
def test_content_that_differs_from_the_promised_crc_is_marked_corrupt(tmp_path: Path,
                                                                     after: bool) -> None:
    """The file was rewritten between the agent's CRC pass and its send pass: caught by the
    CRC-32 of what passed, whether or not the agent's after-entry check answers."""
    plan = make_plan({"n1": [5000, 100]})
    behaviour: dict[str, dict[str, object]] = {"n1/logs/dir/f0.log": {"promise": 12345,
                                                                       "after": after}}
    data, _ = asyncio.run(run_archive(plan, behaviour))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        status = json.loads(zf.read(status_files.STATUS_JSON))
    files = status["nodes"][0]["files"]
    assert files[0]["error"].startswith("corrupt: the file changed while it was read")
    assert files[0]["sha256"] is None and files[1]["error"] is None
    assert status["nodes"][0]["state"] == "partial"
    path = tmp_path / "c.zip"
    path.write_bytes(data)
    assert sha_check(path, tmp_path) == {"n1/logs/dir/f0.log"}


@pytest.mark.parametrize("features", [NEW, OLD], ids=["agent-frames", "own-deflate"])
def test_deflate_leaves_out_entries_that_never_started(tmp_path: Path,
                                                      features: frozenset[str]) -> None:
    plan = make_plan({"n1": [100_000, 2000], "n2": [3000]}, compression="deflate",
                     features={"n1": features, "n2": features})
    assert planned_archive_size(plan) is None
    behaviour: dict[str, dict[str, object]] = {
        "n1/logs/dir/f0.log": {"stop_at": 30_000, "error": "dropped"},
        "n2/logs/dir/f0.log": {"stop_at": 0, "error": "connection refused"},
    }
    data, _ = asyncio.run(run_archive(plan, behaviour))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.namelist()[:2] == ["n1/logs/dir/f0.log", "n1/logs/dir/f1.log"]
        assert "n2/logs/dir/f0.log" not in zf.namelist()
        info = zf.getinfo("n1/logs/dir/f0.log")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.date_time == time.localtime(MTIME)[:6]
        assert zf.read("n1/logs/dir/f0.log") == content("n1/logs/dir/f0.log", 100_000)[:30_000]
        assert zf.read("n1/logs/dir/f1.log") == content("n1/logs/dir/f1.log", 2000)
        status = json.loads(zf.read(status_files.STATUS_JSON))
    nodes = {n["node"]: n for n in status["nodes"]}
    assert nodes["n1"]["state"] == "partial" and nodes["n1"]["files"][0]["bytes"] == 30_000
    assert nodes["n1"]["files"][1]["sha256"] == hashlib.sha256(
        content("n1/logs/dir/f1.log", 2000)).hexdigest()
    assert nodes["n2"]["state"] == "failed" and nodes["n2"]["files"][0]["sha256"] is None
    path = tmp_path / "c.zip"
    path.write_bytes(data)
    check_tools(path)


def test_frame_parser_holds_one_frame_and_refuses_bad_ones() -> None:
    frames = b"".join(frames_of(b"x" * 10_000, 3000))
    parser = FrameParser(10_000)
    out = []
    for i in range(0, len(frames), 7):  # frames split anywhere
        out += parser.feed(frames[i:i + 7])
    assert [raw for _, raw, _ in out] == [3000, 3000, 3000, 1000]
    assert out[-1][2] == zlib.crc32(b"x" * 10_000)
    with pytest.raises(FrameError, match="remain"):
        FrameParser(100).feed(frames)  # covers more than the planned range
    with pytest.raises(FrameError, match="limit"):
        FrameParser(10_000, max_frame=10).feed(frames)


def test_status_reservation_holds_the_longest_errors() -> None:
    plan = make_plan({"n1": [10], "n2": [20]})
    long = "é\"\\\n" * 500
    _, entries, stream = build(plan)
    for node in stream.status.nodes:
        node.error = status_files.clip_error(long, status_files.NODE_ERROR_LIMIT)
        node.duration_s = 1e12
    for e in entries:
        e.promise(0)
        e.finish(long)
        e.verified.set()
        e.status.resumed = 10**9

    async def go() -> bytes:
        sink = Sink()
        await stream.run(sink.write)
        return sink.buf.getvalue()

    data = asyncio.run(go())
    assert len(data) == planned_archive_size(plan)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        status = json.loads(zf.read(status_files.STATUS_JSON))
    error = status["nodes"][0]["files"][0]["error"]
    assert len(error) == status_files.FILE_ERROR_LIMIT and error.endswith("...")


@pytest.mark.parametrize("features", [NEW, OLD], ids=["new", "old"])
def test_slow_client_keeps_the_pipeline_bounded(features: frozenset[str]) -> None:
    """Producers far faster than the client: buffered bytes stay at a few chunks."""
    plan = make_plan({"n1": [400_000], "n2": [400_000], "n3": [400_000]},
                     features={n: features for n in ("n1", "n2", "n3")})
    gauge = BufferGauge()
    sink = Sink(delay=0.001)
    data, _ = asyncio.run(run_archive(plan, sink=sink, gauge=gauge))
    assert len(data) > 1_200_000
    # every entry holds up to `limit` (+ one piece); the hash lane up to 2 chunks (+ one
    # piece); the output the write in flight (a chunk), the small pieces gathered (< a
    # chunk) and the piece being put
    assert gauge.peak <= 3 * (CHUNK + 1000) + (2 * CHUNK + 1000) + 3 * CHUNK, gauge.peak
    assert gauge.current == 0
    assert sink.writes > 1_200_000 // (2 * CHUNK)  # written as it goes, not at the end


def test_zip64_when_thresholds_are_lowered(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setattr(zipwriter, "ZIP64_LIMIT", 5000)
    monkeypatch.setattr(zipwriter, "ZIP64_COUNT_LIMIT", 5)
    plan = make_plan({"n1": [6000, 100, 100], "n2": [9000, 100]}, features=MIXED)
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
        PlannedFile("jour/été.log", 300, MTIME), PlannedFile("a b/c.txt", 0, MTIME)),
        features=NEW),), created=time.time())
    data, _ = asyncio.run(run_archive(plan))
    assert len(data) == planned_archive_size(plan)
    path = tmp_path / "u.zip"
    path.write_bytes(data)
    check_tools(path)
    assert sha_check(path, tmp_path) == set()
    assert (tmp_path / "x/n1/logs/jour/été.log").read_bytes() == content(
        "n1/logs/jour/été.log", 300)


def test_cancel_frees_every_buffer() -> None:
    """Cancelling mid-archive ends the run with `Cancelled`, lets the producers finish, and
    leaves nothing counted in the gauge."""
    plan = make_plan({"n1": [300_000], "n2": [300_000]}, features=MIXED)
    gauge = BufferGauge()
    _, entries, stream = build(plan, gauge=gauge)
    sink = Sink(delay=0.001)

    async def go() -> None:
        producers = [asyncio.create_task(produce(e, content(e.status.entry, e.status.size)))
                     for e in entries]
        run = asyncio.create_task(stream.run(sink.write))
        while sink.writes < 10:
            await asyncio.sleep(0.001)
        stream.cancel()
        with pytest.raises(Cancelled):
            await run
        await asyncio.wait_for(asyncio.gather(*producers), 5)
        await asyncio.sleep(0.1)  # a hash job still running in its thread ends

    asyncio.run(go())
    assert 0 < len(sink.buf.getvalue()) < 600_000
    assert gauge.current == 0, gauge.current
    assert all(e.finished for e in entries)


def test_ready_small_entries_are_written_in_chunks_not_one_write_each() -> None:
    """Entries that are ready do not flush the output: 300 small files go out in about
    archive-size / chunk writes."""
    plan = make_plan({f"n{i:03d}": [200] for i in range(300)})
    _, entries, stream = build(plan)
    for entry in entries:
        entry.promise(zlib.crc32(content(entry.status.entry, 200)))
        entry.feed(content(entry.status.entry, 200))
        entry.finish()
        entry.verified.set()
    sink = Sink()
    asyncio.run(stream.run(sink.write))
    size = len(sink.buf.getvalue())
    assert size == planned_archive_size(plan)
    assert sink.writes <= size // CHUNK + 3, (sink.writes, size)
