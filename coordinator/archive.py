"""The merged ZIP: layout, exact size arithmetic and the streaming pipeline (the status
files it ends with are rendered by `coordinator.status`).

Nothing here knows HTTP. The download handler gives the pipeline a ``write`` (queue, then
await "gone out"); the fetcher (`coordinator.fetch`) fills one `EntryData` per planned
file. The pipeline drives zipstream-ng's synchronous generator:

    agent fetch ──feed()──▶ EntryData (bounded) ──next()──▶ ZipStream ──write()──▶ client
                  awaits space           awaited ready               one write in flight
                                             └──▶ DigestLane (SHA-256, in a worker)

Before every step of the zip generator the driver awaits "the current entry has a chunk
ready or is finished", so the generator never blocks and never sees an empty buffer. The
work per byte is spread over three lanes that overlap on different cores:

* the event loop moves bytes between the sockets and runs the zip steps of stored archives
  (`_zip_step`: zipstream-ng's CRC-32 over up to one chunk, ~0.17 ms per MiB);
* each entry's `DigestLane` computes its SHA-256 (the dearest part, ~0.55 ms per MiB) in a
  small thread pool as the chunks arrive (`coordinator.digest`);
* deflate steps (unsized archives) run in the same pool when they are over
  `INLINE_STEP_DEFLATE` bytes; one step is in flight per download, so order is kept.

Each stage awaits the next one, so a slow client slows the agents down: memory stays
bounded by ``parallel`` entry buffers (a few chunks each, held until both the zip and the
digest lane are done with them) plus two output chunks, whatever the file sizes.

Sized (stored) archives promise an exact ``Content-Length``. Every entry is written at its
planned size (cut if the agent sends more, zero-padded if it sends less or fails) and the
three status files are reserved at a fixed padded size computed from the plan, so the
promise always holds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any

from zipstream import ZIP_DEFLATED, ZIP_STORED, ZipStream

from coordinator.digest import INLINE_HASH, DigestLane
from coordinator.model import Plan
from coordinator.status import (
    FILE_ERROR_LIMIT,
    SHA256SUMS,
    STATUS_JSON,
    STATUS_TXT,
    ArchiveStatus,
    FileStatus,
    StatusReservation,
    clip_error,
    pad,
    render_sha256sums,
    render_status_json,
    render_status_txt,
)

ZERO_CHUNK = 64 * 1024  # zero padding is yielded in pieces of this size (or the entry limit)
ZIP_THREADS = 2  # worker threads of a coordinator's zip executor (SHA-256 lanes, deflate)
# Where a zip step runs. Stored: always on the event loop. Its only work is the CRC-32
# (~0.17 ms per MiB), and with the SHA-256 in the digest lanes, a hop to a worker per step
# cost more than it saved: interleaved A/B on the 2-core bench VM (bench/coordinator_zip.py,
# 3 x 3 rounds), steps on the loop were 1.09x faster (858 vs 784 MiB/s median). Deflate (level
# 6) costs ~4 ms per MiB of log text: a step over 8 KiB (~35 us) goes to a worker, a
# smaller one (zip headers, small files, the tail of an entry) costs less than the hop.
INLINE_STEP = 1 << 62
INLINE_STEP_DEFLATE = 8 * 1024
# ---------------------------------------------------------------------------------------------
# Size arithmetic


def planned_archive_size(plan: Plan) -> int | None:
    """Exact byte size of the archive of *plan* in stored mode; None for deflate.

    Computed by zipstream-ng itself (a sized ZipStream whose entries are never read), with
    the status files at their reserved sizes, so it is the ``Content-Length`` a download of
    this plan sends.
    """
    if plan.selection.compression != "stored":
        return None
    status = ArchiveStatus.from_plan(plan, started=plan.created or time.time())
    zs = ZipStream(sized=True)
    for entry, size in _entry_sizes(plan, StatusReservation.for_status(status)):
        zs.add(iter(()), entry, size=size)
    return len(zs)


def _entry_sizes(plan: Plan, reserved: StatusReservation) -> Iterator[tuple[str, int]]:
    for node in plan.nodes:
        for file in node.files:
            yield node.entry_name(file), file.size
    yield STATUS_JSON, reserved.json
    yield STATUS_TXT, reserved.txt
    yield SHA256SUMS, reserved.sums


# ---------------------------------------------------------------------------------------------
# The pipeline


class Cancelled(Exception):
    """The download was cancelled (its client left)."""


class BufferGauge:
    """Bytes held by one download's pipeline (entry buffers + pending output), and the peak."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def add(self, n: int) -> None:
        self.current += n
        self.peak = max(self.peak, self.current)


class EntryData:
    """One entry's bytes on their way from an agent fetch to the zip generator.

    The producer (`coordinator.fetch`) awaits `feed` (flow control: it returns once the
    entry holds less than *limit*) and calls `finish`. The consumer is zipstream-ng, which
    iterates this object synchronously; the driver awaits `wait_ready` before each step, so
    ``__next__`` always has a chunk, the zero padding, or the end to give. Beside it, the
    entry's `DigestLane` computes its SHA-256 from the same chunks as they arrive (in a
    worker thread): a chunk is held until both the zip and the lane are done with it.

    What the agent sends beyond the planned size is cut; in a sized archive what it does not
    send is zero-filled, so the entry is always exactly its planned size.
    """

    def __init__(self, status: FileStatus, *, sized: bool, limit: int,
                 gauge: BufferGauge | None = None,
                 on_consumed: Callable[[], None] | None = None,
                 executor: Executor | None = None,
                 hash_inline_limit: int = INLINE_HASH) -> None:
        self.status = status
        self.sized = sized
        self.limit = limit
        self.gauge = gauge or BufferGauge()
        self.on_consumed = on_consumed
        self._chunks: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._finished = False
        self._discarded = False
        self._padded = 0
        self._taken = 0  # bytes the zip took since the last `settle` (maybe in a worker)
        self._zipped = 0  # bytes the zip took, as of the last `settle`
        self._hashed = 0  # bytes the digest lane hashed
        self._freed = 0  # bytes no longer held: zipped and hashed (or discarded)
        self._consumed = False
        self.lane = DigestLane(executor, self._on_hashed, self._on_digest,
                               inline_limit=hash_inline_limit)

    # -- producer side ---------------------------------------------------------------------

    @property
    def received(self) -> int:
        return self.status.bytes

    @property
    def remaining(self) -> int:
        """Bytes still wanted from the agent (the planned size caps every entry)."""
        return max(self.status.size - self.status.bytes, 0)

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def held(self) -> int:
        """Bytes received that the zip or the digest lane still needs."""
        return self.status.bytes - self._freed

    def feed(self, chunk: bytes) -> Awaitable[bool] | None:
        """Queue *chunk* (cut at the planned size).

        Returns None when there is room for more, else an awaitable that resolves once
        the zip and the digest lane have taken enough (the shape tornado's
        ``streaming_callback`` may return).
        """
        chunk = chunk[: self.remaining]
        if chunk and not self._finished:
            self._chunks.append(chunk)
            self.gauge.add(len(chunk))
            self.status.bytes += len(chunk)
            self._readable.set()
            self.lane.update(chunk)
        if self.held >= self.limit and not self._finished:
            self._writable.clear()
            return self._writable.wait()
        return None

    @property
    def blocked(self) -> bool:
        """True while the producer waits for the zip (the agent is not to blame)."""
        return not self._writable.is_set()

    def finish(self, error: str | None = None) -> None:
        """No more data comes; *error* says why when the entry is short or missing."""
        if self._finished:
            return
        self._finished = True
        if error is not None:
            self.status.error = clip_error(error, FILE_ERROR_LIMIT)
        if not self.sized and self.status.bytes == 0 and error is not None:
            self.status.included = False  # unsized: a file that never started is left out
        if self.sized:
            self.lane.zeros(self.status.size - self.status.bytes)  # the padding to come
        self.lane.close()
        self._readable.set()
        self._writable.set()  # release a producer still waiting

    # -- consumer side ---------------------------------------------------------------------
    # ``__next__`` may run in a zip worker thread (see `ArchiveStream`): it only pops chunks
    # and counts what it took. Everything asyncio (events, the gauge, the slot) is settled
    # on the event loop by `settle` once the step is over.

    @property
    def ready(self) -> bool:
        return bool(self._chunks) or self._finished

    @property
    def step_bytes(self) -> int:
        """Bytes a zip step could take now: the chunks buffered, plus the zero padding still
        due once the entry is finished (on the event loop, between steps)."""
        ready = self.status.bytes - self._zipped - self._taken
        if self._discarded:
            ready = 0
        if self._finished and self.sized:
            ready += max(self.status.size - self.status.bytes - self._padded, 0)
        return ready

    async def wait_ready(self) -> None:
        while not self.ready:
            self._readable.clear()
            await self._readable.wait()

    async def digested(self) -> None:
        """The entry's SHA-256 is known (or the entry was discarded)."""
        await self.lane.done.wait()

    def __bool__(self) -> bool:  # zipstream-ng tests `if not iterable`
        return True

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._chunks:
            chunk = self._chunks.popleft()
            self._taken += len(chunk)
            return chunk
        if not self._finished:
            raise RuntimeError(f"{self.status.entry}: read before data was ready")
        padding = self.status.size - self.status.bytes - self._padded if self.sized else 0
        if padding > 0:
            zeros = bytes(min(padding, max(self.limit, ZERO_CHUNK)))
            self._padded += len(zeros)
            return zeros
        self._consumed = True
        raise StopIteration

    def settle(self) -> None:
        """On the event loop after a zip step: free the room taken, release the slot."""
        taken, self._taken = self._taken, 0
        self._zipped += taken
        self._on_digest()  # frees the room, and records the digest once the zip is done
        if self._consumed:
            self.release()

    def _on_hashed(self, count: int) -> None:
        self._hashed += count
        self._release()

    def _on_digest(self) -> None:
        """The lane is done, or the zip is: record the digest once both are."""
        if self._consumed and self.lane.digest is not None:
            self.status.sha256 = self.lane.digest
        self._release()

    def _release(self) -> None:
        # A lane that is done (hashed all, or cancelled) holds nothing any more.
        hashed = self.status.bytes if self.lane.done.is_set() else self._hashed
        freed = self.status.bytes if self._discarded else min(self._zipped, hashed)
        if freed > self._freed:
            self.gauge.add(self._freed - freed)
            self._freed = freed
        if self.held < self.limit:
            self._writable.set()

    def release(self) -> None:
        """The zip is done with this entry (streamed, or left out): free its slot."""
        if self.on_consumed is not None:
            callback, self.on_consumed = self.on_consumed, None
            callback()

    def discard(self) -> None:
        """Drop what is buffered (the download is being cancelled)."""
        self._chunks.clear()
        self._discarded = True
        self.lane.cancel()
        self._release()
        self.finish("cancelled")


class _Lazy:
    """An iterable whose bytes are rendered when the zip reaches it (status files)."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self.render = render

    def __bool__(self) -> bool:
        return True

    def __iter__(self) -> Iterator[bytes]:
        yield self.render()


Write = Callable[[bytes], Awaitable[Any]]
SMALL_PIECE = 64 * 1024  # zip headers, descriptors, small entries: coalesced before writing


class _Output:
    """Hands the zip generator's pieces to *write*, keeping one write in flight.

    *write* queues its data at once (in call order) and returns an awaitable that resolves
    once the data has gone out (tornado's ``write`` + ``flush``). Big pieces are written as
    they are (no copy); small ones are joined up to *chunk_size* first. A write is awaited
    only when the next one is due, so the zip works on the next piece while the previous
    one goes out. Never more than one: tornado's HTTP1Connection resolves only its latest
    write future, so the future of an overlapped write would never resolve. Every byte is
    counted in *gauge* from `hold` until its write completed.

    Bound: the write in flight (a chunk plus a batch of small pieces at most), the small
    pieces gathered (< a chunk) and the current zip step (< two chunks).
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

    def hold(self, size: int) -> None:
        """Count *size* bytes about to be `put` (so they are never out of the gauge)."""
        self.held += size
        self.gauge.add(size)

    async def put(self, piece: bytes) -> None:
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
        """Everything written and gone out."""
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


class ArchiveStream:
    """Drives zipstream-ng over a plan's entries, awaiting each entry's data before each step.

    *entries* are in plan order (node by node, file by file); the caller starts the fetches
    that fill them. ``run(write)`` writes the whole archive through *write*, which queues
    its data and returns an awaitable for "gone out" (``write`` + ``flush``); the pipeline
    awaits it before the next write, so the client's pace drives everything.
    """

    def __init__(self, status: ArchiveStatus, entries: list[EntryData], *, sized: bool,
                 chunk_size: int, gauge: BufferGauge | None = None,
                 clock: Callable[[], float] = time.time,
                 executor: Executor | None = None,
                 inline_limit: int | None = None) -> None:
        self.status = status
        self.executor = executor  # None: the event loop's default executor
        if inline_limit is None:
            inline_limit = INLINE_STEP if sized else INLINE_STEP_DEFLATE
        self.inline_limit = inline_limit  # steps over fewer bytes run on the loop (0: never)
        self.entries = entries
        self.sized = sized
        self.chunk_size = chunk_size
        self.gauge = gauge or BufferGauge()
        self.clock = clock
        self.reserved = StatusReservation.for_status(status) if sized else None
        self.zip = ZipStream(compress_type=ZIP_STORED if sized else ZIP_DEFLATED, sized=sized)
        if sized:
            self._queue_all()
        self.bytes_sent = 0
        self.cancelled = False

    def __len__(self) -> int:
        """The exact archive size (sized archives only)."""
        return len(self.zip)

    def _queue_all(self) -> None:
        for entry in self.entries:
            self.zip.add(entry, entry.status.entry, size=entry.status.size)
        self._queue_status()

    def _queue_status(self) -> None:
        for name, render in self._status_files():
            size = getattr(self.reserved, name) if self.reserved else None
            self.zip.add(_Lazy(self._padded(render, size)), _STATUS_NAMES[name], size=size)

    def _status_files(self) -> Iterable[tuple[str, Callable[[ArchiveStatus], bytes]]]:
        return (("json", render_status_json), ("txt", render_status_txt),
                ("sums", render_sha256sums))

    def _padded(self, render: Callable[[ArchiveStatus], bytes],
                size: int | None) -> Callable[[], bytes]:
        filler = b"\n" if render is render_sha256sums else b" "

        def content() -> bytes:
            data = render(self.status)
            return data if size is None else pad(data, size, filler)

        return content

    async def run(self, write: Write, on_sent: Callable[[int], None] | None = None) -> int:
        """Stream the archive through *write*; returns the number of bytes written.

        *on_sent* is told each time a piece went out (progress, metrics). Raises
        `Cancelled` once `cancel` was called.
        """
        out = _Output(write, self.chunk_size, self.gauge, self._counter(on_sent))
        try:
            for entry in self.entries:
                self._check()
                await self._entry(entry, out)
            self._check()
            for entry in self.entries:  # a digest lane may still be hashing the last chunks
                await entry.digested()
            self._check()
            self.settle()
            if not self.sized:
                self._queue_status()
            for piece in self.zip.finalize():
                out.hold(len(piece))
                await out.put(piece)
            await out.drain()
        finally:
            out.abandon()
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

    async def _entry(self, entry: EntryData, out: _Output) -> None:
        if not entry.ready:
            await out.push()
            await entry.wait_ready()
        if not self.sized:
            if not entry.status.included:
                entry.release()
                return
            self.zip.add(entry, entry.status.entry, size=entry.status.size)
        pieces = self.zip.file()
        step: asyncio.Future[tuple[list[bytes], bool]] | None = None
        done = False
        try:
            while not done:
                if step is None:
                    if not entry.ready:
                        await out.push()  # don't sit on output while an agent is slow
                        await entry.wait_ready()
                    step = self._step(pieces, entry)
                try:
                    taken, done = await step
                finally:
                    step = None
                    entry.settle()
                self._check()
                out.hold(sum(len(piece) for piece in taken))
                if not done and entry.ready:
                    step = self._step(pieces, entry)  # hashes the next while we write these
                for piece in taken:
                    await out.put(piece)
        finally:
            if step is not None:  # stopped (cancelled) with a step still running
                step.add_done_callback(_retrieve)
                step.add_done_callback(lambda _: entry.settle())

    def _step(self, pieces: Iterator[bytes],
              entry: EntryData) -> asyncio.Future[tuple[list[bytes], bool]]:
        """The next zip step over *entry*: done at once on the loop when it is small, else
        running in the executor."""
        self._check()
        loop = asyncio.get_running_loop()
        if entry.step_bytes < self.inline_limit:
            return _run_inline(loop, pieces, entry, self.chunk_size)
        return loop.run_in_executor(self.executor, _zip_step, pieces, entry, self.chunk_size)

    def settle(self) -> None:
        """Fix the run-time fields of the status before the status files are rendered."""
        self.status.finished = self.clock()
        for node in self.status.nodes:
            node.settle()


def _run_inline(loop: asyncio.AbstractEventLoop, pieces: Iterator[bytes], entry: EntryData,
                budget: int) -> asyncio.Future[tuple[list[bytes], bool]]:
    """`_zip_step` on the event loop, as an already resolved future (awaiting it does not
    yield to the loop); an error is raised where the step is awaited, as from a worker."""
    future: asyncio.Future[tuple[list[bytes], bool]] = loop.create_future()
    try:
        future.set_result(_zip_step(pieces, entry, budget))
    except Exception as exc:
        future.set_exception(exc)
    return future


def _zip_step(pieces: Iterator[bytes], entry: EntryData,
              budget: int) -> tuple[list[bytes], bool]:
    """One step of the zip generator over *entry*: (pieces, finished).

    Takes pieces while *entry* has data ready, up to about *budget* bytes, through
    zipstream-ng's CRC-32 and, unsized, deflate (both release the GIL on big buffers, so a
    deflate step in a worker runs on another core while the event loop moves bytes).
    """
    out: list[bytes] = []
    size = 0
    while True:
        try:
            piece = next(pieces)
        except StopIteration:
            return out, True
        out.append(piece)
        size += len(piece)
        if size >= budget or not entry.ready:
            return out, False


_STATUS_NAMES = {"json": STATUS_JSON, "txt": STATUS_TXT, "sums": SHA256SUMS}
