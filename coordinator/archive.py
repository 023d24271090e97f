"""The merged ZIP: what each entry is (its mode and spec), the archive's layout, and the
streaming pipeline (the status files it ends with are rendered by `coordinator.status`).

Nothing here knows HTTP. The download handler gives the pipeline a ``write`` (queue, then
await "gone out"); the fetcher (`coordinator.fetch`) fills one `Entry` per planned file;
`coordinator.zipwriter` frames the bytes:

    agent fetch ──feed()──▶ Entry (< 2 chunks) ──take()──▶ ArchiveStream ──▶ ZipWriter ──▶ client
                                                              └──▶ HashLane (CRC-32 [+ SHA-256])

Who does the per-byte work depends on the node's features, known at plan time, so the
layout (and a sized archive's ``Content-Length``) is fixed before the first byte:

* stored, agent with ``checksum``: the agent's CRC-32 goes into the local header (no data
  descriptor); its SHA-256 comes after the entry. The coordinator only checks the CRC-32
  of what passes (isal, in a worker), which is what lets it pad a short entry so the
  promised CRC holds: the last 4 bytes of the zero padding are chosen for it
  (`coordinator.zipwriter.forcing_bytes`);
* stored, old agent: CRC-32 and SHA-256 here (in a worker); a data descriptor;
* deflate, agent with ``deflate``: its raw deflate frames are spliced into the entry, which
  ends with an empty final block (``03 00``) and a descriptor with the frames' running CRC;
* deflate, old agent: compressed here (zlib, in a worker, one step at a time).

Each stage awaits the next one, so a slow client slows the agents down. Memory per
download: ``parallel`` entry queues (< 2 chunks each, one deflate frame more), a hash
lane's backlog (< 2 chunks) and the output (one write in flight plus gathered small pieces,
< 2 chunks): about (2 x parallel + 4) x chunk_size, whatever the file sizes.

Sized (stored) archives promise an exact ``Content-Length``: every entry is written at its
planned size (cut if the agent sends more, zero-padded if it sends less or fails) and the
three status files are reserved at a fixed padded size computed from the plan.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from coordinator.digest import ZEROS, HashLane, crc32, crc32_zeros
from coordinator.entry import BufferGauge, Entry, Mode, Piece
from coordinator.model import NodePlan, Plan, PlannedFile
from coordinator.status import (
    SHA256SUMS,
    STATUS_JSON,
    STATUS_TXT,
    ArchiveStatus,
    StatusReservation,
    pad,
    render_sha256sums,
    render_status_json,
    render_status_txt,
)
from coordinator.zipwriter import (
    ArchiveLayout,
    EntrySpec,
    ZipWriter,
    deflated,
    forcing_bytes,
    layout,
    stored,
)

log = logging.getLogger(__name__)

ZIP_THREADS = 2  # worker threads of a coordinator's zip executor (hash lanes, deflate)
DEFLATE_LEVEL = 6  # the coordinator's own compression (old agents), as zipstream-ng did
INLINE_DEFLATE = 8 * 1024  # smaller pieces are compressed on the loop (a hop costs more)
FINAL_BLOCK = b"\x03\x00"  # an empty final static deflate block: ends an agent's frames
ZERO_HASH_INLINE = 1024 * 1024  # CRC of a longer zero padding runs in a worker
CRC_TAIL = 4


# ---------------------------------------------------------------------------------------------
# Entries and layout, from the plan alone


def entry_mode(node: NodePlan, compression: str) -> Mode:
    if compression == "stored":
        return Mode.AGENT_CRC if "checksum" in node.features else Mode.OWN_STORED
    if {"checksum", "deflate"} <= node.features:
        return Mode.AGENT_DEFLATE
    return Mode.OWN_DEFLATE


def file_spec(name: str, file: PlannedFile, mode: Mode) -> EntrySpec:
    if mode is Mode.AGENT_CRC:
        return stored(name, file.mtime, file.size)
    if mode is Mode.OWN_STORED:
        return stored(name, file.mtime, file.size, descriptor=True)
    return deflated(name, file.mtime, file.size)


def planned_entries(plan: Plan) -> Iterator[tuple[NodePlan, PlannedFile, EntrySpec, Mode]]:
    compression = plan.selection.compression
    for node in plan.nodes:
        mode = entry_mode(node, compression)
        for file in node.files:
            yield node, file, file_spec(node.entry_name(file), file, mode), mode


STATUS_NAMES = (("json", STATUS_JSON), ("txt", STATUS_TXT), ("sums", SHA256SUMS))


def status_specs(reserved: StatusReservation, mtime: float) -> list[EntrySpec]:
    """The status files of a sized archive: stored at their reserved sizes, CRC first."""
    return [stored(name, mtime, getattr(reserved, key)) for key, name in STATUS_NAMES]


def archive_layout(plan: Plan, status: ArchiveStatus | None = None) -> ArchiveLayout:
    status = status or ArchiveStatus.from_plan(plan, started=plan.created or time.time())
    specs = [spec for *_, spec, _ in planned_entries(plan)]
    if plan.selection.compression == "stored":
        specs += status_specs(StatusReservation.for_status(status), 0.0)
    return layout(specs)


def planned_archive_size(plan: Plan) -> int | None:
    """Exact byte size of the archive of *plan* in stored mode; None for deflate. The same
    computation gives a download's ``Content-Length`` and ``/api/plan``'s size."""
    if plan.selection.compression != "stored":
        return None
    return archive_layout(plan).size


# ---------------------------------------------------------------------------------------------
# Output: the writer's pieces to the client, one write in flight


class Cancelled(Exception):
    """The download was cancelled (its client left)."""


Write = Callable[[bytes], Awaitable[Any]]
SMALL_PIECE = 64 * 1024  # zip headers, descriptors, small entries: coalesced before writing


class _Output:
    """Hands the writer's pieces to *write*, keeping one write in flight.

    *write* queues its data at once (in call order) and returns an awaitable that resolves
    once the data has gone out (tornado's ``write`` + ``flush``). Big pieces are written as
    they are (no copy); small ones are joined up to *chunk_size* first. A write is awaited
    only when the next one is due. Never more than one: tornado's HTTP1Connection resolves
    only its latest write future.
    """

    def __init__(self, write: Write, chunk_size: int, gauge: BufferGauge,
                 on_sent: Callable[[int], None] | None = None) -> None:
        self.write = write
        self.chunk_size = chunk_size
        self.gauge = gauge
        self.on_sent = on_sent
        self.parts: list[bytes] = []
        self.pending = 0  # bytes in parts
        self.held = 0  # bytes counted in the gauge and not sent yet
        self.inflight: asyncio.Future[Any] | None = None
        self.inflight_size = 0
        self.sent = 0

    async def put(self, piece: bytes) -> None:
        self.held += len(piece)
        self.gauge.add(len(piece))
        if len(piece) >= SMALL_PIECE:
            await self.push()
            await self._send(piece)
            return
        self.parts.append(piece)
        self.pending += len(piece)
        if self.pending >= self.chunk_size:
            await self.push()

    async def push(self) -> None:
        """Write the small pieces gathered so far (without waiting for them to go out)."""
        if self.parts:
            data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
            self.parts.clear()
            self.pending = 0
            await self._send(data)

    async def drain(self) -> None:
        await self.push()
        await self._wait()

    async def _send(self, data: bytes) -> None:
        await self._wait()
        self.inflight = asyncio.ensure_future(self.write(data))
        self.inflight_size = len(data)

    async def _wait(self) -> None:
        if self.inflight is None:
            return
        inflight, self.inflight = self.inflight, None
        await inflight
        size, self.inflight_size = self.inflight_size, 0
        self.held -= size
        self.gauge.add(-size)
        self.sent += size
        if self.on_sent is not None:
            self.on_sent(size)

    def abandon(self) -> None:
        """The download stopped: forget what was not sent (and any late write error)."""
        if self.inflight is not None:
            self.inflight.add_done_callback(_retrieve)
            self.inflight = None
        self.parts.clear()
        self.gauge.add(-self.held)
        self.held = self.pending = self.inflight_size = 0


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a client that left: nobody waits for this write any more


# ---------------------------------------------------------------------------------------------
# The pipeline


class ArchiveStream:
    """Writes a plan's entries, in plan order, through a `ZipWriter`; the caller starts the
    fetches that fill them. ``run(write)`` writes the whole archive."""

    def __init__(self, status: ArchiveStatus, entries: list[Entry], *, sized: bool,
                 chunk_size: int, gauge: BufferGauge | None = None,
                 clock: Callable[[], float] = time.time,
                 executor: Executor | None = None) -> None:
        self.status = status
        self.entries = entries
        self.sized = sized
        self.chunk_size = chunk_size
        self.limit = 2 * chunk_size  # a hash lane's backlog
        self.gauge = gauge or BufferGauge()
        self.clock = clock
        self.executor = executor  # None: the event loop's default executor
        self.reserved = StatusReservation.for_status(status) if sized else None
        self.layout: ArchiveLayout | None = None
        if sized and self.reserved is not None:
            self.layout = layout([e.spec for e in entries] + status_specs(self.reserved, 0.0))
        self.bytes_sent = 0
        self.cancelled = False

    def __len__(self) -> int:
        """The exact archive size (sized archives only)."""
        if self.layout is None or self.layout.size is None:
            raise TypeError("an unsized archive has no length")
        return self.layout.size

    async def run(self, write: Write, on_sent: Callable[[int], None] | None = None) -> int:
        """Stream the archive through *write*; returns the number of bytes written.
        Raises `Cancelled` once `cancel` was called."""
        out = _Output(write, self.chunk_size, self.gauge, self._counter(on_sent))
        writer = ZipWriter(out.put)
        try:
            for entry in self.entries:
                self._check()
                try:
                    await self._entry(entry, writer, out)
                finally:
                    entry.status.done = True
                    entry.release()
            for entry in self.entries:  # the agents' SHA-256 answers
                await entry.verified.wait()
            self._check()
            self.settle()
            await self._status_files(writer)
            size = await writer.close()
            await out.drain()
        finally:
            out.abandon()
        if self.layout is not None and size != self.layout.size:
            log.error("archive of %d bytes, %s were promised", size, self.layout.size)
        return out.sent

    def _counter(self, on_sent: Callable[[int], None] | None) -> Callable[[int], None]:
        def count(n: int) -> None:
            self.bytes_sent += n
            if on_sent is not None:
                on_sent(n)

        return count

    def cancel(self) -> None:
        self.cancelled = True
        for entry in self.entries:
            entry.discard()

    def _check(self) -> None:
        if self.cancelled:
            raise Cancelled("download cancelled")

    async def _next(self, entry: Entry, out: _Output) -> Piece | None:
        if not entry.ready:
            await out.push()  # don't sit on output while an agent is slow
        piece = await entry.take()
        self._check()
        return piece

    # -- one entry -------------------------------------------------------------------------

    async def _entry(self, entry: Entry, writer: ZipWriter, out: _Output) -> None:
        if self.sized:
            if entry.promised is None and entry.mode is Mode.AGENT_CRC:
                await out.push()
                await entry.wait_promise()
                self._check()
            await self._stored(entry, writer, out)
            return
        if not entry.ready:
            await out.push()
            await entry.wait_ready()
        self._check()
        if entry.finished and not entry.ready_data and entry.status.error is not None \
                and entry.received == 0:
            entry.status.included = False  # unsized: a file that never started is left out
            return
        if entry.mode is Mode.AGENT_DEFLATE:
            await self._frames(entry, writer, out)
        else:
            await self._compress(entry, writer, out)

    def _lane(self, sha256: bool) -> HashLane:
        return HashLane(self.executor, sha256=sha256, on_progress=lambda n: self.gauge.add(-n))

    def _hash(self, lane: HashLane, data: bytes) -> None:
        self.gauge.add(len(data))
        lane.update(data)

    async def _stored(self, entry: Entry, writer: ZipWriter, out: _Output) -> None:
        own = entry.mode is Mode.OWN_STORED
        promised = None if own else entry.promised
        lane = self._lane(sha256=own)
        await writer.begin(entry.spec, promised)
        while (piece := await self._next(entry, out)) is not None:
            self._hash(lane, piece.data)
            await writer.write(piece.data)
            await lane.below(self.limit)
        crc, sha = await lane.result()
        size = entry.spec.size or 0
        missing = size - entry.received
        if promised is not None and missing >= CRC_TAIL:
            crc = await self._zeros(writer, missing - CRC_TAIL, crc)
            await writer.write(forcing_bytes(crc, promised))
            crc = promised
        elif missing > 0:
            crc = await self._zeros(writer, missing, crc)
        if promised is not None and missing == 0:
            entry.own_crc = crc
        await writer.end(promised if promised is not None else crc, size)
        if own and missing == 0:
            entry.own_sha256 = sha

    async def _zeros(self, writer: ZipWriter, count: int, crc: int) -> int:
        """Write *count* zero bytes of padding; the CRC-32 after them."""
        if count > ZERO_HASH_INLINE:
            loop = asyncio.get_running_loop()
            crc_after = loop.run_in_executor(self.executor, crc32_zeros, count, crc)
        else:
            crc_after = None
            crc = crc32_zeros(count, crc)
        for start in range(0, count, len(ZEROS)):
            part = min(len(ZEROS), count - start)
            await writer.write(ZEROS if part == len(ZEROS) else bytes(part))
            self._check()
        return await crc_after if crc_after is not None else crc

    async def _frames(self, entry: Entry, writer: ZipWriter, out: _Output) -> None:
        """An agent's deflate frames, spliced; an empty final block ends the stream."""
        await writer.begin(entry.spec)
        crc = 0
        while (piece := await self._next(entry, out)) is not None:
            await writer.write(piece.data)
            crc = piece.crc if piece.crc is not None else crc
        await writer.write(FINAL_BLOCK)
        entry.own_crc = crc
        await writer.end(crc, entry.received)

    async def _compress(self, entry: Entry, writer: ZipWriter, out: _Output) -> None:
        """An old agent's bytes, compressed here (big pieces in a worker)."""
        await writer.begin(entry.spec)
        lane = self._lane(sha256=True)
        compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
        loop = asyncio.get_running_loop()
        while (piece := await self._next(entry, out)) is not None:
            self._hash(lane, piece.data)
            if len(piece.data) < INLINE_DEFLATE:
                data = compressor.compress(piece.data)
            else:
                data = await loop.run_in_executor(self.executor, compressor.compress,
                                                  piece.data)
            self._check()
            if data:
                await writer.write(data)
            await lane.below(self.limit)
        await writer.write(compressor.flush())
        crc, sha = await lane.result()
        await writer.end(crc, entry.received)
        if entry.status.error is None:
            entry.own_sha256 = sha

    # -- the end ---------------------------------------------------------------------------

    def settle(self) -> None:
        """Fix the run-time fields of the status before the status files are rendered."""
        for entry in self.entries:
            settle_checksums(entry)
        self.status.finished = self.clock()
        for node in self.status.nodes:
            node.settle()

    async def _status_files(self, writer: ZipWriter) -> None:
        mtime = self.clock()
        renders = {"json": render_status_json, "txt": render_status_txt,
                   "sums": render_sha256sums}
        for key, name in STATUS_NAMES:
            data = renders[key](self.status)
            crc = crc32(data)
            if self.reserved is not None:
                data = pad(data, getattr(self.reserved, key),
                           b"\n" if key == "sums" else b" ")
                crc = crc32(data)
                await writer.begin(stored(name, mtime, len(data)), crc)
                await writer.write(data)
            else:
                compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
                packed = compressor.compress(data) + compressor.flush()
                await writer.begin(deflated(name, mtime, len(data), len(packed)), crc)
                await writer.write(packed)
            await writer.end(crc, len(data))


def settle_checksums(entry: Entry) -> None:
    """The entry's SHA-256 in the status, once every check agrees; else why not."""
    status = entry.status
    complete = status.bytes == status.size and status.included and status.error is None
    if entry.mode.agent_checksums:
        expected = entry.promised if entry.mode is Mode.AGENT_CRC else entry.own_crc
        if entry.changed is not None:
            entry.note(f"corrupt: {entry.changed}")
        elif complete and entry.own_crc is not None and entry.own_crc != expected:
            entry.note(f"corrupt: the file changed while it was read (CRC-32 "
                       f"{entry.own_crc:08x}, promised {expected:08x})")
        elif complete and entry.agent_crc32 is not None and entry.agent_crc32 != expected:
            entry.note(f"corrupt: the file changed while it was read (CRC-32 now "
                       f"{entry.agent_crc32:08x}, sent {expected:08x})")
        elif complete:
            status.sha256 = entry.agent_sha256
    elif complete:
        status.sha256 = entry.own_sha256
