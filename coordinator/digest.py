"""The CRC-32 (and SHA-256) the coordinator computes itself, in order, off the event loop.

Agents of release 0.2 give the SHA-256 of each entry (`coordinator.fetch` asks for it after
the entry); the coordinator still computes the CRC-32 of every stored entry it passes on
(isal: ~0.12 CPU s/GiB) — it is what lets a short entry be padded so that its promised
CRC holds (`coordinator.zipwriter.forcing_bytes`) and what detects a file rewritten between
the agent's CRC pass and its send pass. For an agent of the previous release it also
computes the SHA-256 (~0.75 s/GiB), and the CRC-32 goes into the entry's data descriptor.

Each entry has one `HashLane`: the pieces it is given are hashed in a worker thread, one job
at a time (so in order), what arrives meanwhile is hashed by the next job as one batch. A
batch under `INLINE_HASH` bytes is hashed on the loop: the hop to a worker and back costs
more. ``hashlib`` and isal release the GIL on big buffers, so the lanes run on another core
while the event loop moves bytes. The writer awaits `HashLane.below` before it takes the
next piece, so a lane never holds more than its limit (plus one piece).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

try:  # ISA-L's CRC-32 is ~3.5x zlib's on this class of machine (0.12 vs 0.41 s/GiB)
    from isal.isal_zlib import crc32 as crc32
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the same function
    from zlib import crc32 as crc32

log = logging.getLogger(__name__)

# Measured on the 2-core bench VM: a hop to a worker and back costs ~35-75 us of CPU;
# SHA-256 costs ~0.53 us per KiB, so 64 KiB hashed on the loop (~34 us) costs about a hop.
INLINE_HASH = 64 * 1024
ZEROS = bytes(1024 * 1024)  # zero padding is hashed from this, in pieces
_ZEROS = memoryview(ZEROS)

Piece = bytes | int  # bytes to hash, or a count of zero bytes


def crc32_zeros(count: int, crc: int = 0) -> int:
    """CRC-32 of *crc*'s data followed by *count* zero bytes."""
    for start in range(0, count, len(ZEROS)):
        crc = crc32(_ZEROS[:min(len(ZEROS), count - start)], crc)
    return crc


class HashLane:
    """CRC-32 and, with *sha256*, SHA-256 of the pieces given to `update`/`zeros`, in order.

    *executor* None: the loop's default executor.
    """

    def __init__(self, executor: Executor | None, *, sha256: bool,
                 inline_limit: int = INLINE_HASH,
                 on_progress: Callable[[int], None] | None = None) -> None:
        self.executor = executor
        self.inline_limit = inline_limit
        self.on_progress = on_progress  # told how many bytes a job hashed (gauge)
        self.crc = 0
        self._sha = hashlib.sha256() if sha256 else None
        self._pending: list[Piece] = []
        self.backlog = 0  # bytes given and not hashed yet
        self._running = False
        self._failed: BaseException | None = None
        self._changed = asyncio.Event()

    def update(self, data: bytes) -> None:
        if data:
            self._queue(data, len(data))

    def zeros(self, count: int) -> None:
        if count > 0:
            self._queue(count, count)

    async def below(self, limit: int) -> None:
        """Until less than *limit* bytes wait to be hashed."""
        while self.backlog >= limit and self._failed is None:
            self._changed.clear()
            await self._changed.wait()

    async def result(self) -> tuple[int, str | None]:
        """(CRC-32, SHA-256 hex or None) of everything given, once it is hashed."""
        await self.below(1)
        if self._failed is not None:
            raise self._failed
        return self.crc, self._sha.hexdigest() if self._sha is not None else None

    def _queue(self, piece: Piece, size: int) -> None:
        self._pending.append(piece)
        self.backlog += size
        self._kick()

    def _kick(self) -> None:
        if self._running or not self._pending or self._failed is not None:
            return
        batch, self._pending = self._pending, []
        size = sum(p if isinstance(p, int) else len(p) for p in batch)
        if size < self.inline_limit:
            self._hashed(_hash_batch(self.crc, self._sha, batch), size)
            return
        try:
            future = asyncio.get_running_loop().run_in_executor(
                self.executor, _hash_batch, self.crc, self._sha, batch)
        except RuntimeError:  # the executor is shut down (the coordinator is stopping)
            self._hashed(_hash_batch(self.crc, self._sha, batch), size)
            return
        self._running = True
        future.add_done_callback(lambda f: self._job_done(f, size))

    def _job_done(self, future: asyncio.Future[Any], size: int) -> None:
        self._running = False
        if future.cancelled() or future.exception() is not None:
            self._failed = future.exception() or asyncio.CancelledError()
            log.error("hashing an entry failed: %s", self._failed)
            self._changed.set()
            return
        self._hashed(future.result(), size)

    def _hashed(self, crc: int, size: int) -> None:
        self.crc = crc
        self.backlog -= size
        if self.on_progress is not None:
            self.on_progress(size)
        self._changed.set()
        self._kick()


def _hash_batch(crc: int, sha: Any, batch: list[Piece]) -> int:
    """Hash *batch* (in a worker thread, or inline); the CRC-32 after it."""
    for piece in batch:
        if isinstance(piece, int):
            for start in range(0, piece, len(_ZEROS)):
                part = _ZEROS[:min(len(_ZEROS), piece - start)]
                crc = crc32(part, crc)
                if sha is not None:
                    sha.update(part)
        else:
            crc = crc32(piece, crc)
            if sha is not None:
                sha.update(piece)
    return crc
