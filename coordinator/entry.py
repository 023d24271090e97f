"""One planned file between its agent fetch and the ZIP writer: a bounded queue of pieces,
and what the fetch learned about the file (the CRC-32 promised before the data, the
agent's SHA-256 after it).

    fetch ──feed()──▶ Entry (< limit bytes) ──take()──▶ archive ──▶ ZipWriter

`Entry.feed` returns None while there is room, else an awaitable that resolves once the
archive took enough: the shape tornado's ``streaming_callback`` may return, which stops
reading the agent's socket (TCP then pushes back on the agent). Everything here runs on
the event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from coordinator.status import FILE_ERROR_LIMIT, FileStatus, clip_error
from coordinator.zipwriter import EntrySpec


class Mode(Enum):
    """Who does the per-byte work of an entry (decided at plan time from the features)."""

    AGENT_CRC = "agent-crc"  # stored; CRC-32 from the agent before the data: no descriptor
    OWN_STORED = "own-stored"  # stored; old agent: CRC-32 + SHA-256 here, data descriptor
    AGENT_DEFLATE = "agent-deflate"  # the agent sends raw deflate frames
    OWN_DEFLATE = "own-deflate"  # old agent: compressed here

    @property
    def stored(self) -> bool:
        return self in (Mode.AGENT_CRC, Mode.OWN_STORED)

    @property
    def agent_checksums(self) -> bool:
        """The agent gives the SHA-256 (asked for after the entry)."""
        return self in (Mode.AGENT_CRC, Mode.AGENT_DEFLATE)


@dataclass(frozen=True)
class Piece:
    """Bytes for the entry's data (stored bytes, or one deflate frame's raw deflate),
    *raw* source bytes they stand for, and for a frame the running CRC-32 after it."""

    data: bytes
    raw: int
    crc: int | None = None


class BufferGauge:
    """Bytes held by one download's pipeline (entry queues + pending output), and the peak."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def add(self, n: int) -> None:
        self.current += n
        self.peak = max(self.peak, self.current)


class Entry:
    """One planned file on its way from a fetch to the writer."""

    def __init__(self, status: FileStatus, spec: EntrySpec, mode: Mode, *, sized: bool,
                 limit: int, gauge: BufferGauge | None = None,
                 on_consumed: Callable[[], None] | None = None) -> None:
        self.status = status
        self.spec = spec
        self.mode = mode
        self.sized = sized
        self.limit = limit
        self.gauge = gauge or BufferGauge()
        self.on_consumed = on_consumed
        # How many source bytes are wanted: the planned size, or less when the CRC could not
        # be had before the header (the last 4 bytes then make the promised CRC hold).
        self.wanted = status.size
        self.promised: int | None = None  # the CRC-32 the local header promises
        self._promised = asyncio.Event()
        self.verified = asyncio.Event()  # the fetch's after-entry checks are done
        self.agent_sha256: str | None = None
        self.agent_crc32: int | None = None  # what the agent says the range's CRC is now
        self.changed: str | None = None  # the agent says the file changed under the entry
        self.own_crc: int | None = None  # CRC-32 of the data as written (complete entries)
        self.own_sha256: str | None = None  # computed here (old agents)
        self._pieces: deque[Piece] = deque()
        self._held = 0
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._finished = False
        self._discarded = False

    # -- producer side ---------------------------------------------------------------------

    @property
    def received(self) -> int:
        return self.status.bytes

    @property
    def remaining(self) -> int:
        """Source bytes still wanted from the agent (the planned size caps every entry)."""
        return max(self.wanted - self.status.bytes, 0)

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def blocked(self) -> bool:
        """True while the producer waits for the archive (the agent is not to blame)."""
        return not self._writable.is_set()

    def promise(self, crc: int) -> None:
        """Set the CRC-32 the local header promises (the first call wins)."""
        if self.promised is None:
            self.promised = crc
            self._promised.set()

    async def wait_promise(self) -> int:
        await self._promised.wait()
        assert self.promised is not None
        return self.promised

    def feed(self, data: bytes, raw: int | None = None,
             crc: int | None = None) -> Awaitable[bool] | None:
        """`put`, then `room`."""
        self.put(data, raw, crc)
        return self.room()

    def room(self) -> Awaitable[bool] | None:
        """None while there is room, else an awaitable for "room again"."""
        if self._held >= self.limit and not self._finished:
            self._writable.clear()
            return self._writable.wait()
        return None

    def put(self, data: bytes, raw: int | None = None, crc: int | None = None) -> None:
        """Queue *data* (stored bytes cut at the wanted size, or a whole frame)."""
        if raw is None:
            data = data[: self.remaining]
            raw = len(data)
        if (data or raw) and not self._finished:
            self._pieces.append(Piece(data, raw, crc))
            self._held += len(data)
            self.gauge.add(len(data))
            self.status.bytes += raw
            self._readable.set()

    def finish(self, error: str | None = None) -> None:
        """No more data comes; *error* says why when the entry is short or missing."""
        if self._finished:
            return
        self._finished = True
        if error is not None and self.status.error is None:
            self.status.error = clip_error(error, FILE_ERROR_LIMIT)
        self._readable.set()
        self._writable.set()  # release a producer still waiting

    def note(self, error: str) -> None:
        """Record a problem found after the data (the first one stays)."""
        if self.status.error is None:
            self.status.error = clip_error(error, FILE_ERROR_LIMIT)

    # -- consumer side ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return bool(self._pieces) or self._finished

    @property
    def ready_data(self) -> bool:
        return bool(self._pieces)

    async def wait_ready(self) -> None:
        while not self.ready:
            self._readable.clear()
            await self._readable.wait()

    async def take(self) -> Piece | None:
        """The next piece, or None once the entry is finished and drained."""
        await self.wait_ready()
        if not self._pieces:
            return None
        piece = self._pieces.popleft()
        self._held -= len(piece.data)
        self.gauge.add(-len(piece.data))
        if self._held < self.limit:
            self._writable.set()
        return piece

    def release(self) -> None:
        """The archive is done with this entry: free its fetch slot."""
        if self.on_consumed is not None:
            callback, self.on_consumed = self.on_consumed, None
            callback()

    def discard(self) -> None:
        """Drop what is queued (the download is being cancelled)."""
        self.gauge.add(-self._held)
        self._pieces.clear()
        self._held = 0
        self._discarded = True
        self.finish("cancelled")
        self.verified.set()
        self.promise(0)  # nobody waits for a CRC any more
